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
# "turn" averages over each turn first: a turn is one unbroken run of the builder's trained tokens
# (an image with its <eoi> <eos>, a caption, one VQA answer with its <eos>). It equals "sequence" on
# rows of one turn, and gives each answer of a multi-question VQA row (data.vqa_per_row) the weight
# of a whole row, where "sequence" divides one row's weight among its answers.
LOSS_NORMS = ("token", "sequence", "turn")


def check_loss_norm(norm: str) -> str:
    from uniar.errors import UserError

    if norm not in LOSS_NORMS:
        raise UserError(f"model.loss_norm must be one of {', '.join(LOSS_NORMS)}, got {norm!r}")
    return norm


def turn_index(trained: torch.Tensor) -> torch.Tensor:
    """(B, T) long: a batch-wide id of the turn each trained position belongs to, -1 elsewhere.

    `trained` (B, T) bool marks the builder's trained positions (before any curriculum masks some
    targets out, so a turn stays one turn while progressive vocabulary hides some of its ids).
    """
    prev = torch.zeros_like(trained)
    prev[:, 1:] = trained[:, :-1]
    starts = trained & ~prev
    ids = torch.cumsum(starts.flatten().long(), 0).view_as(trained) - 1
    return torch.where(trained, ids, torch.full_like(ids, -1))


def batch_turns(batch, norm: str) -> torch.Tensor | None:
    """turn_index of a batch's next-token targets (B, T-1), as the models' `sel` masks index them;
    None unless `norm` is "turn"."""
    if norm != "turn":
        return None
    return turn_index(batch.targets[:, 1:] & batch.mask[:, 1:])


def _turn_counts(sel: torch.Tensor, turns: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(turn of each selected target, selected targets per turn id) for norm "turn"."""
    if turns is None:
        raise ValueError("loss_norm 'turn' needs the batch's turn index (losses.batch_turns)")
    groups = turns[sel]
    return groups, torch.bincount(groups)


def target_weights(sel: torch.Tensor, norm: str, turns: torch.Tensor | None = None,
                   row_weight: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) float weight of each selected target under `norm` (0 where `sel` is False).

    `turns` (turn_index of the same positions) is needed by norm "turn" only; `row_weight` (B,)
    scales each row (a stage's task loss_weights; Batch.row_weight). The normaliser does not change:
    a row of weight 2 counts as two rows.
    """
    w = sel.float()
    if norm == "sequence":
        w = w / sel.sum(1, keepdim=True).clamp_min(1)
    elif norm == "turn":
        groups, counts = _turn_counts(sel, turns)
        w[sel] = 1.0 / counts[groups].float()
    if row_weight is not None:
        w = w * row_weight[:, None].to(w.dtype)
    return w


def normaliser(sel: torch.Tensor, norm: str, turns: torch.Tensor | None = None) -> int:
    """What the summed, weighted loss is divided by: targets ("token"), rows with targets
    ("sequence") or turns with targets ("turn")."""
    if norm == "token":
        return int(sel.sum())
    if norm == "sequence":
        return int((sel.sum(1) > 0).sum())
    return int((_turn_counts(sel, turns)[1] > 0).sum())
