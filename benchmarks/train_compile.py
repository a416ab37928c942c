"""Training-step time of the tiny presets eager vs with `optim.compile` (torch.compile).

    python benchmarks/train_compile.py                 # ugen-tiny and unifluid-tiny, 2 threads
    python benchmarks/train_compile.py --steps 40 --threads 1

`optim.compile` compiles what training runs: the built-in decoder's cache-free forward and, for
UniFluid, the diffusion head's denoiser. Two trainers of each preset, one eager and one compiled,
take the same stage-B steps (the task mixture, so the sequence lengths are the real ones),
alternating step by step after the warm-up, so a slow spell of the machine falls on both alike.
The compiled trainer's warm-up steps pay the compilation; they are reported apart. The losses of
the timed steps are compared too: compiling changes kernels, not the model. Writes
benchmarks/results/train_compile.json and .md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchkit import TIMING_RECIPE_KEYS, add_step_timing_args, timing_env
from uniar.config import load_config
from uniar.configs import resolve
from uniar.train.config import TrainConfig
from uniar.train.loop import Trainer
from uniar.utils.io import write_json, write_text

WARMUP_STEPS = 3  # the compiled trainer's first steps compile (training, then the shapes that follow)


def time_preset(preset: str, steps: int, first_step: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        trainers, warmup_s = {}, {}
        for mode in ("eager", "compiled"):
            cfg = load_config(TrainConfig, resolve(preset), [f"out_dir={tmp}/{mode}", f"seed={seed}",
                                                             f"optim.compile={mode == 'compiled'}"])
            trainers[mode] = Trainer(cfg, progress=False)
            t = time.perf_counter()
            for i in range(WARMUP_STEPS):
                trainers[mode].train_step(first_step + i)
            warmup_s[mode] = time.perf_counter() - t
        seconds = {m: 0.0 for m in trainers}
        losses = {m: [] for m in trainers}
        for step in range(first_step + WARMUP_STEPS, first_step + WARMUP_STEPS + steps):
            for mode, trainer in trainers.items():
                torch.manual_seed(seed * 100_003 + step)  # the same diffusion noise for both modes
                t = time.perf_counter()
                losses[mode].append(trainer.train_step(step)["loss"])
                seconds[mode] += time.perf_counter() - t
    gap = max(abs(a - b) / abs(b) for a, b in zip(losses["compiled"], losses["eager"]))
    return {"eager_s_per_step": seconds["eager"] / steps, "compiled_s_per_step": seconds["compiled"] / steps,
            "speedup": seconds["eager"] / seconds["compiled"],
            "warmup_s": warmup_s, "compile_overhead_s": warmup_s["compiled"] - warmup_s["eager"],
            "max_relative_loss_gap": gap, "losses": losses}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_timing_args(ap, steps=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = {}
    for preset in args.presets:
        r = rows[preset] = time_preset(preset, args.steps, args.first_step, args.seed)
        print(f"{preset}: eager {r['eager_s_per_step']:.3f} s/step -> compiled {r['compiled_s_per_step']:.3f} "
              f"s/step, x{r['speedup']:.2f}; compiling cost {r['compile_overhead_s']:.0f} s", flush=True)

    env = {**timing_env(args.threads), "processor": platform.processor()}
    recipe = {k: getattr(args, k) for k in TIMING_RECIPE_KEYS}
    out = Path(args.results)
    write_json(out / "train_compile.json", {"recipe": recipe, "env": env, "presets": rows})
    lines = ["# torch.compile of the training forward: training-step time", "",
             f"Recipe: `{recipe}` ({env['date']}, {env['machine']}, torch {env['torch']}). Stage-B steps "
             f"from {args.first_step} of each preset's default 3000-step schedule, the preset's precision "
             f"(`optim.bf16: auto`). Two trainers per preset, eager and `optim.compile=true`, take the same "
             f"steps alternately after {WARMUP_STEPS} warm-up steps each; the compiled trainer's warm-up "
             "pays the compilation (the column \"compiling\" is its warm-up minus the eager one's).", "",
             "| preset | eager (s/step) | compiled (s/step) | speedup | compiling (s) | max loss gap |",
             "|---|---|---|---|---|---|"]
    for preset, r in rows.items():
        lines.append(f"| {preset} | {r['eager_s_per_step']:.3f} | {r['compiled_s_per_step']:.3f} | x{r['speedup']:.2f} "
                     f"| {r['compile_overhead_s']:.0f} | {r['max_relative_loss_gap']:.1e} |")
    write_text(out / "train_compile.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
