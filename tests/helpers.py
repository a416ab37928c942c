"""Small shared builders for tests: a BPE tokenizer (cached per session) and tiny configs."""

from __future__ import annotations

import functools

from uniar.models.vocab import Vocabulary


@functools.lru_cache(maxsize=None)
def text_tokenizer(vocab_size: int = 512):
    from uniar.tokenizers.text import train_bpe

    return train_bpe(vocab_size=vocab_size)


def vocab(n_visual: int = 16) -> Vocabulary:
    return Vocabulary.from_tokenizer(text_tokenizer(), n_visual)


def tiny_backbone_config(**kw):
    from uniar.models.backbone import BackboneConfig

    base = dict(kind="builtin", preset="tiny", hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=2,
                mlp_hidden=128, max_seq_len=512)
    base.update(kw)
    return BackboneConfig(**base)


def tiny_ugen(n_visual: int = 16, seed: int = 0):
    from uniar.models.backbone import build_backbone
    from uniar.models.ugen import UGen

    v = vocab(n_visual)
    return UGen(build_backbone(tiny_backbone_config(seed=seed), v.size), v)


def save_tiny_vq(folder, codebook_size: int = 32):
    """An untrained built-in VQ tokenizer (64x64 -> 8x8 codes), small enough for tests."""
    from uniar.tokenizers.vq import VQConfig, VQTokenizer

    torch_seed(0)
    tok = VQTokenizer(VQConfig(channels=[8, 16, 16, 16], encoder_blocks=[0, 0, 0, 1],
                               decoder_blocks=[0, 0, 0, 1], codebook_size=codebook_size, code_dim=8))
    tok.save(folder)
    return folder


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def tiny_train_config(out_dir, vq_dir, steps: int = 6, **kw):
    from uniar.train.config import StageConfig, TrainConfig

    cfg = TrainConfig()
    cfg.model.backbone = tiny_backbone_config()
    cfg.model.text_tokenizer = "bpe:512"
    cfg.model.image_tokenizer = str(vq_dir)
    cfg.data.pool_size = 48
    cfg.steps = steps
    cfg.optim.batch_size = 4
    cfg.optim.warmup_steps = 2
    cfg.log_every = 1
    cfg.checkpoint_every = 0
    cfg.eval.every = 0
    cfg.out_dir = str(out_dir)
    cfg.stages = [StageConfig("A", 1 / 3, {"text": 1.0}),
                  StageConfig("B", 2 / 3, {"t2i": 1, "caption": 1, "vqa": 1, "edit": 1, "interleaved": 1, "text": 1})]
    cfg.progressive_vocab.enabled = True
    cfg.progressive_vocab.k = 1
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def save_tiny_kl(folder, latent_channels: int = 4):
    """An untrained built-in KL tokenizer (64x64 -> 4x4 tokens of `latent_channels`), with latent
    statistics measured on a few ShapesWorld images so that its tokens are normalised."""
    from uniar.data.images import to_model
    from uniar.data.shapesworld.dataset import images
    from uniar.tokenizers.kl import KLConfig, KLTokenizer

    torch_seed(0)
    tok = KLTokenizer(KLConfig(channels=[8, 8, 16, 16, 16], encoder_blocks=[0, 0, 0, 0, 1],
                               decoder_blocks=[0, 0, 0, 0, 1], latent_channels=latent_channels))
    tok.fit_normalization([to_model(images("train", 0, 16, 64))])
    tok.save(folder)
    return folder


def tiny_unifluid_train_config(out_dir, kl_dir, steps: int = 2, **kw):
    """A UniFluid run on the tiny backbone, a tiny diffusion head and the built-in UND encoder."""
    cfg = tiny_train_config(out_dir, kl_dir, steps=steps, **kw)
    cfg.model.family = "unifluid"
    cfg.progressive_vocab.enabled = False
    cfg.model.unifluid.head.width = 32
    cfg.model.unifluid.head.depth = 1
    cfg.model.unifluid.head.sample_steps = 4
    cfg.model.unifluid.builtin_encoder.channels = [8, 8, 16, 16]
    return cfg
