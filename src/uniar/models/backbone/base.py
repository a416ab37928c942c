"""The backbone interface: one decoder-only transformer, whichever kind sits behind it.

Both model families (UGen, discrete; UniFluid, continuous) talk to the backbone through five verbs:

    h = backbone.embed(ids)                                   # (B,T) -> (B,T,H)
    h = backbone(embeds, positions, key_padding_mask, cache)  # -> final-normed hidden (B,T,H)
    z = backbone.logits(h)                                    # -> (B,T,V), float32
    cache = backbone.new_cache(batch_size, max_len, dtype, device)
    backbone.extend_vocab(new_vocab_size)                     # grow embedding + head, old rows exact

Masking rules, the same for every kind: attention is causal over the sequence index (the slot a
token occupies in the cache, not its position id); `key_padding_mask` (True = real token) spans the
cached tokens and the current ones, so left-padded batches work; `positions` are explicit, so a
left-padded row can start its positions at 0 on its first real token, and random-order image
generation can pass any positions. Every token may always attend to itself, which keeps rows of
pure padding finite (their outputs are meaningless but never NaN).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from uniar.errors import UserError


class KVCache(ABC):
    """Keys and values of the tokens already seen by one batch; `length` slots are filled."""

    batch_size: int
    max_len: int

    @property
    @abstractmethod
    def length(self) -> int:
        """Number of sequence slots already stored (the same for every row)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget everything, keeping the allocation, so the cache can serve a new batch."""

    @abstractmethod
    def drop_last(self, n: int) -> None:
        """Forget the last `n` slots (tokens read only to be queried, e.g. sample/groups.py)."""

    def check_room(self, batch_size: int, new_tokens: int) -> None:
        """Raise a clear error if `new_tokens` more tokens of `batch_size` rows do not fit."""
        if batch_size != self.batch_size:
            raise UserError(
                f"the cache was made for batch size {self.batch_size}, got a batch of {batch_size}; "
                "make a new cache with backbone.new_cache(batch_size, ...)"
            )
        if self.length + new_tokens > self.max_len:
            raise UserError(
                f"{self.length} cached + {new_tokens} new tokens exceed the cache size {self.max_len}; "
                "make the cache larger (new_cache(max_len=...)) or shorten the prompt / generation"
            )


class Backbone(nn.Module, ABC):
    """A causal decoder: token embedding, transformer blocks with a final norm, output head."""

    hidden_size: int

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Rows of the token embedding and of the output head."""

    @abstractmethod
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B,T) -> input embeddings (B,T,H), exactly as the model itself would embed them."""

    @abstractmethod
    def input_embedding_weight(self) -> torch.Tensor:
        """The (vocab_size, H) input embedding parameter, for initialising rows in place."""

    @torch.no_grad()
    def embedding_std(self, n_ids: int = 4096) -> float:
        """Std of the first `n_ids` token embeddings: the scale new input embeddings start at, so
        that neither they nor the token embeddings drown the other in the residual stream."""
        device = next(self.parameters()).device
        return float(self.embed(torch.arange(min(self.vocab_size, n_ids), device=device)).float().std())

    @abstractmethod
    def forward(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the blocks on `embeds` (B,T,H) at `positions` (B,T); return final-normed hidden (B,T,H).

        key_padding_mask: bool (B, cache.length + T), True = real token; None = all real.
        cache: if given, the new keys/values are appended and attention sees everything cached.
        attn_mask: optional bool (B, T, cache.length + T) that replaces the causal rule (True = may
            attend), e.g. for bidirectional attention inside a prefix; padding still applies.
        """

    def compile_stack(self) -> None:
        """torch.compile the cache-free forward (`optim.compile`); only the built-in decoder has it."""
        raise UserError(f"optim.compile: the {type(self).__name__} backbone has no compiled training path "
                        "(only the built-in decoder has); set optim.compile=false")

    @abstractmethod
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Output head: hidden (B,T,H) -> logits (B,T,V) in float32."""

    @abstractmethod
    def new_cache(self, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device | str) -> KVCache:
        """An empty KV cache for `batch_size` rows and at most `max_len` tokens."""

    @abstractmethod
    def extend_vocab(self, new_vocab_size: int, init: str = "mean") -> None:
        """Grow the embedding and the output head to `new_vocab_size` rows; old rows stay exact."""


def attention_visibility(
    batch_size: int,
    q_len: int,
    past_len: int,
    key_padding_mask: torch.Tensor | None,
    attn_mask: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    """Which keys each query may attend to: bool (B, T, S) with S = past_len + q_len.

    Causal over sequence slots (or `attn_mask` when given), minus padded keys, plus the diagonal.
    """
    total = past_len + q_len
    q_slot = torch.arange(past_len, total, device=device)
    k_slot = torch.arange(total, device=device)
    if attn_mask is None:
        visible = (k_slot[None, :] <= q_slot[:, None]).expand(batch_size, q_len, total)
    else:
        if attn_mask.shape != (batch_size, q_len, total) or attn_mask.dtype != torch.bool:
            raise ValueError(f"attn_mask must be bool of shape {(batch_size, q_len, total)}, "
                             f"got {attn_mask.dtype} {tuple(attn_mask.shape)}")
        visible = attn_mask.to(device)
    if key_padding_mask is not None:
        if key_padding_mask.shape != (batch_size, total):
            raise ValueError(f"key_padding_mask must have shape (batch, cached + new) = {(batch_size, total)}, "
                             f"got {tuple(key_padding_mask.shape)}")
        visible = visible & key_padding_mask.to(device=device, dtype=torch.bool)[:, None, :]
    # A token always sees itself, so no softmax row is empty (empty rows would give NaN).
    return visible | (k_slot[None, :] == q_slot[:, None])


def check_inputs(embeds: torch.Tensor, positions: torch.Tensor, hidden_size: int) -> None:
    """Shape checks shared by every backbone's forward."""
    if embeds.ndim != 3 or embeds.shape[-1] != hidden_size:
        raise ValueError(f"embeds must be (B, T, {hidden_size}), got {tuple(embeds.shape)}")
    if positions.shape != embeds.shape[:2]:
        raise ValueError(f"positions must be (B, T) = {tuple(embeds.shape[:2])}, got {tuple(positions.shape)}")


def grow_rows(weight: torch.Tensor, new_rows: int, init: str = "mean", seed: int = 0) -> torch.Tensor:
    """`weight` (N, ...) with `new_rows` rows appended; the first N rows are copied exactly.

    init="mean": every new row is the mean of the old rows (new tokens start as an "average"
    token, so the model's outputs on old tokens barely move); init="normal": N(0, 0.02) from `seed`.
    """
    old = weight.detach()
    if init == "mean":
        extra = old.float().mean(dim=0, keepdim=True).expand(new_rows, *old.shape[1:])
    elif init == "normal":
        gen = torch.Generator().manual_seed(seed)
        extra = torch.randn((new_rows, *old.shape[1:]), generator=gen) * 0.02
    else:
        raise UserError(f"unknown vocabulary init {init!r}; use 'mean' or 'normal'")
    return torch.cat([old, extra.to(device=old.device, dtype=old.dtype)], dim=0)


def grown_parameter(p: nn.Parameter, added: int, init: str = "mean") -> nn.Parameter:
    """A new Parameter holding `p` with `added` rows appended (see grow_rows)."""
    return nn.Parameter(grow_rows(p, added, init), requires_grad=p.requires_grad)


def check_new_vocab_size(current: int, new: int) -> None:
    if new < current:
        raise UserError(
            f"cannot shrink the vocabulary from {current} to {new} rows; extend_vocab only adds rows"
        )
