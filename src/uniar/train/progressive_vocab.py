"""Progressive vocabulary learning (UGen, arXiv 2503.21193; docs/progressive_vocab.md).

Stage A trains on text only. In stage B, every `k` optimizer steps one visual id, drawn at random
without replacement, joins the active set. The draw is a permutation fixed by the seed, so the
active set at any step is a pure function of (seed, steps into stage B), which makes resuming exact;
the state is still saved in checkpoints so a run can be inspected.

What happens to an inactive id is not stated by the paper, so each of the three treatments is a
switch:
  mask_inputs   (a) it is replaced by <img_mask> in the input,
  mask_targets  (b) it is left out of the loss as a target,
  mask_logits   (c) its logit is set to -inf in the softmax (requires (b): an inactive target
                    would otherwise have infinite loss).
The vanilla unified baseline is the same code with `enabled=False`: all ids active in stage B.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uniar.errors import UserError


@dataclass
class ProgressiveVocabConfig:
    enabled: bool = True
    # one new visual id every k optimizer steps of stage B; if k is 0, derive it from `full_at`
    k: int = 0
    # fraction of stage B after which every visual id is active (used when k == 0)
    full_at: float = 0.5
    # ids active at the start of stage B (the paper starts from none)
    initial: int = 0
    mask_inputs: bool = True
    mask_targets: bool = True
    mask_logits: bool = True
    seed: int = 0


class ProgressiveVocab:
    """The active set of visual ids during stage B."""

    def __init__(self, cfg: ProgressiveVocabConfig, n_visual: int, stage_b_steps: int):
        if cfg.mask_logits and not cfg.mask_targets:
            raise UserError(
                "progressive_vocab.mask_logits=true needs mask_targets=true: an inactive target with a "
                "-inf logit has infinite loss"
            )
        self.cfg = cfg
        self.n_visual = n_visual
        if cfg.k > 0:
            self.k = cfg.k
        else:
            if not 0 < cfg.full_at <= 1:
                raise UserError(f"progressive_vocab.full_at must be in (0, 1], got {cfg.full_at}")
            to_add = max(n_visual - cfg.initial, 1)
            self.k = max(1, int(cfg.full_at * stage_b_steps) // to_add)
        g = torch.Generator().manual_seed(cfg.seed)
        self.order = torch.randperm(n_visual, generator=g)  # the draw without replacement
        self.steps_in_b = 0
        self.active = torch.zeros(n_visual, dtype=torch.bool)
        self._refresh()

    @property
    def n_active(self) -> int:
        if not self.cfg.enabled:
            return self.n_visual
        return min(self.n_visual, self.cfg.initial + self.steps_in_b // self.k)

    @property
    def all_active(self) -> bool:
        return self.n_active == self.n_visual

    def set_step(self, steps_in_b: int) -> None:
        """Move to `steps_in_b` optimizer steps into stage B (negative = still in stage A)."""
        self.steps_in_b = max(0, steps_in_b)
        self._refresh()

    def _refresh(self) -> None:
        self.active.zero_()
        self.active[self.order[: self.n_active]] = True

    # ---- the three treatments ------------------------------------------------------------------

    def inactive_visual(self, ids: torch.Tensor, visual_offset: int) -> torch.Tensor:
        """Bool mask of positions holding an inactive visual id."""
        is_visual = ids >= visual_offset
        codes = (ids - visual_offset).clamp(0, self.n_visual - 1)
        return is_visual & ~self.active.to(ids.device)[codes]

    def apply_inputs(self, ids: torch.Tensor, visual_offset: int, mask_id: int) -> torch.Tensor:
        if not (self.cfg.mask_inputs and self.cfg.enabled) or self.all_active:
            return ids
        return torch.where(self.inactive_visual(ids, visual_offset), torch.full_like(ids, mask_id), ids)

    def apply_targets(self, ids: torch.Tensor, targets: torch.Tensor, visual_offset: int) -> torch.Tensor:
        if not (self.cfg.mask_targets and self.cfg.enabled) or self.all_active:
            return targets
        return targets & ~self.inactive_visual(ids, visual_offset)

    def logit_bias(self, vocab_size: int, visual_offset: int, device=None) -> torch.Tensor | None:
        """Additive (vocab_size,) bias: -inf on inactive visual ids, or None when nothing is masked."""
        if not (self.cfg.mask_logits and self.cfg.enabled) or self.all_active:
            return None
        bias = torch.zeros(vocab_size, device=device)
        bias[visual_offset:visual_offset + self.n_visual][~self.active.to(bias.device)] = float("-inf")
        return bias

    # ---- checkpointing -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"k": self.k, "steps_in_b": self.steps_in_b, "n_active": self.n_active,
                "order": self.order.tolist(), "seed": self.cfg.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["order"] != self.order.tolist() or state["k"] != self.k:
            raise UserError(
                "the checkpoint's progressive-vocabulary schedule (seed/k) differs from this config's; "
                "resume with the config saved in the checkpoint"
            )
        self.set_step(state["steps_in_b"])
