"""Benchmark: `unifluid-tiny` trained on ShapesWorld for a time (or step) budget, scored on `test` and
`novel` (every task, domain FID `fid_sw`), with its learning curve: t2i exact match on `val` against
training minutes.

    python benchmarks/unifluid_tiny.py --minutes 30     # on the preset's tokenizer (or --kl-tokenizer DIR)
    python benchmarks/unifluid_tiny.py --minutes 30 --curve-minutes 60 --curve-every 250
    python benchmarks/unifluid_tiny.py --curve-minutes 60 --curve-every 500 --no-headline
    python benchmarks/unifluid_tiny.py --report-only

The curve comes from the run's periodic evaluation on `val` (eval.jsonl: every `eval.every` steps,
temperature-1 images without guidance) placed on the time axis by metrics.csv's elapsed time, less
the time spent evaluating. `--curve-minutes M` adds a longer run that scores t2i on `val` every
`--curve-every` steps with the benchmark's full sampling recipe. Each run's JSON is written as it
finishes (<results>/unifluid_tiny/{headline,curve}_seed<k>.json); the report (<results>/unifluid_tiny.json,
.md, unifluid_tiny_curve.png) aggregates whatever runs exist, mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from benchkit import (Arm, RunStore, add_common_args, aggregate, fmt, label, make_config, pyplot, run_cli,
                      run_identity, sampling_for, save_figure, score, set_threads, train, value)
from uniar.utils.io import write_json, write_text

BENCH = "unifluid_tiny"
PRESET = Arm("headline", preset="unifluid-tiny")
KEYS = ["t2i_exact", "tf_t2i_exact", "tf_t2i_acc_color", "t2i_recall", "t2i_precision", "t2i_acc_cell", "t2i_acc_color", "t2i_acc_shape",
        "t2i_acc_size", "fid_sw", "caption_exact", "caption_f1", "cider", "bleu4", "vqa_acc", "vqa_acc_color",
        "vqa_acc_shape", "vqa_acc_count", "vqa_acc_exists", "vqa_acc_where", "edit_exact", "text_ppl"]


class TimedEval:
    """Wraps an evaluate_fn for the training loop and remembers how long each call took (in call order,
    the order of eval.jsonl), so evaluation time can be taken out of the curve's time axis."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, []

    def __call__(self, trainer, n: int) -> dict:
        t = time.time()
        metrics = self.fn(trainer, n)
        self.seconds.append(time.time() - t)
        return metrics


# cell and colour tell "places objects" and "reads colours" apart long before whole scenes come out exact
CURVE_KEYS = ("t2i_exact", "t2i_recall", "t2i_precision", "t2i_acc_cell", "t2i_acc_color", "t2i_acc_shape")


def t2i_on_val(sampling):
    """An evaluate_fn scoring only t2i on `val`, with the benchmark's sampling recipe."""

    def fn(trainer, n: int) -> dict:
        from uniar.eval.evaluate import evaluate
        from uniar.sample.pipeline import Pipeline
        from uniar.train.distributed import unwrap

        model = unwrap(trainer.wrapped)
        was_training = model.training
        pipe = Pipeline(model, trainer.text_tok, trainer.image_tok, trainer.builder, trainer.cfg,
                        progressive=trainer.progressive)
        report = evaluate(pipe, "val", n=n, sampling=sampling, tasks=("t2i",), fid=False)
        model.train(was_training)
        return {k: v for k, v in report["metrics"].items() if k in CURVE_KEYS}

    return fn


def curve_points(run_dir: Path, eval_seconds: list[float]) -> list[dict]:
    """eval.jsonl placed on a training-time axis: metrics.csv's elapsed time at the eval's step, less
    the time of the evaluations that came before it."""
    from uniar.train.loop import read_metrics

    rows = [(int(r["step"]), float(r["elapsed_s"])) for r in read_metrics(run_dir)]
    evals = [json.loads(line) for line in open(run_dir / "eval.jsonl", encoding="utf-8")]
    points = []
    for e in evals:
        step, elapsed = max((r for r in rows if r[0] <= e["step"]), default=(0, 0.0))
        spent = sum(s for e2, s in zip(evals, eval_seconds) if e2["step"] < step)
        points.append({**e, "train_min": (elapsed - spent) / 60})
    return points


def train_with_curve(cfg, args, evaluate_fn, minutes: float = 0.0) -> tuple[dict, list[dict], float]:
    """Train `cfg` for its steps, or for as many as fit in `minutes` (measured by calibration on this
    machine); (train info, curve points, calibration seconds)."""
    from uniar.train.loop import steps_for_budget

    calib_s = 0.0
    if minutes > 0:
        t = time.time()
        cfg.steps = steps_for_budget(cfg, minutes)  # probes each stage of the preset's schedule
        calib_s = time.time() - t
    if cfg.eval.every and cfg.eval.every % cfg.log_every:
        cfg.log_every = math.gcd(cfg.log_every, cfg.eval.every)  # every eval step gets a metrics.csv row
    log = Path(cfg.out_dir) / "eval.jsonl"
    log.unlink(missing_ok=True)  # the loop appends; a rerun into the same folder starts a fresh curve
    timed = TimedEval(evaluate_fn)
    trained = train(cfg, progress=not args.no_progress, evaluate_fn=timed)
    return trained, curve_points(Path(cfg.out_dir), timed.seconds), calib_s


def headline_config(seed: int, args):
    return make_config(PRESET, seed, args, Path(args.out) / f"headline_seed{seed}",
                       base=[f"steps={args.steps}"] if args.steps else [])


def curve_config(seed: int, args):
    return make_config(PRESET, seed, args, Path(args.out) / f"curve_seed{seed}", base=[
        f"eval.every={args.curve_every}", f"eval.n={args.curve_n}", f"eval.final_n={args.curve_n}",
        "checkpoint_every=0"])


def plan(cfg, budget: dict, args, seed: int) -> dict:
    """What makes a run of this benchmark: its budget and its identity (run_identity) with the config
    as it is before calibration sets the steps."""
    from uniar.config import to_dict

    config = {k: v for k, v in to_dict(cfg).items() if k != "steps"}
    return {"budget": budget, **run_identity(config, sampling_for("unifluid", args, seed).describe(), args.n,
                                             ("test", "novel"), PRESET.tasks, not args.no_fid)}


def run_headline(seed: int, args) -> dict:
    """Train, then score on test and novel; the run's record."""
    from uniar.config import to_dict
    from uniar.train.evaluation import periodic_eval

    run_dir = Path(args.out) / f"headline_seed{seed}"
    cfg = headline_config(seed, args)
    run_plan = plan(cfg, budget(args), args, seed)
    trained, curve, calib_s = train_with_curve(cfg, args, periodic_eval, 0.0 if args.steps else args.minutes)
    sampling = sampling_for("unifluid", args, seed)
    metrics, wall = score(run_dir, PRESET, sampling, args, ("test", "novel"))
    metrics["run"].update({k: v for k, v in trained.items() if k != "train_s"})
    return {"bench": BENCH, "arm": "headline", "seed": seed, "preset": PRESET.preset, "params": {},
            "budget": budget(args), "plan": run_plan, "steps": cfg.steps, "n": args.n, "splits": ["test", "novel"],
            "overrides": list(args.overrides), "sampling": sampling.describe(), "config": to_dict(cfg),
            "curve": {"sampling": "periodic_eval: greedy text, temperature-1 images, no guidance",
                      "eval_n": cfg.eval.n, "final_n": cfg.eval.final_n, "points": curve},
            "wall": {"train_s": trained["train_s"], "calibration_s": calib_s, **wall}, "metrics": metrics}


def run_curve(seed: int, args) -> dict:
    """A longer run scoring t2i on val every --curve-every steps with the full sampling recipe."""
    from uniar.config import to_dict

    sampling = sampling_for("unifluid", args, seed)
    cfg = curve_config(seed, args)
    run_plan = plan(cfg, curve_budget(args), args, seed)
    trained, curve, calib_s = train_with_curve(cfg, args, t2i_on_val(sampling), args.curve_minutes)
    return {"bench": BENCH, "arm": "curve", "seed": seed, "preset": PRESET.preset, "params": {},
            "budget": curve_budget(args), "plan": run_plan, "steps": cfg.steps, "overrides": list(args.overrides),
            "sampling": sampling.describe(), "config": to_dict(cfg), "curve": {"sampling": "the benchmark's recipe", "eval_n": args.curve_n,
                                              "points": curve},
            "wall": {"train_s": trained["train_s"], "calibration_s": calib_s},
            "metrics": {"run": {k: v for k, v in trained.items() if k != "train_s"}}}


def budget(args) -> dict:
    return {"steps": args.steps} if args.steps else {"minutes": args.minutes}


def curve_budget(args) -> dict:
    return {"minutes": args.curve_minutes, "every": args.curve_every, "n": args.curve_n}


# ---- report ------------------------------------------------------------------------------------


def plot_curves(runs: list[dict], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in sorted(runs, key=lambda r: (r["arm"], r["seed"])):
        pts = r["curve"]["points"]
        how = "T=1, no CFG" if r["arm"] == "headline" else f"CFG {r['sampling']['cfg_scale']:g}"
        label = f"{r['arm']} seed {r['seed']}: {how}, n={r['curve']['eval_n']}"
        ax.plot([p["train_min"] for p in pts], [p["t2i_exact"] for p in pts], marker="o",
                ls="-" if r["arm"] == "curve" else "--", label=label)
    ax.set_xlabel("training minutes (evaluation time excluded)")
    ax.set_ylabel("t2i exact match (val)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("unifluid-tiny learning curve (ShapesWorld val)")
    fig.tight_layout()
    return save_figure(fig, path)


def markdown(runs: list[dict], agg: dict, plot: Path | None) -> str:
    heads = [r for r in runs if r["arm"] == "headline"]
    lines = ["# unifluid-tiny on ShapesWorld", ""]
    if heads:
        h = heads[0]
        c = h["config"]
        bb, head = c["model"]["backbone"], c["model"]["unifluid"]["head"]
        a = agg["arms"]["headline"]
        lines += ["## Recipe", "",
                  f"- Preset `unifluid-tiny`, overrides `{h['overrides']}`; budget `{h['budget']}` → "
                  f"steps {a['steps']} (seeds {a['seeds']}).",
                  f"- Backbone preset `{bb['preset']}`; diffusion head {head['width']}×{head['depth']} "
                  f"({head['prediction']}, {head['schedule']}, {head['sample_steps']} sampling steps); "
                  f"λ = {c['model']['unifluid']['loss_lambda']}; order `{c['data']['order']}`; batch "
                  f"{c['optim']['batch_size']}, lr {c['optim']['lr']}; image tokenizer "
                  f"`{c['model']['image_tokenizer']}`.",
                  f"- Sampling (seed = run seed): `{ {k: v for k, v in h['sampling'].items() if k != 'seed'} }`.",
                  f"- {h['n']} examples per task and split; fid_sw against as many real renders of the split.", "",
                  "## Scores (mean ± std over seeds)", "", "| metric | test | novel |", "|---|---|---|"]
        for k in KEYS:
            if k in a["metrics"].get("test", {}):
                lines.append(f"| {label(k)} | {fmt(value(a, 'test', k))} | {fmt(value(a, 'novel', k))} |")
        lines += ["", "## Wall times (this machine)", "",
                  "`train min` is the wall time around training, in-loop evaluations and checkpoint writes "
                  "included; `of it, training` is the optimizer steps alone (metrics.csv's `elapsed_s`).", "",
                  "| seed | steps | calibration s | train min | of it, training | eval test min | eval novel min "
                  "| tokens/s | t2i s/image |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in heads:
            w, run = r["wall"], r["metrics"]["run"]
            pure_min = r["steps"] / run["steps_per_s"] / 60 if run.get("steps_per_s") else float("nan")
            lines.append(f"| {r['seed']} | {r['steps']} | {w['calibration_s']:.0f} | {w['train_s'] / 60:.1f} | "
                         f"{pure_min:.1f} | "
                         f"{w['eval_test_s'] / 60:.1f} | {w['eval_novel_s'] / 60:.1f} | {run['tokens_per_s']:.0f} | "
                         f"{run.get('t2i_s_per_image', float('nan')):.3f} |")
    lines += ["", "## Learning curve (t2i exact on `val`)", ""]
    for r in sorted(runs, key=lambda r: (r["arm"], r["seed"])):
        pts = ", ".join(f"step {p['step']} ({p['train_min']:.1f} min): {p['t2i_exact']:.3f}" + point_parts(p)
                        for p in r["curve"]["points"])
        how = f"overrides `{r['overrides']}`, λ {r['config']['model']['unifluid']['loss_lambda']:g}"
        lines.append(f"- {r['arm']} seed {r['seed']} ({how}; {r['curve']['sampling']}; {r['steps']} steps): {pts}")
    if plot:
        lines += ["", f"![curve]({plot.name})"]
    return "\n".join(lines) + "\n"


def point_parts(point: dict) -> str:
    """Cell and colour accuracy of a curve point, where the run recorded them."""
    parts = [f"{k[len('t2i_acc_'):]} {point[k]:.2f}" for k in ("t2i_acc_cell", "t2i_acc_color") if k in point]
    return f" ({', '.join(parts)})" if parts else ""


def report(args) -> str:
    results = Path(args.results)
    runs = RunStore(results, BENCH).load()
    agg = aggregate([r for r in runs if r["arm"] == "headline"], ["headline"])
    plot = plot_curves(runs, results / f"{BENCH}_curve.png") if runs else None
    text = markdown(runs, agg, plot)
    write_json(results / f"{BENCH}.json", {**agg, "runs_detail": runs})
    write_text(results / f"{BENCH}.md", text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, seeds=[0], n=200, out=f"runs/bench/{BENCH}", steps=0, ugen=False)
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget when --steps is 0")
    ap.add_argument("--curve-minutes", type=float, default=0.0, help="also train a curve run this long (0 = no)")
    ap.add_argument("--curve-every", type=int, default=250, help="steps between the curve run's t2i evaluations")
    ap.add_argument("--curve-n", type=int, default=100, help="val examples per curve point")
    ap.add_argument("--no-headline", action="store_true", help="train only the curve run")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    store = RunStore(args.results, BENCH)
    if not args.report_only:
        for seed in args.seeds:
            if not args.no_headline and not store.done("headline", seed, plan(headline_config(seed, args), budget(args), args, seed), "plan"):
                store.save(run_headline(seed, args))
            if args.curve_minutes > 0 and not store.done(
                    "curve", seed, plan(curve_config(seed, args), curve_budget(args), args, seed), "plan"):
                store.save(run_curve(seed, args))
    print(report(args))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
