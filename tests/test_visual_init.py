"""model.visual_embed_init: UGen's visual-id input rows from the VQ codebook, or fresh."""

from __future__ import annotations

import pytest
import torch
from helpers import text_tokenizer, tiny_backbone_config

from uniar.errors import UserError
from uniar.models.build import build_model, load_image_tokenizer
from uniar.train.config import ModelConfig


def _model(vq_dir, init: str):
    cfg = ModelConfig(family="ugen", backbone=tiny_backbone_config(), text_tokenizer="bpe:512",
                      image_tokenizer=str(vq_dir), visual_embed_init=init)
    image_tok = load_image_tokenizer(cfg.image_tokenizer)
    return build_model(cfg, text_tokenizer(), image_tok), image_tok


def _cosines(x: torch.Tensor) -> torch.Tensor:
    x = torch.nn.functional.normalize(x.float() - x.float().mean(0), dim=1)
    sims = x @ x.T
    return sims[~torch.eye(len(x), dtype=torch.bool)]


def test_codebook_init_keeps_the_codes_geometry_and_the_text_rows(tiny_vq):
    fresh, _ = _model(tiny_vq, "random")
    model, image_tok = _model(tiny_vq, "codebook")
    v = model.vocab
    weight = model.backbone.input_embedding_weight().detach()
    rows = weight[v.visual_offset: v.visual_offset + v.n_visual]
    # similar codes start similar: the rows' pairwise angles follow the (centred) code vectors'
    corr = torch.corrcoef(torch.stack([_cosines(rows), _cosines(image_tok.code_vectors())]))[0, 1]
    assert corr > 0.8
    text = weight[: v.visual_offset]
    assert abs(float(rows.std() / text.std()) - 1.0) < 1e-3  # the text rows' spread
    fresh_weight = fresh.backbone.input_embedding_weight().detach()
    assert torch.equal(text, fresh_weight[: v.visual_offset])  # text rows untouched
    assert not torch.allclose(rows, fresh_weight[v.visual_offset: v.visual_offset + v.n_visual])
    again, _ = _model(tiny_vq, "codebook")  # deterministic
    assert torch.equal(again.backbone.input_embedding_weight(), model.backbone.input_embedding_weight())


def test_visual_embed_init_errors(tiny_vq, tiny_kl):
    with pytest.raises(UserError, match="visual_embed_init must be one of"):
        _model(tiny_vq, "pca")
    cfg = ModelConfig(family="unifluid", backbone=tiny_backbone_config(), text_tokenizer="bpe:512",
                      image_tokenizer=str(tiny_kl), visual_embed_init="codebook")
    with pytest.raises(UserError, match="UGen only"):
        build_model(cfg, text_tokenizer(), load_image_tokenizer(cfg.image_tokenizer))
    with pytest.raises(UserError, match="no codebook"):
        load_image_tokenizer(str(tiny_kl)).code_vectors()
