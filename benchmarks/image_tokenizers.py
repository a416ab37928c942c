"""Benchmark: train the built-in image tokenizers (VQ and KL) and score their reconstructions.

For each kind: train on ShapesWorld `train` images for a time budget, save the tokenizer, then on
`test` images (default 1,000) report the parser's whole-image exact match on the reconstructions
(`recon_exact`, with recall and per-attribute accuracy), PSNR, for the VQ the codebook use and
perplexity over those images, and the training time and steps. Writes
benchmarks/results/image_tokenizers.{json,md} and a reconstruction grid PNG.

    python benchmarks/image_tokenizers.py                       # 15 min each, seed 0
    python benchmarks/image_tokenizers.py --minutes 5 --kinds vq --vq model.codebook_size=1024
    python benchmarks/image_tokenizers.py --eval-only           # score the saved tokenizers again
    python benchmarks/image_tokenizers.py --eval-only kl        # retrain the VQ, rescore the saved KL
    python benchmarks/image_tokenizers.py --image-size 48 --models runs/tokenizers48   # 48 px: 6x6 tokens

At a size other than 64 px the results are image_tokenizers_s{S}.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from uniar.config import apply_overrides  # noqa: E402
from uniar.data.images import to_model  # noqa: E402
from uniar.data.shapesworld import NOVEL_PAIRS, images, scenes  # noqa: E402
from uniar.data.shapesworld.parser import parse_images, scene_agreement  # noqa: E402
from uniar.eval.scores import psnr  # noqa: E402
from uniar.tokenizers.image import load_image_tokenizer  # noqa: E402
from uniar.tokenizers.train_image import (  # noqa: E402
    code_usage, default_config, reconstruct, train_image_tokenizer,
)
from uniar.utils.io import read_json, save_image, write_json, write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "image_tokenizers"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", nargs="+", default=["vq", "kl"], choices=["vq", "kl"])
    p.add_argument("--minutes", type=float, default=15.0, help="training budget per tokenizer (wall time)")
    p.add_argument("--steps", type=int, default=None, help="optional step budget (whichever ends first)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-test", type=int, default=1000, help="test images to score")
    p.add_argument("--image-size", type=int, default=64,
                   help="image side S (the tokenizers train at S; 48 puts each 16-px grid cell on 2x2 tokens)")
    p.add_argument("--models", default="runs/tokenizers", help="folder for the trained tokenizers ({kind}/ inside)")
    p.add_argument("--results", default=str(RESULTS), help="folder for the JSON, markdown and PNG")
    # One thread: on this shared 2-core machine a 2-thread step ran 2-4x slower than a 1-thread one
    # whenever another process was busy (oversubscribed threads wait on each other).
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--vq", nargs="*", default=[], metavar="key=value", help="overrides of the VQ config")
    p.add_argument("--kl", nargs="*", default=[], metavar="key=value", help="overrides of the KL config")
    p.add_argument("--note", action="append", default=[], help="a line for the report's notes (repeatable)")
    p.add_argument("--eval-only", nargs="*", default=None, choices=["vq", "kl"], metavar="KIND",
                   help="score the tokenizers already in --models instead of training them (all, or the kinds named)")
    return p.parse_args(argv)


def score(tokenizer, test_images: np.ndarray, test_scenes) -> tuple[dict, np.ndarray]:
    """Reconstruction scores on the test images, and the reconstructions."""
    start = time.perf_counter()
    recon = reconstruct(tokenizer, test_images)
    seconds = time.perf_counter() - start
    parsed = parse_images(recon)
    agreement = scene_agreement(parsed, test_scenes)
    out = {
        "recon_exact": agreement["exact"],
        "recon_recall": agreement["recall"],
        **{f"recon_{k}": agreement[k] for k in ("acc_cell", "acc_shape", "acc_color", "acc_size", "count_acc")},
        **split_scores(parsed, test_scenes),
        "psnr": psnr(test_images, recon),
        "encode_decode_img_per_s": round(len(test_images) / seconds, 1),
        "failures": [i for i, (got, want) in enumerate(zip(parsed, test_scenes)) if got != want],
        **locality(tokenizer, test_scenes, test_images.shape[1]),
    }
    if tokenizer.kind == "discrete":
        usage = code_usage(tokenizer, test_images)
        out["codes_used"] = usage["codes_used"]
        out["codebook_size"] = tokenizer.codebook_size
        out["perplexity"] = usage["perplexity"]
    else:
        tokens = tokenizer.encode(to_model(test_images[:256]))
        std = tokens.reshape(-1, tokens.shape[-1]).std(0)
        out["token_dim"] = tokenizer.token_dim
        out["normalize"] = tokenizer.normalize
        out["token_std_range_test"] = [round(std.min().item(), 3), round(std.max().item(), 3)]
    return out, recon


def locality(tokenizer, test_scenes, size: int, n: int = 200) -> dict:
    """How far one object's presence reaches into the tokens: remove an object from a scene and see
    which tokens change. `near` tokens cover the object's grid cell; `far` tokens are a whole token
    or more away from it (a local encoder with an 8-px halo may still change the ones in between).
    A model that must find an object by what it looks like needs its tokens to change near it
    only (docs/image_tokenizers.md)."""
    from uniar.data.shapesworld.render import render
    from uniar.data.shapesworld.spec import Scene

    picked = [sc for sc in test_scenes if len(sc.objects) >= 2][:n]
    full = np.stack([render(sc, size) for sc in picked])
    less = np.stack([render(Scene(sc.objects[:-1], sc.jitter[:-1]), size) for sc in picked])
    with torch.no_grad():
        a, b = tokenizer.encode(to_model(full)), tokenizer.encode(to_model(less))
    grid = int(round(a.shape[1] ** 0.5))
    patch = size / grid
    change = (a != b).float() if tokenizer.kind == "discrete" else (a - b).abs().mean(-1)
    near, far = [], []
    for k, sc in enumerate(picked):
        cell = sc.objects[-1].cell
        r0, c0 = (cell // 3) * size / 3, (cell % 3) * size / 3  # the cell's top-left pixel
        for t in range(grid * grid):
            y, x = (t // grid) * patch, (t % grid) * patch
            # gap in pixels between this token's patch and the cell, per axis
            gap = max(max(r0 - (y + patch), y - (r0 + size / 3), 0), max(c0 - (x + patch), x - (c0 + size / 3), 0))
            if y + patch > r0 and y < r0 + size / 3 and x + patch > c0 and x < c0 + size / 3:
                near.append(change[k, t].item())
            elif gap >= patch:
                far.append(change[k, t].item())
    near_mean, far_mean = float(np.mean(near)), float(np.mean(far))
    out = {"locality_scenes": len(picked), "near_change": round(near_mean, 4), "far_change": round(far_mean, 4),
           "far_over_near": round(far_mean / max(near_mean, 1e-12), 4)}
    return out


def split_scores(parsed, truth) -> dict:
    """Exact match on images with / without a novel (color, shape) pair (never seen in `train`),
    and object recall by size: where a tokenizer's errors are."""
    has_novel = [any((o.color, o.shape) in NOVEL_PAIRS for o in t.objects) for t in truth]
    out = {}
    for name, keep in (("with_novel_pair", True), ("without_novel_pair", False)):
        pairs = [(p, t) for p, t, n in zip(parsed, truth, has_novel) if n == keep]
        out[f"recon_exact_{name}"] = sum(p == t for p, t in pairs) / max(1, len(pairs))
        out[f"n_{name}"] = len(pairs)
    for size in ("small", "large"):
        hits = [o in set(p.objects) for p, t in zip(parsed, truth) for o in t.objects if o.size == size]
        out[f"recon_recall_{size}"] = sum(hits) / max(1, len(hits))
    return out


def recon_grid(test_images: np.ndarray, recons: dict[str, np.ndarray], failures: dict[str, list], n: int = 12,
               zoom: int = 3) -> np.ndarray:
    """Rows: originals, then each tokenizer's reconstructions; columns: the first images and failures."""
    picks = list(range(n // 2))
    for fails in failures.values():
        picks += [i for i in fails if i not in picks][: max(0, n - len(picks)) // max(1, len(failures))]
    picks += [i for i in range(n, 2 * n) if i not in picks][: n - len(picks)]
    rows = [test_images[picks]] + [r[picks] for r in recons.values()]
    pad = lambda im: np.pad(im, ((1, 1), (1, 1), (0, 0)), constant_values=128)  # noqa: E731
    grid = np.concatenate([np.concatenate([pad(im) for im in row], axis=1) for row in rows], axis=0)
    return grid.repeat(zoom, 0).repeat(zoom, 1)


def write_report(result: dict, path: Path) -> None:
    lines = [
        "# Image tokenizers on ShapesWorld",
        "",
        f"Built-in tokenizers trained on `train` images, scored on {result['n_test']} `test` images "
        f"of {result.get('image_size', 64)} px "
        f"(seed {result['seed']}, {result['date']}, {result['machine']}).",
        "`recon_exact`: the scene parser reads the reconstruction back as exactly the original scene "
        f"(the parser scores {result['parser_on_clean']:.1%} on the clean test images). A novel pair is a "
        "(color, shape) pair never shown in `train` (red cross, green circle, blue triangle, yellow square). "
        "Training is budgeted in wall time on a shared machine, so the step count says more than the minutes. "
        "`far / near change`: remove one object from 2- and 3-object scenes; the mean change of the tokens a "
        "token or more away from its cell over that of the tokens on it (codes that differ, for the VQ; mean "
        "absolute latent change, for the KL). 0 is a local tokenizer.",
        "",
        "| tokenizer | recon_exact | with / without a novel pair | recall small / large | shape acc | color acc | "
        "PSNR (dB) | codes used | perplexity | far / near change | train time | steps | images seen |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in result["tokenizers"].items():
        t = r.get("training", {})
        codes = f"{r['codes_used']} / {r['codebook_size']}" if "codes_used" in r else "-"
        ppl = f"{r['perplexity']:.0f}" if "perplexity" in r else "-"
        lines.append(
            f"| {kind} | **{r['recon_exact']:.1%}** | {r['recon_exact_with_novel_pair']:.1%} / "
            f"{r['recon_exact_without_novel_pair']:.1%} | "
            f"{r['recon_recall_small']:.1%} / {r['recon_recall_large']:.1%} | "
            f"{r['recon_acc_shape']:.1%} | "
            f"{r['recon_acc_color']:.1%} | {r['psnr']:.2f} | {codes} | {ppl} | "
            f"{r.get('far_over_near', float('nan')):.3f} | {t.get('seconds', 0) / 60:.1f} min | "
            f"{t.get('steps', '-')} | {t.get('images_seen', '-')} |"
        )
    lines += ["", "## Recipe", ""]
    for kind, r in result["tokenizers"].items():
        t = r.get("training", {})
        lines += [f"**{kind}** (`{r['folder']}`): trained with `{t.get('command', '-')}`", "",
                  "```json", json.dumps(t.get("config", {}), indent=1), "```", ""]
    lines += [f"Reconstruction grid: `{result['grid']}` (rows: originals, "
              + ", ".join(result["tokenizers"]) + "; the columns include failures).", ""]
    if result.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in result["notes"]] + [""]
    write_text(path, "\n".join(lines))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results_dir, models = Path(args.results), Path(args.models)
    name = NAME if args.image_size == 64 else f"{NAME}_s{args.image_size}"
    test_images = images("test", 0, args.n_test, size=args.image_size)
    test_scenes = scenes("test", 0, args.n_test)
    result = {
        "benchmark": name, "split": "test", "n_test": args.n_test, "image_size": args.image_size, "seed": args.seed,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "parser_on_clean": scene_agreement(parse_images(test_images), test_scenes)["exact"],
        "tokenizers": {},
        "notes": args.note,
    }
    recons, failures = {}, {}
    for kind in args.kinds:
        folder = models / kind
        if args.eval_only is not None and (not args.eval_only or kind in args.eval_only):
            tokenizer = load_image_tokenizer(folder)
            training = read_json(folder / "training.json") if (folder / "training.json").is_file() else {}
        else:
            overrides = [f"model.image_size={args.image_size}", *(args.vq if kind == "vq" else args.kl)]
            cfg = apply_overrides(default_config(kind), overrides)
            summary = train_image_tokenizer(kind, cfg, folder, minutes=args.minutes, steps=args.steps, seed=args.seed)
            tokenizer = summary.pop("tokenizer")
            # the same run from the command line, kept with the tokenizer for later re-scoring
            summary["command"] = " ".join(
                [f"uniar train-tokenizer {kind} --out {folder} --minutes {args.minutes:g}"]
                + ([f"--steps {args.steps}"] if args.steps else [])
                + [f"--seed {args.seed}"] + overrides)
            write_json(folder / "training.json", summary)
            training = summary
        scores, recons[kind] = score(tokenizer, test_images, test_scenes)
        failures[kind] = scores["failures"]
        result["tokenizers"][kind] = {"folder": str(folder), **scores, "training": training}
        print(f"{kind}: recon_exact {scores['recon_exact']:.2%}, psnr {scores['psnr']:.2f} dB, "
              f"{training.get('steps')} steps in {training.get('seconds')} s", flush=True)
    grid_path = results_dir / f"{name}.png"
    save_image(grid_path, recon_grid(test_images, recons, failures))
    result["grid"] = str(grid_path)
    write_json(results_dir / f"{name}.json", result)
    write_report(result, results_dir / f"{name}.md")
    print(f"wrote {results_dir / name}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
