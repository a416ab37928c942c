"""Diagnostic: does a model draw colours from the caption, or copy them from earlier image tokens?

Each `test` image is teacher-forced (uniar.eval.teacher_forced) under a caption in which every
object's colour has been changed. The drawn image is parsed, and each object's colour is compared
with the caption's colour and with the colour of the true image the model was fed. A model that
reads the caption follows the caption. A model that copies the colour of the previous patches
follows the image, and then its free-running samples take the colour of whatever first patch it
happened to draw.

    python benchmarks/caption_swap.py CKPT [CKPT ...] -n 100

Writes benchmarks/results/caption_swap.json and .md (one row per checkpoint; the seed and
sampling are recorded).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from uniar.data.shapesworld import get_example
from uniar.data.shapesworld.parser import parse_images
from uniar.data.shapesworld.render import render_batch
from uniar.data.shapesworld.spec import COLOR_NAMES
from uniar.data.shapesworld.text import caption
from uniar.eval.teacher_forced import teacher_forced_images
from uniar.sample.decode import SamplingConfig
from uniar.sample.pipeline import Pipeline
from uniar.utils.io import write_json, write_text
from uniar.utils.threads import apply_env_threads

RESULTS = Path(__file__).parent / "results"


def recoloured(scene, rng):
    """The scene with every object in another colour (shape, size and cell unchanged)."""
    objs = [dataclasses.replace(o, color=str(rng.choice([c for c in COLOR_NAMES if c != o.color])))
            for o in scene.objects]
    return dataclasses.replace(scene, objects=objs)


def caption_swap(pipe, n: int, sampling: SamplingConfig, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    examples = [get_example("test", i) for i in range(n)]
    images = render_batch([e.scene for e in examples], pipe.image_size)
    swapped = [recoloured(e.scene, rng) for e in examples]
    drawn = parse_images(teacher_forced_images(pipe, [caption(s) for s in swapped], images, sampling))
    total = follows_image = follows_caption = 0
    for e, s, got in zip(examples, swapped, drawn):
        for true_obj, asked in zip(e.scene.objects, s.objects):
            total += 1
            there = got.object_at(true_obj.cell)
            if there is not None:
                follows_image += there.color == true_obj.color
                follows_caption += there.color == asked.color
    return {"objects": total, "follows_image": follows_image / total, "follows_caption": follows_caption / total}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-top-k", type=int, default=8, help="discrete models only")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)
    apply_env_threads()
    rows = []
    for ckpt in args.checkpoints:
        pipe = Pipeline.from_checkpoint(ckpt)
        continuous = getattr(pipe.model, "continuous", False)
        sampling = SamplingConfig(image_temperature=1.0, image_top_k=0 if continuous else args.image_top_k,
                                  seed=args.seed)
        r = caption_swap(pipe, args.n, sampling, args.seed)
        rows.append({"checkpoint": ckpt, "family": pipe.model.family, "steps": pipe.cfg.steps if pipe.cfg else None,
                     "order": pipe.cfg.data.order if pipe.cfg else "", "sampling": sampling.describe(), **r})
        print(json.dumps(rows[-1]), file=sys.stderr)
    res = Path(args.results)
    write_json(res / "caption_swap.json", {"n": args.n, "seed": args.seed, "rows": rows})
    lines = ["# Caption swap: colour from the caption, or copied from the image?", "",
             f"Teacher-forced drawing of {args.n} `test` images under captions with every colour changed "
             f"(seed {args.seed}). Per object: the drawn colour equals the true image's (copied) or the "
             "caption's (read). Command: `python benchmarks/caption_swap.py " + " ".join(args.checkpoints) +
             f" -n {args.n}`.", "",
             "| checkpoint | family | steps | order | follows image | follows caption |", "|---|---|---|---|---|---|"]
    lines += [f"| `{r['checkpoint']}` | {r['family']} | {r['steps']} | {r['order']} | {r['follows_image']:.2f} | "
              f"{r['follows_caption']:.2f} |" for r in rows]
    write_text(res / "caption_swap.md", "\n".join(lines) + "\n")
    print((res / "caption_swap.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
