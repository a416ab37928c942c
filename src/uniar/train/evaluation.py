"""Evaluation during training: a quick pass over ShapesWorld `val` with the model being trained."""

from __future__ import annotations

from uniar.eval.evaluate import evaluate
from uniar.sample.decode import SamplingConfig
from uniar.sample.pipeline import Pipeline
from uniar.train.distributed import unwrap


def periodic_eval(trainer, n: int) -> dict:
    """Greedy text, temperature-1 images (no guidance) on `val`; returns flat metrics."""
    model = unwrap(trainer.wrapped)
    was_training = model.training
    pipe = Pipeline(model, trainer.text_tok, trainer.image_tok, trainer.builder, trainer.cfg,
                    progressive=trainer.progressive)
    tasks = [t for t in ("t2i", "caption", "vqa", "edit") if _trained(trainer.cfg, t)] + ["text"]
    if trainer.progressive is not None and trainer.progressive.n_active == 0:
        # still in the text-only stage of a progressive run: no visual id to draw with yet
        tasks = [t for t in tasks if t not in ("t2i", "edit")]
    report = evaluate(pipe, split="val", n=n, sampling=SamplingConfig(image_top_k=0), tasks=tasks,
                      fid=False, text_windows=64)
    model.train(was_training)
    keep = ("t2i_exact", "caption_exact", "vqa_acc", "edit_exact", "text_ppl", "text_ppl_pydoc", "text_ppl_shapesworld")
    return {k: v for k, v in report["metrics"].items() if k in keep}


def _trained(cfg, task: str) -> bool:
    return any(s.weights.get(task, 0) > 0 for s in cfg.stages)
