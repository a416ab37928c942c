"""Where UGen's visual-id input embeddings start (`model.visual_embed_init`).

"random": the fresh rows the backbone's `extend_vocab` gives every new id, as the paper extends its
vocabulary. "codebook": each visual id's row is its VQ code vector, mapped into the backbone's width
by a fixed random projection and scaled to the text embeddings' spread. A random projection keeps
the angles between code vectors (nearly), so codes whose patches look alike (the same colour, the
same edge) start with alike embeddings, and the model does not have to learn from nothing which of
512 ids show red. Only the input rows are set; the output head's visual rows stay fresh.
"""

from __future__ import annotations

import torch

from uniar.errors import UserError

VISUAL_EMBED_INITS = ("random", "codebook")


def check_visual_embed_init(name: str) -> str:
    if name not in VISUAL_EMBED_INITS:
        raise UserError(f"model.visual_embed_init must be one of {VISUAL_EMBED_INITS}, got {name!r}")
    return name


@torch.no_grad()
def init_from_codebook(backbone, vocab, codes: torch.Tensor, seed: int = 0) -> None:
    """Write the projected, centred, rescaled code vectors `codes` (n_visual, D) into the input
    embedding rows of `vocab`'s visual ids. A tied head shares those rows, so it starts there too."""
    if codes.ndim != 2 or codes.shape[0] != vocab.n_visual:
        raise UserError(f"visual_embed_init=codebook: the tokenizer gives {tuple(codes.shape)} code vectors "
                        f"for a vocabulary of {vocab.n_visual} visual ids")
    weight = backbone.input_embedding_weight()
    scale = weight[: vocab.visual_offset].float().std()  # the text ids' spread (as stored: no embed scale)
    gen = torch.Generator().manual_seed(seed)
    proj = torch.randn(codes.shape[1], backbone.hidden_size, generator=gen)
    rows = (codes.float() - codes.float().mean(0)) @ proj
    rows = rows * (scale / rows.std().clamp_min(1e-12))
    weight[vocab.visual_offset: vocab.visual_offset + vocab.n_visual] = rows.to(weight)
