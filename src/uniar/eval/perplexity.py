"""Perplexity of a language model on held-out text (`text_ppl`): exp(mean NLL per target token).

A model is anything callable as `logits_fn(ids) -> logits`, ids (B, T) long, logits (B, T, V),
where logits[:, t] predicts ids[:, t + 1]. A transformers model also works: its output's `.logits`
is used. A batch is (ids, mask): mask (B, T) marks the target tokens, the ones whose NLL counts.
mask[:, 0] is ignored (the first token has no context to be predicted from).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

from uniar.errors import UserError


def perplexity_from_nll(total_nll: float, n_tokens: int) -> float:
    """exp(total_nll / n_tokens): the perplexity from a summed negative log-likelihood in nats."""
    if n_tokens <= 0:
        raise UserError("perplexity needs at least one target token; the mask selects none")
    return math.exp(total_nll / n_tokens)


@torch.no_grad()
def batch_nll(logits_fn: Callable, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[float, int]:
    """Summed NLL (nats, computed in float32) of the masked target tokens of one batch, and their count."""
    if ids.dim() != 2:
        raise UserError(f"token ids must be (batch, time), got shape {tuple(ids.shape)}")
    if mask is None:
        mask = torch.ones_like(ids, dtype=torch.bool)
    if mask.shape != ids.shape:
        raise UserError(f"mask shape {tuple(mask.shape)} differs from ids shape {tuple(ids.shape)}")
    out = logits_fn(ids)
    logits = getattr(out, "logits", out)
    if logits.dim() != 3 or logits.shape[:2] != ids.shape:
        raise UserError(
            f"the model returned logits of shape {tuple(logits.shape)}; expected (batch, time, vocab) "
            f"with batch and time {tuple(ids.shape)}"
        )
    # Position t predicts token t + 1.
    pred = logits[:, :-1].float()
    target = ids[:, 1:]
    weight = mask[:, 1:].to(pred.dtype)
    nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none")
    return float((nll * weight.reshape(-1)).sum()), int(weight.sum())


def perplexity(logits_fn: Callable, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> float:
    """Perplexity over all target tokens of all batches (a token-weighted mean, not a mean of means)."""
    total_nll, n_tokens = 0.0, 0
    for ids, mask in batches:
        nll, count = batch_nll(logits_fn, ids, mask)
        total_nll += nll
        n_tokens += count
    return perplexity_from_nll(total_nll, n_tokens)


def token_windows(
    tokens, length: int, batch_size: int, pad_id: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Cut a 1-D token stream into (ids, mask) batches of windows of `length` tokens.

    Neighbouring windows share one token (the last of one is the first of the next), so every
    token but the stream's first is a target exactly once. The last window is padded with `pad_id`
    and its padding masked out.
    """
    tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
    if length < 2:
        raise UserError(f"a window needs at least 2 tokens (a context and a target), got length={length}")
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    if tokens.numel() < 2:
        raise UserError("the text has fewer than 2 tokens; there is nothing to predict")
    step = length - 1
    starts = list(range(0, tokens.numel() - 1, step))
    for b in range(0, len(starts), batch_size):
        chunk = starts[b : b + batch_size]
        ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), length), dtype=torch.bool)
        for row, start in enumerate(chunk):
            piece = tokens[start : start + length]
            ids[row, : len(piece)] = piece
            mask[row, : len(piece)] = True
        yield ids, mask
