"""Benchmark: `ugen-tiny` trained on ShapesWorld, scored on `test` and `novel`, against a text-only
model given the same text budget.

    python benchmarks/ugen_tiny.py --minutes 30     # on the preset's tokenizer (or --tokenizer DIR)
    python benchmarks/ugen_tiny.py --steps 6700 --out RUN --reuse   # re-score a finished run, retrain nothing

Writes benchmarks/results/ugen_tiny.json and ugen_tiny.md (recipe, seed, wall times, every score),
plus the run folder (checkpoints, metrics.csv, metrics.png, eval grids) under runs/bench/ugen_tiny.
The perplexity ratio is reported for the whole held-out text and for each of its two parts (Python
documentation, ShapesWorld text).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from uniar.config import load_config
from uniar.configs import resolve
from uniar.eval.evaluate import TEXT_SOURCES, evaluate, heldout_perplexity
from uniar.sample.decode import SamplingConfig
from uniar.sample.pipeline import Pipeline
from uniar.train.config import StageConfig, TrainConfig
from uniar.train.evaluation import periodic_eval
from uniar.train.loop import Trainer, read_metrics, steps_for_budget
from uniar.utils.io import write_json, write_text
from uniar.utils.threads import apply_env_threads

RESULTS = Path(__file__).parent / "results"


def text_rows(cfg: TrainConfig) -> int:
    """How many text-only sequences the run trains on (replays the task draw of every step)."""
    total = 0
    for step in range(cfg.steps):
        _, stage, _ = cfg.stage_at(step)
        tasks = [t for t, w in stage.weights.items() if w > 0]
        p = np.array([stage.weights[t] for t in tasks], dtype=np.float64)
        choice = np.random.default_rng([cfg.seed, step]).choice(len(tasks), size=cfg.optim.batch_size, p=p / p.sum())
        total += int(sum(tasks[c] == "text" for c in choice))
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget of the unified model")
    ap.add_argument("--steps", type=int, default=0, help="fixed step count instead of a time budget")
    ap.add_argument("--tokenizer", default=None, help="image tokenizer folder (default: the preset's)")
    ap.add_argument("--out", default="runs/bench/ugen_tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-n", type=int, default=200, help="examples per task and split")
    ap.add_argument("--image-temperature", type=float, default=1.0)
    ap.add_argument("--image-top-k", type=int, default=8)
    ap.add_argument("--cfg", type=float, default=2.0)
    ap.add_argument("--no-text-baseline", action="store_true")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse a finished run in --out (its final checkpoints, the text-only one too, and saved evaluations)")
    ap.add_argument("--results", default=str(RESULTS), help="folder for ugen_tiny.json / .md")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the ugen-tiny config")
    args = ap.parse_args(argv)
    apply_env_threads()  # UNIAR_THREADS=1 when jobs share the machine

    out = Path(args.out)
    tokenizer = [f"model.image_tokenizer={args.tokenizer}"] if args.tokenizer else []
    cfg = load_config(TrainConfig, resolve("ugen-tiny"), [
        *tokenizer, f"out_dir={out / 'unified'}", f"seed={args.seed}",
        *args.overrides])
    ckpt = out / "unified" / "checkpoints" / "final"
    if args.reuse and (ckpt / "config.json").is_file():
        # a finished run: take its step count and training time, retrain nothing
        cfg.steps = json.loads((ckpt / "config.json").read_text())["steps"]
        calib_s, train_s = 0.0, float(read_metrics(out / "unified")[-1]["elapsed_s"])
        print(f"ugen-tiny: reusing {ckpt} ({cfg.steps} steps)", file=sys.stderr)
    else:
        t0 = time.time()
        cfg.steps = args.steps or steps_for_budget(cfg, args.minutes)
        calib_s = time.time() - t0
        print(f"ugen-tiny: {cfg.steps} steps", file=sys.stderr)
        Trainer(cfg).run(evaluate_fn=periodic_eval)
        # training time without the periodic evaluations (metrics.csv keeps them out of elapsed_s)
        train_s = float(read_metrics(out / "unified")[-1]["elapsed_s"])
    pipe = Pipeline.from_checkpoint(ckpt)
    sampling = SamplingConfig(image_temperature=args.image_temperature, image_top_k=args.image_top_k,
                              cfg_scale=args.cfg, seed=args.seed)
    results = {"recipe": {"config": "ugen-tiny", "overrides": args.overrides, "steps": cfg.steps,
                          "seed": args.seed, "tokenizer": cfg.model.image_tokenizer, "sampling": sampling.describe()},
               "wall": {"train_s": train_s, "calibration_s": calib_s}}
    for split in ("test", "novel"):
        saved = out / "eval" / f"eval_{split}.json"
        if args.reuse and saved.is_file() and json.loads(saved.read_text()).get("sampling") == sampling.describe():
            report = json.loads(saved.read_text())
            results[split] = report["metrics"]
            results["wall"][f"eval_{split}_s"] = report["timing"].get("wall_s", float("nan"))
            for source in TEXT_SOURCES[1:]:  # evaluations saved before the per-part scores had them
                if f"text_ppl_{source}" not in results[split]:
                    results[split][f"text_ppl_{source}"] = heldout_perplexity(pipe, source=source)
            continue
        t = time.time()
        report = evaluate(pipe, split, n=args.n, sampling=sampling, out_dir=out / "eval", checkpoint=str(ckpt))
        results[split] = report["metrics"]
        results["wall"][f"eval_{split}_s"] = time.time() - t

    if not args.no_text_baseline:
        rows = text_rows(cfg)
        text_cfg = load_config(TrainConfig, resolve("ugen-tiny"), [
            *tokenizer, f"out_dir={out / 'text_only'}", f"seed={args.seed}",
            "eval.every=0", "progressive_vocab.enabled=false", *args.overrides])
        text_cfg.stages = [StageConfig("A", 1.0, {"text": 1.0})]
        text_cfg.steps = max(1, round(rows / text_cfg.optim.batch_size))
        text_ckpt = out / "text_only" / "checkpoints" / "final"
        t = time.time()
        if args.reuse and (text_ckpt / "config.json").is_file():
            print(f"ugen-tiny: reusing {text_ckpt}", file=sys.stderr)
            text_s = float(read_metrics(out / "text_only")[-1]["elapsed_s"])
        else:
            Trainer(text_cfg).run()
            text_s = time.time() - t
        text_pipe = Pipeline.from_checkpoint(text_ckpt)
        ppl_text = heldout_perplexity(text_pipe)
        results["text_only"] = {"steps": text_cfg.steps, "text_sequences": rows, "text_ppl": ppl_text,
                                "train_s": text_s}
        results["text_ppl_ratio"] = results["test"]["text_ppl"] / ppl_text
        for source in TEXT_SOURCES[1:]:  # the held-out slice's two parts, each on its own
            own = heldout_perplexity(text_pipe, source=source)
            results["text_only"][f"text_ppl_{source}"] = own
            if f"text_ppl_{source}" in results["test"]:
                results[f"text_ppl_ratio_{source}"] = results["test"][f"text_ppl_{source}"] / own
        if "text_ppl_text_ids" in results["test"]:  # softmax=full: also the ratio over text ids only
            ids_only = heldout_perplexity(text_pipe, softmax="per_modality")
            results["text_only"]["text_ppl_text_ids"] = ids_only
            results["text_ppl_ratio_text_ids"] = results["test"]["text_ppl_text_ids"] / ids_only

    results["run_folder"] = str(out)
    res = Path(args.results)
    write_json(res / "ugen_tiny.json", results)
    write_text(res / "ugen_tiny.md", markdown(results))
    print((res / "ugen_tiny.md").read_text())
    return 0


def markdown(r: dict) -> str:
    keys = ["t2i_exact", "t2i_recall", "t2i_precision", "caption_exact", "caption_f1", "cider", "bleu4",
            "vqa_acc", "vqa_acc_color", "vqa_acc_shape", "vqa_acc_count", "vqa_acc_exists", "vqa_acc_where",
            "edit_exact", "edit_exact_recolor", "edit_exact_move", "edit_exact_remove", "edit_exact_add",
            "fid_sw", "text_ppl", "text_ppl_text_ids", "text_ppl_pydoc", "text_ppl_shapesworld"]
    lines = ["# ugen-tiny on ShapesWorld", "",
             f"Recipe: `{r['recipe']}`", "",
             f"Training: {r['recipe']['steps']} steps in {r['wall']['train_s'] / 60:.1f} min on this machine (periodic evaluations not counted).", "",
             "| metric | test | novel |", "|---|---|---|"]
    for k in keys:
        if k in r["test"]:
            lines.append(f"| {k} | {r['test'][k]:.4f} | {r['novel'].get(k, float('nan')):.4f} |")
    if "text_only" in r:
        t = r["text_only"]
        lines += ["", f"Text-only model with the same text budget ({t['text_sequences']} sequences, "
                  f"{t['steps']} steps): held-out perplexity {t['text_ppl']:.3f}; unified / text-only = "
                  f"{r['text_ppl_ratio']:.3f} (target ≤ 1.10)."]
        if "text_ppl_ratio_text_ids" in r:
            lines += ["", f"Over text ids only (the softmax the sampler draws text from; `model.softmax="
                      f"per_modality` trains with it): text-only {t['text_ppl_text_ids']:.3f}, ratio "
                      f"{r['text_ppl_ratio_text_ids']:.3f}."]
        if "text_ppl_ratio_pydoc" in r:
            lines += ["", "By part of the held-out text: Python documentation, text-only "
                      f"{t['text_ppl_pydoc']:.3f}, ratio {r['text_ppl_ratio_pydoc']:.3f}; ShapesWorld text, "
                      f"text-only {t['text_ppl_shapesworld']:.3f}, ratio {r['text_ppl_ratio_shapesworld']:.3f}."]
    lines += ["", f"Learning curve on `val`: {r['run_folder']}/unified/metrics.png and eval.jsonl."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
