"""Load a checkpoint folder for sampling and evaluation (no optimizer, no data pool)."""

from __future__ import annotations

from pathlib import Path

import torch

from uniar.errors import CheckpointError
from uniar.models.build import build_model, make_builder
from uniar.train import checkpoint as ckpt
from uniar.train.config import TrainConfig
from uniar.train.progressive_vocab import ProgressiveVocab
from uniar.utils.io import load_safetensors, read_json


def load_for_inference(folder: str | Path, device: str = "cpu"):
    """(model, text tokenizer, image tokenizer, builder, config, progressive-vocab state or None)."""
    from uniar.tokenizers.image import load_image_tokenizer
    from uniar.tokenizers.text import TextTokenizer

    folder = ckpt.check_checkpoint(folder)
    cfg = ckpt.load_config(folder, TrainConfig)
    text_tok = TextTokenizer.load(folder / "text_tokenizer")
    image_tok = load_image_tokenizer(folder / "image_tokenizer")
    model_cfg = cfg.model
    if model_cfg.backbone.kind == "hf":
        # rebuild the transformers model from the config saved in the checkpoint, not the original folder
        from dataclasses import replace

        model_cfg = replace(model_cfg, backbone=replace(model_cfg.backbone, path=str(folder / "backbone_config")))
    model = build_model(model_cfg, text_tok, image_tok)
    state = load_safetensors(folder / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{folder}/model.safetensors does not match the model its config describes "
            f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})"
        )
    saved_vocab = read_json(folder / "vocab.json")
    if saved_vocab["text_size"] != model.vocab.text_size or saved_vocab["n_visual"] != model.vocab.n_visual:
        raise CheckpointError(f"{folder}: vocab.json does not match the tokenizers in the folder")
    progressive = None
    ts_path = folder / "training_state.json"
    if ts_path.is_file() and cfg.progressive_vocab.enabled and model.vocab.n_visual:
        ts = read_json(ts_path)
        if ts.get("progressive_vocab"):
            progressive = ProgressiveVocab(cfg.progressive_vocab, model.vocab.n_visual,
                                           max(1, cfg.steps - cfg.image_stage_start()))
            progressive.load_state_dict(ts["progressive_vocab"])
    model.to(torch.device(device)).eval()
    builder = make_builder(model, model_cfg, text_tok, image_tok)
    return model, text_tok, image_tok, builder, cfg, progressive
