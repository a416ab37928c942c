"""Training-step time of the tiny presets with attention in fp32 vs bf16 under CPU autocast.

    python benchmarks/cpu_attention.py                 # ugen-tiny and unifluid-tiny, 2 threads
    python benchmarks/cpu_attention.py --steps 20 --threads 1

Under bf16 autocast the built-in decoder keeps its attention call in fp32 on CPU
(`uniar.models.backbone.builtin.Attention.cpu_fp32`), because the CPU kernels are slower in bf16.
This times whole optimizer steps of each preset both ways on stage-B batches (the task mixture, so
the sequence lengths are the real ones) and compares the loss of one batch both ways. Writes
benchmarks/results/cpu_attention.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchkit import TIMING_RECIPE_KEYS, add_step_timing_args, timing_env
from uniar.config import load_config
from uniar.configs import resolve
from uniar.models.backbone.builtin import Attention
from uniar.train.config import TrainConfig
from uniar.train.loop import Trainer
from uniar.utils.io import write_json, write_text


def time_preset(preset: str, steps: int, first_step: int, seed: int) -> dict:
    """Seconds per optimizer step with fp32 and with bf16 attention, and the loss of one batch both ways.

    One trainer; the two modes alternate step by step (after a warm-up step of each), so a slow
    spell of the machine falls on both alike.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(TrainConfig, resolve(preset), [f"out_dir={tmp}", f"seed={seed}"])
        trainer = Trainer(cfg, progress=False)
        batch = trainer.micro_batches(first_step)[0]
        loss = {}
        for mode in (True, False):
            Attention.cpu_fp32 = mode
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                parts = trainer.model.loss(batch)
            loss[mode] = float(sum(parts.components.values()))
        seconds = {True: 0.0, False: 0.0}
        step = first_step
        for i in range(steps + 1):
            for mode in (True, False):
                Attention.cpu_fp32 = mode
                t = time.perf_counter()
                trainer.train_step(step)
                if i:  # the first round warms up
                    seconds[mode] += time.perf_counter() - t
                step += 1
    Attention.cpu_fp32 = True
    return {"fp32_attention_s_per_step": seconds[True] / steps, "bf16_attention_s_per_step": seconds[False] / steps,
            "speedup": seconds[False] / seconds[True],
            "batch_loss_fp32": loss[True], "batch_loss_bf16": loss[False]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_timing_args(ap, steps=12)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = {}
    for preset in args.presets:
        r = rows[preset] = time_preset(preset, args.steps, args.first_step, args.seed)
        print(f"{preset}: {r['bf16_attention_s_per_step']:.3f} s/step (bf16 attention) -> "
              f"{r['fp32_attention_s_per_step']:.3f} s/step (fp32 attention), x{r['speedup']:.2f}", flush=True)

    env = timing_env(args.threads)
    recipe = {k: getattr(args, k) for k in TIMING_RECIPE_KEYS}
    out = Path(args.results)
    write_json(out / "cpu_attention.json", {"recipe": recipe, "env": env, "presets": rows})
    lines = ["# Attention precision on CPU: training-step time", "",
             f"Recipe: `{recipe}` ({env['date']}, {env['machine']}, torch {env['torch']}). Stage-B steps "
             f"from {args.first_step} of each preset's default 3000-step schedule, bf16 autocast; one trainer "
             "per preset, the two modes alternating step by step after a warm-up step of each. The loss "
             "columns are the summed loss of one micro-batch of the untrained model, both ways.", "",
             "| preset | bf16 attention (s/step) | fp32 attention (s/step) | speedup | batch loss bf16 / fp32 |",
             "|---|---|---|---|---|"]
    for preset, r in rows.items():
        lines.append(f"| {preset} | {r['bf16_attention_s_per_step']:.3f} | {r['fp32_attention_s_per_step']:.3f} "
                     f"| x{r['speedup']:.2f} | {r['batch_loss_bf16']:.2f} / {r['batch_loss_fp32']:.2f} |")
    write_text(out / "cpu_attention.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
