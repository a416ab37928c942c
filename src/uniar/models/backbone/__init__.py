"""The backbone: a built-in decoder or any transformers causal LM, behind one interface (see base.py).

    backbone = build_backbone(BackboneConfig(kind="builtin", preset="tiny"), vocab_size=4096)
    backbone = build_backbone(BackboneConfig(kind="hf", path="models/TinyLlama-1.1B"))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from uniar.errors import UserError
from uniar.models.backbone.base import Backbone, KVCache
from uniar.models.backbone.builtin import Decoder, DecoderConfig
from uniar.models.backbone.presets import get_preset, preset_names


@dataclass
class BackboneConfig:
    """Which backbone to build. Fields left None keep the preset's (builtin) value."""

    kind: Literal["builtin", "hf"] = "builtin"
    # builtin: a named size from presets.py, optionally changed field by field
    preset: str = "tiny"
    hidden_size: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    mlp_hidden: int | None = None
    max_seq_len: int | None = None
    rope_theta: float | None = None
    rope_fraction: float | None = None
    norm_eps: float | None = None
    tie_embeddings: bool | None = None
    dropout: float | None = None
    seed: int = 0
    # hf: a local folder holding a transformers causal LM (config.json + *.safetensors)
    path: str | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    attn_implementation: Literal["eager", "sdpa"] | None = None


_DECODER_FIELDS = ("hidden_size", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden", "max_seq_len",
                   "rope_theta", "rope_fraction", "norm_eps", "tie_embeddings", "dropout")


def decoder_config(cfg: BackboneConfig, vocab_size: int) -> DecoderConfig:
    """The built-in decoder's full config: the preset with the fields `cfg` sets."""
    overrides = {name: getattr(cfg, name) for name in _DECODER_FIELDS if getattr(cfg, name) is not None}
    return get_preset(cfg.preset, vocab_size, **overrides)


def build_backbone(cfg: BackboneConfig, vocab_size: int | None = None) -> Backbone:
    """Build the backbone `cfg` describes.

    builtin: `vocab_size` rows exactly (required). hf: the pretrained model; when `vocab_size` is
    larger than its vocabulary, the vocabulary is extended to it (new rows = mean of the old).
    """
    if cfg.kind == "builtin":
        if vocab_size is None:
            raise UserError("the built-in decoder needs a vocab_size (text + visual tokens)")
        return Decoder(decoder_config(cfg, vocab_size), seed=cfg.seed)
    if cfg.kind == "hf":
        if not cfg.path:
            raise UserError("backbone kind 'hf' needs `path`: a local folder with a transformers causal LM")
        from uniar.models.backbone.hf import HFBackbone

        backbone = HFBackbone.from_pretrained(cfg.path, dtype=getattr(torch, cfg.dtype),
                                              attn_implementation=cfg.attn_implementation)
        if vocab_size is not None and vocab_size > backbone.vocab_size:
            backbone.extend_vocab(vocab_size)
        return backbone
    raise UserError(f"unknown backbone kind {cfg.kind!r}; use 'builtin' or 'hf'")


__all__ = ["Backbone", "BackboneConfig", "Decoder", "DecoderConfig", "KVCache", "build_backbone",
           "decoder_config", "get_preset", "preset_names"]
