"""Loss bookkeeping shared by both model families."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossParts:
    """Summed (not averaged) loss components.

    The training loop divides each component by its *global* number of targets (over micro-steps
    and ranks) before weighting and adding them, so gradient accumulation and data parallelism give
    exactly the gradient of one large batch. UGen has one component ("ce"); UniFluid has "ce" and
    "diffusion" (weighted by lambda).
    """

    components: dict = field(default_factory=dict)  # name -> summed loss tensor
    per_task_sum: dict = field(default_factory=dict)  # task -> float, for logging
    per_task_count: dict = field(default_factory=dict)  # task -> int
    extra: dict = field(default_factory=dict)  # e.g. active-vocabulary fractions

    def add_task_losses(self, tasks: list[str], row_sums: torch.Tensor, row_counts: torch.Tensor,
                        prefix: str = "") -> None:
        for task, s, c in zip(tasks, row_sums.tolist(), row_counts.tolist()):
            key = prefix + task
            self.per_task_sum[key] = self.per_task_sum.get(key, 0.0) + s
            self.per_task_count[key] = self.per_task_count.get(key, 0) + int(c)


# How a loss component averages over the global batch (ModelConfig.loss_norm). The papers do not
# say; "token" is the usual LM mean over every target. It weights a task by its target count: a
# text-to-image row (65 targets) outweighs a VQA row (an answer and <eos>) 30 to 1. "sequence"
# averages each row's targets first, so every row with targets counts once, whatever its task.
LOSS_NORMS = ("token", "sequence")


def check_loss_norm(norm: str) -> str:
    from uniar.errors import UserError

    if norm not in LOSS_NORMS:
        raise UserError(f"model.loss_norm must be one of {', '.join(LOSS_NORMS)}, got {norm!r}")
    return norm


def target_weights(sel: torch.Tensor, norm: str) -> torch.Tensor:
    """(B, T) float weight of each selected target under `norm` (0 where `sel` is False)."""
    w = sel.float()
    if norm == "sequence":
        w = w / sel.sum(1, keepdim=True).clamp_min(1)
    return w


def normaliser(sel: torch.Tensor, norm: str) -> int:
    """What the summed, weighted loss is divided by: targets ("token") or rows with targets ("sequence")."""
    return int(sel.sum()) if norm == "token" else int((sel.sum(1) > 0).sum())
