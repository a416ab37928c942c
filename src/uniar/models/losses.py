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
