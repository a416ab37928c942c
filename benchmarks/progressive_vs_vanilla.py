"""Benchmark: progressive vocabulary learning against the vanilla unified baseline (UGen).

Same config, data, steps and seeds for both arms; only `progressive_vocab.enabled` differs.
Each run's scores are saved as it finishes (results/progressive_vs_vanilla/<arm>_seed<k>.json), so
seeds can be added later without rerunning the others; the report aggregates whatever runs exist.

    python benchmarks/progressive_vs_vanilla.py --steps 1200 --seeds 0 1 2
    python benchmarks/progressive_vs_vanilla.py --report-only

"Overall relative change" (our definition, docs/progressive_vocab.md): for each group, Text
(1/perplexity), Image-Und (caption exact, VQA accuracy) and Image-Gen (t2i exact, edit exact), the
mean relative change progressive vs vanilla of the group's scores (seed-averaged); overall = mean of
the three group means. The paper reports +13.3% under its own (unknown) definition.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchkit import run_cli
from uniar.config import load_config, to_dict
from uniar.configs import resolve
from uniar.errors import UserError
from uniar.eval.evaluate import evaluate
from uniar.sample.decode import SamplingConfig
from uniar.sample.pipeline import Pipeline
from uniar.train.config import TrainConfig
from uniar.train.loop import Trainer
from uniar.utils.io import write_json, write_text
from uniar.utils.threads import apply_env_threads

RESULTS = Path(__file__).parent / "results"
RUNS = RESULTS / "progressive_vs_vanilla"  # reset by --results
ARMS = {"progressive": "progressive_vocab.enabled=true", "vanilla": "progressive_vocab.enabled=false"}
GROUPS = {"Text": ["inv_text_ppl"], "Image-Und": ["caption_exact", "vqa_acc"], "Image-Gen": ["t2i_exact", "edit_exact"]}


def arm_config(arm: str, seed: int, args) -> TrainConfig:
    tokenizer = [f"model.image_tokenizer={args.tokenizer}"] if args.tokenizer else []
    return load_config(TrainConfig, resolve("ugen-tiny"), [
        ARMS[arm], f"seed={seed}", f"steps={args.steps}", f"out_dir={Path(args.out) / f'{arm}_seed{seed}'}",
        *tokenizer, "eval.every=0", "checkpoint_every=0", *args.overrides])


def shared_config(cfg: TrainConfig) -> dict:
    """What every run of the study must share: the resolved config less its arm, seed and folder."""
    d = json.loads(json.dumps(to_dict(cfg)))
    for key in ("seed", "out_dir"):
        d.pop(key, None)
    d["progressive_vocab"].pop("enabled", None)
    return d


def check_same_study(cfg: TrainConfig) -> None:
    """A run added later must be the same study as the runs already saved (a preset default may have moved)."""
    want = shared_config(cfg)
    for path in sorted(RUNS.glob("*_seed*.json")):
        have = json.loads(path.read_text()).get("config")
        if have is None:
            raise UserError(f"{path} was saved without its config (an earlier preset: 64 px, model.loss_norm=token, "
                            f"progressive_vocab.full_at=0.3); add runs to it with those overrides from the commit "
                            f"that made it, or start a new study with --results DIR")
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        if diff:
            raise UserError(f"{path} is a different study: its config differs in {', '.join(diff)}; "
                            f"use the same overrides, or --results DIR for a new study")


def run_one(arm: str, seed: int, args) -> dict:
    cfg = arm_config(arm, seed, args)
    out = Path(cfg.out_dir)
    check_same_study(cfg)
    t = time.time()
    Trainer(cfg, progress=not args.no_progress).run()
    train_s = time.time() - t
    pipe = Pipeline.from_checkpoint(out / "checkpoints" / "final")
    sampling = SamplingConfig(image_temperature=1.0, image_top_k=args.image_top_k, cfg_scale=args.cfg, seed=seed)
    report = evaluate(pipe, "test", n=args.n, sampling=sampling, fid=False, checkpoint=str(out))
    m = dict(report["metrics"])
    m["inv_text_ppl"] = 1.0 / m["text_ppl"]
    result = {"arm": arm, "seed": seed, "steps": args.steps, "train_s": train_s, "n": args.n,
              "sampling": sampling.describe(), "overrides": args.overrides, "config": shared_config(cfg),
              "metrics": m}
    write_json(RUNS / f"{arm}_seed{seed}.json", result)
    return result


# Below this, a vanilla score is too close to zero for a relative change to mean anything; such a
# metric is left out of its group's mean (and the report says so) rather than dividing by ~0.
MIN_BASE = 0.02


def relative(prog: float, van: float) -> float | None:
    return None if abs(van) < MIN_BASE else (prog - van) / abs(van)


def aggregate() -> dict:
    runs = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*_seed*.json"))]
    by_arm: dict = {}
    for r in runs:
        by_arm.setdefault(r["arm"], []).append(r)
    table = {}
    for arm, rs in by_arm.items():
        keys = rs[0]["metrics"].keys()
        table[arm] = {k: (float(np.mean([r["metrics"][k] for r in rs])), float(np.std([r["metrics"][k] for r in rs])))
                      for k in keys if isinstance(rs[0]["metrics"][k], (int, float))}
        table[arm]["_seeds"] = sorted(r["seed"] for r in rs)
    result = {"arms": table, "runs": len(runs)}
    if "progressive" in table and "vanilla" in table:
        groups = {}
        for g, keys in GROUPS.items():
            rel = [relative(table["progressive"][k][0], table["vanilla"][k][0]) for k in keys]
            rel = [x for x in rel if x is not None]
            groups[g] = float(np.mean(rel)) if rel else None
        result["relative_change"] = groups
        known = [v for v in groups.values() if v is not None]
        result["overall_relative_change"] = float(np.mean(known)) if known else None
        # absolute differences per metric, with their spread over seed pairs (seed k of each arm)
        prog = {r["seed"]: r for r in by_arm["progressive"]}
        pairs = [(prog[r["seed"]]["metrics"], r["metrics"]) for r in by_arm["vanilla"] if r["seed"] in prog]
        result["difference"] = {k: (float(np.mean([p[k] - v[k] for p, v in pairs])),
                                    float(np.std([p[k] - v[k] for p, v in pairs])))
                                for k in table["vanilla"] if k != "_seeds" and pairs}
        per_seed = []
        for p, v in pairs:
            g = [[relative(p[k], v[k]) for k in keys] for keys in GROUPS.values()]
            g = [np.mean([x for x in gk if x is not None]) for gk in g if any(x is not None for x in gk)]
            per_seed.append(float(np.mean(g)) if g else None)
        result["overall_per_seed"] = per_seed
    return result


def markdown(agg: dict, runs: list[dict]) -> str:
    lines = ["# Progressive vocabulary vs vanilla unified (ugen-tiny, ShapesWorld `test`)", ""]
    if runs:
        r0 = runs[0]
        lines += [f"Budget: {r0['steps']} steps per run (the same for every arm and seed); {r0['n']} test examples "
                  f"per task; sampling `{r0['sampling']}`; overrides `{r0['overrides']}`.", ""]
    arms = agg["arms"]
    keys = ["t2i_exact", "t2i_recall", "caption_exact", "caption_f1", "cider", "bleu4", "vqa_acc", "edit_exact", "text_ppl"]
    lines += ["| metric | " + " | ".join(f"{a} (seeds {arms[a]['_seeds']})" for a in arms) + " |",
              "|---|" + "---|" * len(arms)]
    for k in keys:
        if all(k in arms[a] for a in arms):
            lines.append(f"| {k} | " + " | ".join(f"{arms[a][k][0]:.4f} ± {arms[a][k][1]:.4f}" for a in arms) + " |")
    if "difference" in agg:
        lines += ["", "Progressive minus vanilla, mean ± std over seed pairs:", "", "| metric | difference |", "|---|---|"]
        lines += [f"| {k} | {agg['difference'][k][0]:+.4f} ± {agg['difference'][k][1]:.4f} |"
                  for k in keys if k in agg["difference"]]
    if "relative_change" in agg:
        pct = lambda x: "n/a" if x is None else f"{100 * x:+.1f}%"  # noqa: E731
        lines += ["", "Relative change, progressive vs vanilla (seed-averaged scores; groups as defined above; "
                  f"a metric whose vanilla score is below {MIN_BASE} is left out of its group):", ""]
        for g, v in agg["relative_change"].items():
            lines.append(f"- {g} ({', '.join(GROUPS[g])}): {pct(v)}")
        lines.append(f"- **overall: {pct(agg['overall_relative_change'])}** "
                     f"(per seed pair: {', '.join(pct(x) for x in agg['overall_per_seed'])}); "
                     "the paper reports +13.3%.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    global RESULTS, RUNS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--tokenizer", default=None, help="image tokenizer folder (default: the preset's)")
    ap.add_argument("--out", default="runs/bench/progressive_vs_vanilla")
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--cfg", type=float, default=2.0)
    ap.add_argument("--image-top-k", type=int, default=8)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--results", default=str(RESULTS), help="folder for the report and the per-run files")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    RESULTS = Path(args.results)
    RUNS = RESULTS / "progressive_vs_vanilla"
    apply_env_threads()  # UNIAR_THREADS=1 when jobs share the machine
    RUNS.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for seed in args.seeds:
            for arm in args.arms:
                if (RUNS / f"{arm}_seed{seed}.json").is_file():
                    print(f"{arm} seed {seed}: already done, skipping", file=sys.stderr)
                    continue
                run_one(arm, seed, args)
    runs = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*_seed*.json"))]
    agg = aggregate()
    write_json(RESULTS / "progressive_vs_vanilla.json", {**agg, "runs_detail": runs})
    write_text(RESULTS / "progressive_vs_vanilla.md", markdown(agg, runs))
    print((RESULTS / "progressive_vs_vanilla.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
