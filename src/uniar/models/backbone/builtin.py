"""The built-in decoder: a Llama-style transformer written here, with a static KV cache.

Pre-norm residual blocks of RMSNorm -> grouped-query attention (RoPE on explicit positions,
`scaled_dot_product_attention`) and RMSNorm -> SwiGLU MLP; a final RMSNorm; an output head that may
share the token embedding. The cache is LlamaGen/gpt-fast style: one preallocated key and value
tensor per layer plus a length pointer; rows of different real lengths share it through the mask.
"""

from __future__ import annotations

from functools import partial

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uniar.errors import UserError
from uniar.models.backbone.base import (
    Backbone,
    KVCache,
    attention_visibility,
    check_inputs,
    check_new_vocab_size,
    grown_parameter,
)

INIT_STD = 0.02


@dataclass
class DecoderConfig:
    """Sizes of the built-in decoder. `max_seq_len` bounds cache + current tokens."""

    vocab_size: int
    hidden_size: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 4
    mlp_hidden: int = 704
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    # share of each head's dims RoPE rotates (GPT-NeoX's rotary_pct); the rest compare queries and
    # keys by content alone, whatever the distance between them
    rope_fraction: float = 1.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise UserError(f"decoder config: {name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.n_heads:
            raise UserError(f"decoder config: hidden_size {self.hidden_size} is not divisible by "
                            f"n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise UserError(f"decoder config: n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if not 0.0 < self.rope_fraction <= 1.0:
            raise UserError(f"decoder config: rope_fraction must be in (0, 1], got {self.rope_fraction}")
        if self.rope_dim % 2 or self.rope_dim == 0:
            raise UserError(f"decoder config: RoPE rotates {self.rope_dim} of the head's {self.head_dim} "
                            "dims; that must be a positive even number (change rope_fraction)")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"decoder config: dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads

    @property
    def rope_dim(self) -> int:
        """How many of each head's dims RoPE rotates (the first ones)."""
        return int(round(self.head_dim * self.rope_fraction))


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 for stability under bf16 autocast."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class Rotary(nn.Module):
    """Rotary position embedding angles for arbitrary (B,T) integer positions."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B,T) -> cos, sin of shape (B,1,T,head_dim/2), broadcast over heads."""
        angles = positions.float()[..., None] * self.inv_freq
        return angles.cos()[:, None], angles.sin()[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first 2 * cos.shape[-1] dims of (B,heads,T,D) by the angles, "rotate half"
    convention (first half pairs with second); any dims after them pass through."""
    rot = 2 * cos.shape[-1]
    x1, x2 = x[..., :rot].float().chunk(2, dim=-1)
    rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
    return rotated if rot == x.shape[-1] else torch.cat([rotated, x[..., rot:]], dim=-1)


class StaticKVCache(KVCache):
    """Preallocated keys/values (B, n_kv_heads, max_len, head_dim) per layer, plus a fill pointer."""

    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype, device: torch.device | str):
        self.batch_size = batch_size
        self.max_len = max_len
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self._length = 0

    @property
    def length(self) -> int:
        return self._length

    def reset(self) -> None:
        self._length = 0

    def drop_last(self, n: int) -> None:
        if not 0 <= n <= self._length:
            raise ValueError(f"cannot drop {n} of {self._length} cached slots")
        self._length -= n

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys/values of `layer` after the filled part; return all filled slots."""
        end = self._length + k.shape[2]
        self.keys[layer][:, :, self._length:end] = k
        self.values[layer][:, :, self._length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        """Move the pointer once every layer has written its `n` new slots."""
        self._length += n


class Attention(nn.Module):
    """Grouped-query self-attention; keys/values have `n_kv_heads` heads shared by groups of queries."""

    # The CPU attention kernels are 1.5-5x slower in bf16 than in fp32 at our lengths (forward +
    # backward, T = 65-300), so under CPU autocast attention runs in fp32 while the matmuls around
    # it run in bf16. A kernel choice, not a modelling one: benchmarks/cpu_attention.py times both.
    cpu_fp32 = True

    def __init__(self, cfg: DecoderConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.dropout = cfg.dropout
        self.wq = nn.Linear(cfg.hidden_size, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.hidden_size, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.hidden_size, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, is_causal, cache: StaticKVCache | None):
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.write(self.layer, k, v)
        attend = partial(F.scaled_dot_product_attention, attn_mask=mask, is_causal=is_causal,
                         dropout_p=self.dropout if self.training else 0.0,
                         enable_gqa=self.n_kv_heads != self.n_heads)
        if self.cpu_fp32 and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                out = attend(q.float(), k.float(), v.float())
        else:
            out = attend(q, k.to(q.dtype), v.to(q.dtype))
        return self.wo(out.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.w_gate = nn.Linear(cfg.hidden_size, cfg.mlp_hidden, bias=False)
        self.w_up = nn.Linear(cfg.hidden_size, cfg.mlp_hidden, bias=False)
        self.w_down = nn.Linear(cfg.mlp_hidden, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, cfg: DecoderConfig, layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, mask, is_causal, cache):
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, mask, is_causal, cache))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class Decoder(Backbone):
    """The built-in backbone. Weights are initialised from `seed`, so two builds are identical."""

    def __init__(self, config: DecoderConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.hidden_size = config.hidden_size
        self.tok_embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary = Rotary(config.rope_dim, config.rope_theta)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        # A tied head has no weight of its own (one tensor in the state dict, not two aliases).
        self.head = None if config.tie_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._compiled_stack = None  # set by compile_stack(): the cache-free path, compiled
        self._init_weights(seed)

    def _init_weights(self, seed: int) -> None:
        """normal(0, 0.02) everywhere; residual projections scaled by 1/sqrt(2L) (GPT-2)."""
        gen = torch.Generator().manual_seed(seed)
        residual_std = INIT_STD / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if p.ndim < 2:  # norm gains stay at one
                continue
            std = residual_std if name.endswith(("attn.wo.weight", "mlp.w_down.weight")) else INIT_STD
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * std)

    @property
    def vocab_size(self) -> int:
        return self.tok_embed.num_embeddings

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tok_embed(ids)

    def input_embedding_weight(self) -> torch.Tensor:
        return self.tok_embed.weight

    def forward(self, embeds, positions, key_padding_mask=None, cache=None, attn_mask=None):
        check_inputs(embeds, positions, self.hidden_size)
        b, t, _ = embeds.shape
        past = 0
        if cache is not None:
            cache.check_room(b, t)
            past = cache.length
        if past + t > self.config.max_seq_len:
            raise UserError(f"sequence of {past + t} tokens exceeds max_seq_len {self.config.max_seq_len}; "
                            "shorten it or build the decoder with a larger max_seq_len")
        plain_causal = key_padding_mask is None and attn_mask is None
        # SDPA's is_causal is the fast path for training; a single decode step needs no mask at all.
        is_causal = plain_causal and past == 0 and t > 1
        mask = None
        if not plain_causal or (past > 0 and t > 1):
            mask = attention_visibility(b, t, past, key_padding_mask, attn_mask, embeds.device)[:, None]
        if cache is None:
            stack = self._compiled_stack or self._stack
            return stack(embeds, positions, mask, is_causal)
        x = self._stack(embeds, positions, mask, is_causal, cache)
        cache.advance(t)
        return x

    def _stack(self, x, positions, mask, is_causal, cache=None):
        """Rotary angles, the blocks and the final norm: the whole forward after the checks."""
        cos, sin = self.rotary(positions)
        for block in self.blocks:
            x = block(x, cos, sin, mask, is_causal, cache)
        return self.norm(x)

    def compile_stack(self) -> None:
        """torch.compile the cache-free forward (training, teacher forcing), with dynamic shapes
        since every batch has its own length. Decoding with a KV cache stays eager: a cache is a
        Python object whose fill pointer moves every step, which would recompile each step."""
        self._compiled_stack = torch.compile(self._stack, dynamic=True)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.tok_embed.weight if self.head is None else self.head.weight
        return F.linear(hidden, weight).float()

    def new_cache(self, batch_size, max_len, dtype=torch.float32, device="cpu") -> StaticKVCache:
        if max_len > self.config.max_seq_len:
            raise UserError(f"cache of {max_len} tokens exceeds max_seq_len {self.config.max_seq_len}")
        c = self.config
        return StaticKVCache(c.n_layers, batch_size, c.n_kv_heads, c.head_dim, max_len, dtype, device)

    def extend_vocab(self, new_vocab_size: int, init: str = "mean") -> None:
        check_new_vocab_size(self.vocab_size, new_vocab_size)
        added = new_vocab_size - self.vocab_size
        if added == 0:
            return
        self.tok_embed.weight = grown_parameter(self.tok_embed.weight, added, init)
        self.tok_embed.num_embeddings = new_vocab_size
        if self.head is not None:
            self.head.weight = grown_parameter(self.head.weight, added, init)
            self.head.out_features = new_vocab_size
        self.config = dataclasses.replace(self.config, vocab_size=new_vocab_size)
