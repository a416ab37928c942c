"""Named sizes of the built-in decoder. The vocabulary comes from the tokenizers, not from here."""

from __future__ import annotations

import dataclasses

from uniar.errors import UserError
from uniar.models.backbone.builtin import DecoderConfig

# SwiGLU width ~ 8/3 * hidden, rounded up to a multiple of 64 (Llama's rule).
PRESETS: dict[str, dict] = {
    # CPU-sized, for ShapesWorld: ~3.0M parameters in the blocks (plus 2 x vocab x 256 untied).
    "tiny": dict(hidden_size=256, n_layers=4, n_heads=8, n_kv_heads=4, mlp_hidden=704, max_seq_len=1024),
    # ~9.4M in the blocks.
    "small": dict(hidden_size=384, n_layers=6, n_heads=6, n_kv_heads=2, mlp_hidden=1024, max_seq_len=1024),
    # GPT-2-base-like, ~75.5M in the blocks.
    "base": dict(hidden_size=768, n_layers=12, n_heads=12, n_kv_heads=4, mlp_hidden=2048, max_seq_len=2048),
}


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str, vocab_size: int, **overrides) -> DecoderConfig:
    """The DecoderConfig of preset `name` for `vocab_size` tokens; `overrides` replace single fields."""
    if name not in PRESETS:
        raise UserError(f"unknown decoder preset {name!r}; choose one of: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(DecoderConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UserError(f"unknown decoder field(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    return DecoderConfig(vocab_size=vocab_size, **{**PRESETS[name], **overrides})
