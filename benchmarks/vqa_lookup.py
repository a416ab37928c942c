"""Benchmark: where a checkpoint's VQA fails, by how the question finds its object.

Questions that name a cell (color, shape) let the model read the image at a known place; `exists`
and `where` name the object by color and shape, so the model must find it. This asks, on the first
N scenes of a split, every `exists` question about a pair in the scene, two about absent pairs (a
*near miss* shares its color or its shape with an object in the scene, a *far* one shares neither;
near misses are also split by what the scene shares: `_shares_color`, `_shares_shape`, or both)
and every `where` question, then reports accuracy by answer, by object count and by kind of miss,
and how often a `where` answer names an occupied cell (a model that finds objects but not the right
one names an occupied cell at chance among them: 1/2 with two objects, 1/3 with three).

    python benchmarks/vqa_lookup.py runs/ugen-tiny/checkpoints/final --out runs/lookup
    python benchmarks/vqa_lookup.py CKPT --split novel -n 200
    python benchmarks/vqa_lookup.py CKPT --aids   # also the one-attribute aid questions (AID_TYPES)

Writes OUT/vqa_lookup_<split>.json and .md. Greedy answers; the question set depends on the seed.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from uniar.data.shapesworld import get_example  # noqa: E402
from uniar.data.shapesworld.generate import allowed_pairs  # noqa: E402
from uniar.data.shapesworld.questions import (  # noqa: E402
    aid_questions, exists_question, near_misses, uniquely_named, where_question,
)
from uniar.data.shapesworld.render import render_batch  # noqa: E402
from uniar.sample.decode import SamplingConfig  # noqa: E402
from uniar.sample.pipeline import Pipeline  # noqa: E402
from uniar.utils.io import write_json, write_text  # noqa: E402
from uniar.utils.threads import apply_env_threads  # noqa: E402


def lookup_questions(examples, split: str, rng: np.random.Generator, aids: bool = False) -> list[dict]:
    """The probe questions of every scene, each with what it tests; with `aids`, also the scene's
    one-attribute training-aid questions, grouped by type as `aid_<type>`."""
    out = []
    for i, ex in enumerate(examples):
        objects = ex.scene.objects
        present = sorted({(o.color, o.shape) for o in objects})
        absent = [p for p in allowed_pairs(split) if p not in present]
        near = set(near_misses(ex.scene, split))
        for pair in present:
            out.append(dict(scene=i, q=exists_question(ex.scene, *pair), group="exists_yes", n=len(objects)))
        for j in rng.choice(len(absent), size=min(2, len(absent)), replace=False):
            item = dict(scene=i, q=exists_question(ex.scene, *absent[j]),
                        group="exists_no_near" if absent[j] in near else "exists_no_far", n=len(objects))
            if absent[j] in near:  # which attribute the scene shares with the absent pair
                color, shape = absent[j]
                shared = [a for a, hit in (("color", any(o.color == color for o in objects)),
                                           ("shape", any(o.shape == shape for o in objects))) if hit]
                item["shares"] = "+".join(shared)
            out.append(item)
        for obj in uniquely_named(ex.scene):
            out.append(dict(scene=i, q=where_question(ex.scene, obj), group="where", n=len(objects)))
        if aids:
            out += [dict(scene=i, q=q, group=f"aid_{q.type}", n=len(objects)) for q in aid_questions(ex.scene, rng)]
    return out


def score(questions: list[dict], answers: list[str], examples) -> dict:
    groups = collections.defaultdict(list)
    occupied = []
    for item, answer in zip(questions, answers):
        ok = answer.strip() == item["q"].answer
        groups[item["group"]].append(ok)
        groups[f"{item['group']}_{item['n']}obj"].append(ok)
        if "shares" in item:  # a model that checks one attribute says `yes` when the scene shares it
            groups[f"{item['group']}_shares_{item['shares']}"].append(ok)
        if item["group"] == "where":
            cells = {o.cell_name for o in examples[item["scene"]].scene.objects}
            occupied.append(answer.strip() in cells)
    out = {k: {"acc": float(np.mean(v)), "n": len(v)} for k, v in sorted(groups.items())}
    if occupied:
        out["where_names_an_occupied_cell"] = {"acc": float(np.mean(occupied)), "n": len(occupied)}
    return out


def markdown(r: dict) -> str:
    lines = [f"# VQA lookups: {r['checkpoint']} on `{r['split']}`", "",
             f"{r['n_scenes']} scenes, {r['n_questions']} questions, greedy answers, question seed {r['seed']}, "
             f"{r['seconds']:.0f} s. Chance: `where` 1/2 with two objects and 1/3 with three.", "",
             "| group | accuracy | questions |", "|---|---|---|"]
    for k, v in r["groups"].items():
        lines.append(f"| {k} | {v['acc']:.3f} | {v['n']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--split", default="test", choices=["train", "val", "test", "novel"])
    ap.add_argument("-n", type=int, default=200, help="scenes")
    ap.add_argument("--seed", type=int, default=0, help="which absent pairs are asked about")
    ap.add_argument("--aids", action="store_true", help="also ask the one-attribute training-aid questions")
    ap.add_argument("--out", default=None, help="folder for the JSON and markdown (default: beside the checkpoint)")
    args = ap.parse_args(argv)
    apply_env_threads()
    t = time.time()
    pipe = Pipeline.from_checkpoint(args.checkpoint)
    examples = [get_example(args.split, i, pipe.cfg.data.max_objects if pipe.cfg else 3) for i in range(args.n)]
    images = render_batch([e.scene for e in examples], pipe.image_size)
    questions = lookup_questions(examples, args.split, np.random.default_rng(args.seed), args.aids)
    answers = pipe.vqa(images[[q["scene"] for q in questions]], [q["q"].question for q in questions], SamplingConfig())
    result = {"checkpoint": str(args.checkpoint), "split": args.split, "n_scenes": args.n, "seed": args.seed,
              "aids": args.aids,
              "n_questions": len(questions), "groups": score(questions, answers, examples),
              "seconds": time.time() - t}
    out = Path(args.out) if args.out else Path(args.checkpoint).parent.parent / "vqa_lookup"
    write_json(out / f"vqa_lookup_{args.split}.json", result)
    write_text(out / f"vqa_lookup_{args.split}.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
