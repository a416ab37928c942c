"""Evaluate a checkpoint on ShapesWorld: every task, scored exactly, with sample grids and a report.

    uniar eval runs/ugen-tiny/checkpoints/final --split test -n 200

Writes OUT/eval_<split>.json (metrics, sampling recipe, checkpoint, seed, n) and eval_<split>.md,
plus grids: t2i_<split>.png, edit_<split>.png, caption_<split>.png.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from uniar.data.sequence import collate
from uniar.data.shapesworld import get_example
from uniar.data.shapesworld.parser import parse_images
from uniar.data.shapesworld.render import render_batch
from uniar.eval import scores
from uniar.sample.decode import SamplingConfig
from uniar.utils.grid import image_grid
from uniar.errors import UserError
from uniar.utils.io import save_image, write_json, write_text

ALL_TASKS = ("t2i", "caption", "vqa", "edit", "text")
DIAGNOSTICS = ("tf_t2i",)  # teacher-forced t2i (uniar.eval.teacher_forced); not run by default


def evaluate(pipe, split: str = "test", n: int = 200, sampling: SamplingConfig | None = None,
             tasks=ALL_TASKS, out_dir: str | Path | None = None, fid: bool = True,
             checkpoint: str = "", text_windows: int = 200) -> dict:
    """Scores of `pipe` on examples 0..n-1 of `split`; grids and a report go to `out_dir` if given."""
    sampling = sampling or SamplingConfig()
    unknown = sorted(set(tasks) - set(ALL_TASKS) - set(DIAGNOSTICS))
    if unknown:
        raise UserError(f"unknown evaluation task(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(ALL_TASKS + DIAGNOSTICS)}")
    t_start = time.time()
    size = pipe.image_size
    max_objects = pipe.cfg.data.max_objects if pipe.cfg is not None else 3
    examples = [get_example(split, i, max_objects) for i in range(n)]
    images = render_batch([e.scene for e in examples], size)
    out = Path(out_dir) if out_dir else None
    metrics: dict = {}
    timing: dict = {}

    if "t2i" in tasks:
        t = time.time()
        prompts = [e.caption for e in examples]
        generated = pipe.t2i(prompts, sampling)
        timing["t2i_s_per_image"] = (time.time() - t) / n
        _merge(metrics, "t2i", scores.t2i_scores([e.scene for e in examples], parse_images(generated)))
        if fid and n >= 2:
            from uniar.eval.fid import fid_sw

            metrics["fid_sw"] = fid_sw(generated, split=split)
        if out:
            save_image(out / f"t2i_{split}.png", image_grid(generated[:32], prompts[:32], cols=8))
    if "tf_t2i" in tasks:  # teacher-forced: each image token drawn given the true earlier ones
        from uniar.eval.teacher_forced import teacher_forced_images

        drawn = teacher_forced_images(pipe, [e.caption for e in examples], images, sampling)
        scored = scores.t2i_scores([e.scene for e in examples], parse_images(drawn))
        metrics.update({("tf_" + k if k != "n" else "tf_t2i_n"): v for k, v in scored.items() if v is not None})
        if out:
            save_image(out / f"tf_t2i_{split}.png", image_grid(drawn[:32], [e.caption for e in examples[:32]], cols=8))
    if "caption" in tasks:
        preds = pipe.caption(images, sampling)
        _merge(metrics, "caption", scores.caption_scores([e.scene for e in examples], preds,
                                                         [e.caption for e in examples]))
        if out:
            save_image(out / f"caption_{split}.png", image_grid(images[:32], preds[:32], cols=8))
    if "vqa" in tasks:
        qs = [(i, q) for i, e in enumerate(examples) for q in e.questions]
        preds = pipe.vqa(images[[i for i, _ in qs]], [q.question for _, q in qs], sampling)
        _merge(metrics, "vqa", scores.vqa_scores([q.type for _, q in qs], preds, [q.answer for _, q in qs]))
    if "edit" in tasks:
        instructions = [e.edit.instruction for e in examples]
        edited = pipe.edit(images, instructions, sampling)
        _merge(metrics, "edit", scores.edit_scores([e.edit.target for e in examples], parse_images(edited),
                                                      [e.edit.type for e in examples]))
        if out:
            targets = render_batch([e.edit.target for e in examples[:16]], size)
            tiles = np.stack([x for trio in zip(images[:16], targets, edited[:16]) for x in trio])
            labels = [lab for ins in instructions[:16] for lab in (ins, "target", "model")]
            save_image(out / f"edit_{split}.png", image_grid(tiles, labels, cols=6))
    if "text" in tasks:
        metrics["text_ppl"] = heldout_perplexity(pipe, windows=text_windows)
        for source in TEXT_SOURCES[1:]:  # the two parts of the held-out slice, each on its own
            metrics[f"text_ppl_{source}"] = heldout_perplexity(pipe, windows=text_windows, source=source)
        if getattr(pipe.model, "softmax", None) == "full":  # UGen: also over the ids the sampler emits in text
            metrics["text_ppl_text_ids"] = heldout_perplexity(pipe, windows=text_windows, softmax="per_modality")

    timing["wall_s"] = time.time() - t_start
    report = {"split": split, "n": n, "checkpoint": checkpoint, "sampling": sampling.describe(),
              "metrics": metrics, "timing": timing}
    if out:
        write_json(out / f"eval_{split}.json", report)
        write_text(out / f"eval_{split}.md", markdown_report(report))
    return report


def _merge(metrics: dict, task: str, scored: dict) -> None:
    """Add a task's scores; its sample count becomes `<task>_n`, and empty scores are dropped."""
    for k, v in scored.items():
        if k == "n":
            metrics[f"{task}_n"] = v
        elif v is not None:
            metrics[k] = v


TEXT_SOURCES = ("all", "pydoc", "shapesworld")


@torch.no_grad()
def heldout_perplexity(pipe, windows: int = 200, length: int = 64, batch_size: int = 32,
                       softmax: str | None = None, source: str = "all") -> float:
    """Perplexity of the model on held-out text (the corpus's held-out slice), in the training format.

    `softmax` (UGen): measure with this `model.softmax` instead of the model's own; "per_modality"
    gives the perplexity over text ids only, the distribution the sampler draws text from.
    `source`: the whole held-out slice, or only its Python-documentation or ShapesWorld part (the
    two behave very differently: one is out of the image domain, the other is its language).
    """
    from uniar.data.corpus import corpus_documents, pydoc_documents, shapesworld_documents, token_stream

    if source not in TEXT_SOURCES:
        raise UserError(f"unknown held-out text source {source!r}; expected one of {TEXT_SOURCES}")

    model = pipe.model
    if softmax is not None and softmax != getattr(model, "softmax", None):
        if not hasattr(model, "softmax"):
            raise UserError("only UGen models have a softmax choice to measure perplexity with")
        own = model.softmax
        model.softmax = softmax
        try:
            return heldout_perplexity(pipe, windows, length, batch_size, source=source)
        finally:
            model.softmax = own
    docs = {"all": corpus_documents, "pydoc": pydoc_documents, "shapesworld": shapesworld_documents}[source]("heldout")
    ids = token_stream(pipe.text_tok, docs, add_bos=False)
    starts = np.linspace(0, len(ids) - length - 1, num=min(windows, max(1, len(ids) // length)), dtype=int)
    total, count = 0.0, 0
    # the per-task sums are plain token sums whatever model.loss_norm weighs the training loss by
    key = "ce_text" if getattr(model, "continuous", False) else "text"
    for i in range(0, len(starts), batch_size):
        seqs = [pipe.builder.text_ids(ids[s:s + length].tolist()) for s in starts[i:i + batch_size]]
        batch = collate(seqs, pad_id=pipe.text_tok.pad_id)
        parts = model.loss(batch)
        total += parts.per_task_sum[key]
        count += parts.per_task_count[key]
    return float(np.exp(total / max(count, 1)))


def markdown_report(report: dict) -> str:
    m = report["metrics"]
    lines = [f"# Evaluation on ShapesWorld `{report['split']}`", "",
             f"- checkpoint: `{report['checkpoint']}`", f"- examples: {report['n']}",
             f"- sampling: `{report['sampling']}`", "", "| metric | value |", "|---|---|"]
    for k, v in m.items():
        lines.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    for k, v in report.get("timing", {}).items():
        lines.append(f"| {k} | {v:.4f} |")
    lines += ["", "Grids: " + ", ".join(f"`{t}_{report['split']}.png`" for t in ("t2i", "caption", "edit"))]
    return "\n".join(lines) + "\n"
