"""How hard each task pushes the backbone at a checkpoint, as AdamW sees it.

    python benchmarks/task_gradients.py runs/s14/uf_v1/headline_seed0/checkpoints/step_2500 \
        --out benchmarks/results/task_gradients/uf_step2500

Why: a mixed run learns the lookup questions (`exists`, `where`) slowly or not at all, while a
stage of those questions alone, with fresh AdamW moments, learns them (docs/sequence_format.md).
One reading is that AdamW divides each parameter's step by the root of its second moment, which
the other tasks' gradients set (UniFluid's diffusion loss is weighted by λ = 20), so a weak task's
gradient moves the weights by little. This measures it: for each task (and for the lookup
questions apart from the cell questions), `--rows` rows drawn as training draws them, each row's
loss weighted as one row of a training batch of `optim.batch_size` (loss_norm: sequence), and
backpropagated alone. Reported per task, over the transformer blocks' parameters:

- `grad`: the norm of the mean per-row gradient (what one row of this task adds to a step);
- `adam`: the same divided elementwise by sqrt(v) + eps, AdamW's second moment from the
  checkpoint's optimizer state (what one row adds to the update direction);
- `cos_total`: the cosine between the task's mean gradient and that of the stage's mixture;
- `cos_halves`: the cosine between the mean gradients of the task's even and odd rows, how far
  the task's direction stands above the noise of this many rows.

Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from uniar.data.sequence import collate
from uniar.train import checkpoint
from uniar.train.config import TrainConfig
from uniar.train.loop import Trainer
from uniar.utils.io import write_json, write_text

LOOKUP = {"exists": 1.0, "where": 1.0}
CELL = {"color": 1.0, "shape": 1.0, "count": 1.0}


def block_params(model) -> dict[str, torch.nn.Parameter]:
    """The transformer blocks' parameters: what every task shares. The token embedding and output
    rows are left out, since each task touches its own rows of them (a rarely used row has a tiny
    second moment, which would make AdamW's scaling of it dominate the norms)."""
    params = {n: p for n, p in model.named_parameters() if ".blocks." in n and p.requires_grad}
    if not params:
        raise SystemExit("no transformer-block parameters found (this diagnostic reads the built-in decoder)")
    return params


def answer_of(trainer: Trainer, seq) -> str:
    """The trained words of a one-question VQA row: its answer (the <eos> after it decodes to nothing)."""
    ids = [t for t, on in zip(seq.tokens, seq.targets) if on]
    return trainer.text_tok.decode(ids, skip_special=True).strip()


def row_gradient(trainer: Trainer, seq, params: dict, counts_scale: float) -> torch.Tensor:
    """Flattened gradient on `params` of one row's loss, weighted as one row of a training batch."""
    model = trainer.model
    batch = collate([seq], pad_id=trainer.text_tok.pad_id, side="right")
    model.zero_grad(set_to_none=True)
    parts = model.loss(batch, trainer.progressive)
    weights = model.loss_weights()
    counts = model.target_counts(batch, trainer.progressive)
    # under loss_norm sequence a one-row component is that row's mean loss; training divides the
    # batch's sum of them by its row count
    loss = sum(weights[n] * parts.components[n] / counts_scale
               for n in weights if n in parts.components and counts[n])
    loss.backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().float()
                      for p in params.values()])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="a checkpoint folder with optimizer state (a run's step_N or final)")
    ap.add_argument("--rows", type=int, default=24, help="rows per task")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--by-answer", action="store_true",
                    help="also split the lookup rows: exists answered yes, exists answered no, where")
    ap.add_argument("--out", required=True, help="output path without extension")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ckpt = Path(args.checkpoint)
    cfg = checkpoint.load_config(ckpt, TrainConfig)
    cfg.out_dir = tempfile.mkdtemp(prefix="task_gradients_")  # nothing is written there
    if cfg.model.loss_norm != "sequence":
        raise SystemExit(f"this diagnostic weighs rows as loss_norm sequence does; {ckpt} trained with "
                         f"{cfg.model.loss_norm!r}")
    trainer = Trainer(cfg, resume=str(ckpt), progress=False)
    model = trainer.model
    step = min(trainer.start_step, cfg.steps - 1)  # a final checkpoint: the last step's stage
    _, stage, _ = cfg.stage_at(step)
    if trainer.progressive is not None:
        trainer.progressive.set_step(step - cfg.image_stage_start())
    params = block_params(model)
    exp_avg_sq = []
    for p in params.values():
        state = trainer.optimizer.state.get(p, {})
        v = state.get("exp_avg_sq")
        if v is None:
            raise SystemExit(f"{ckpt} holds no AdamW second moments for the backbone; use a checkpoint "
                             "written during training (step_N), not one after a moment reset")
        exp_avg_sq.append(v.flatten().float())
    beta2 = trainer.optimizer.param_groups[0]["betas"][1]
    n_steps = int(trainer.optimizer.state[next(iter(params.values()))]["step"])
    denom = torch.cat(exp_avg_sq).div(1 - beta2 ** n_steps).sqrt().add_(trainer.optimizer.param_groups[0]["eps"])

    rng = np.random.default_rng([args.seed, step])
    arms: dict[str, list] = {}
    for task in [t for t, w in stage.weights.items() if w > 0]:
        if task == "vqa":
            arms["vqa (exists, where)"] = [trainer.sampler.make("vqa", rng, LOOKUP) for _ in range(args.rows)]
            arms["vqa (color, shape, count)"] = [trainer.sampler.make("vqa", rng, CELL) for _ in range(args.rows)]
            if args.by_answer:  # is the lookup rows' common direction their answers' prior?
                exists = [trainer.sampler.make("vqa", rng, {"exists": 1.0}) for _ in range(3 * args.rows)]
                for word in ("yes", "no"):
                    picked = [q for q in exists if answer_of(trainer, q) == word][:args.rows]
                    if len(picked) >= 2:  # two halves to compare
                        arms[f"vqa exists, answer {word}"] = picked
                arms["vqa where"] = [trainer.sampler.make("vqa", rng, {"where": 1.0}) for _ in range(args.rows)]
        else:
            arms[task] = [trainer.sampler.make(task, rng, stage.vqa_type_weights) for _ in range(args.rows)]
    mix = trainer.sampler.batch(stage.weights, args.rows, args.seed, step, vqa_type_weights=stage.vqa_type_weights)

    scale = float(cfg.optim.batch_size)

    def cos(a, b):
        return float(torch.dot(a, b) / (a.norm() * b.norm() + 1e-30))

    means, halves, rows = {}, {}, {}
    for name, seqs in [*arms.items(), ("mixture", mix)]:
        g = torch.stack([row_gradient(trainer, s, params, scale) for s in seqs])
        means[name] = g.mean(0)
        halves[name] = cos(g[0::2].mean(0), g[1::2].mean(0))
    total = means["mixture"]
    for name, g in means.items():
        rows[name] = {"grad": float(g.norm()), "adam": float((g / denom).norm()),
                      "cos_total": cos(g, total), "cos_halves": halves[name]}

    rec = {"checkpoint": str(ckpt), "step": step, "stage": stage.name, "stage_weights": stage.weights,
           "rows_per_task": args.rows, "seed": args.seed, "loss_norm": cfg.model.loss_norm,
           "family": cfg.model.family, "n_block_params": int(total.numel()), "tasks": rows}
    names = list(means)
    pairwise = {a: {b: cos(means[a], means[b]) for b in names} for a in names}
    rec["pairwise_cos"] = pairwise
    out = Path(args.out)
    write_json(out.with_suffix(".json"), rec)
    lines = [f"# Task gradients at `{ckpt}` (step {step}, stage {stage.name})", "",
             f"{args.rows} rows per task, drawn as stage {stage.name} draws them (seed {args.seed}); each row's "
             f"loss weighted as one row of a {cfg.optim.batch_size}-row batch (loss_norm {cfg.model.loss_norm}, "
             "the loss weights of training); norms over the transformer blocks' parameters. `adam` divides by "
             "AdamW's bias-corrected sqrt(v) + eps from the checkpoint. `mixture` is rows drawn with the "
             "stage's task weights.", "",
             "| task | grad (norm of the mean row gradient) | adam (after AdamW's scaling) | cos with the mixture "
             "| cos of its two halves |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['grad']:.3e} | {r['adam']:.3e} | {r['cos_total']:+.3f} | {r['cos_halves']:+.3f} |")
    lines += ["", "Cosines between the tasks' mean row gradients:", "",
              "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for a in names:
        lines.append(f"| {a} | " + " | ".join(f"{pairwise[a][b]:+.2f}" for b in names) + " |")
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
