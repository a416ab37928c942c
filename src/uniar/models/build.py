"""Build a model and its tokenizers from a config (a new run) or from a checkpoint folder."""

from __future__ import annotations

from pathlib import Path

from uniar.data.sequence import SequenceBuilder
from uniar.errors import UserError
from uniar.models.backbone import build_backbone
from uniar.models.vocab import Vocabulary


def build_text_tokenizer(spec: str):
    """"bpe:<vocab size>" trains the built-in byte-level BPE (deterministic); else a local folder."""
    from uniar.tokenizers.text import TextTokenizer, train_bpe

    if spec.startswith("bpe:"):
        return train_bpe(vocab_size=int(spec.split(":", 1)[1]))
    folder = Path(spec)
    if (folder / "uniar_tokenizer.json").is_file():
        return TextTokenizer.load(folder)
    return TextTokenizer.from_pretrained(folder)


def load_image_tokenizer(folder: str):
    from uniar.tokenizers.image import load_image_tokenizer as _load

    if not folder:
        raise UserError(
            "model.image_tokenizer is empty: train one with `uniar train-tokenizer vq --out DIR` "
            "(or kl for UniFluid) and pass model.image_tokenizer=DIR"
        )
    return _load(folder)


def build_model(model_cfg, text_tok, image_tok):
    """The model of `model_cfg.family` over the unified vocabulary of these tokenizers."""
    if model_cfg.family == "ugen":
        from uniar.models.ugen import UGen
        from uniar.models.visual_init import check_visual_embed_init, init_from_codebook

        if image_tok.kind != "discrete":
            raise UserError("UGen needs a discrete (VQ) image tokenizer; got a continuous one")
        init = check_visual_embed_init(model_cfg.visual_embed_init)
        vocab = Vocabulary.from_tokenizer(text_tok, n_visual=image_tok.codebook_size)
        backbone = build_backbone(model_cfg.backbone, vocab.size)
        image_len = image_tok.num_tokens if model_cfg.image_pos_embed else 0
        model = UGen(backbone, vocab, loss_norm=model_cfg.loss_norm, softmax=model_cfg.softmax,
                     image_len=image_len)
        if init == "codebook":
            init_from_codebook(model.backbone, vocab, image_tok.code_vectors())
        return model
    if model_cfg.family == "unifluid":
        if model_cfg.image_pos_embed:
            raise UserError("model.image_pos_embed is UGen's switch; UniFluid has "
                            "model.unifluid.image_pos_embed (generated images) and "
                            "model.unifluid.und_pos_embed (images it reads)")
        if model_cfg.visual_embed_init != "random":
            raise UserError("model.visual_embed_init applies to UGen only: UniFluid has no visual ids")
        if model_cfg.softmax != "full":
            raise UserError("model.softmax applies to UGen only: UniFluid's softmax has no visual ids "
                            "(its images go through the diffusion head); leave it at full")
        return build_unifluid(model_cfg, text_tok, image_tok)
    raise UserError(f"model family {model_cfg.family!r} is not available; use ugen or unifluid")


def build_unifluid(model_cfg, text_tok, image_tok):
    """UniFluid over the text vocabulary, with a diffusion head sized to the tokenizer and backbone.

    The derived sizes (the head's token_dim and cond_dim) and SigLIP's architecture are written back
    into `model_cfg.unifluid`, so the config saved with a checkpoint describes the model exactly.
    """
    from dataclasses import replace

    from uniar.models.encoders import build_und_encoder
    from uniar.models.unifluid import UniFluid

    if image_tok.kind != "continuous":
        raise UserError("UniFluid needs a continuous (KL / AutoencoderKL) image tokenizer; got a discrete one")
    cfg = model_cfg.unifluid
    vocab = Vocabulary.from_tokenizer(text_tok, n_visual=0)
    backbone = build_backbone(model_cfg.backbone, vocab.size)
    g = cfg.token_group
    token_dim, gen_len = image_tok.token_dim * g * g, image_tok.num_tokens // (g * g)
    cfg.head = replace(cfg.head, token_dim=token_dim, cond_dim=backbone.hidden_size)
    und = build_und_encoder(cfg.und_encoder, hidden_size=backbone.hidden_size, projector=cfg.und_projector,
                            image_size=image_tok.image_size, gen_len=gen_len,
                            token_dim=token_dim, builtin=cfg.builtin_encoder,
                            siglip_path=cfg.siglip_path, siglip_config=cfg.siglip_config,
                            siglip_trainable=cfg.siglip_trainable, merge=cfg.und_merge)
    if cfg.und_encoder == "siglip":
        cfg.siglip_config = und.encoder.config_dict()
    # the new layers stay fp32 whatever the backbone's dtype (they are small; outputs are cast)
    return UniFluid(backbone, vocab, cfg, image_tok.grid, und, loss_norm=model_cfg.loss_norm)


def make_builder(model, model_cfg, text_tok, image_tok) -> SequenceBuilder:
    discrete = image_tok.kind == "discrete"
    return SequenceBuilder(text_tok, model.vocab, gen_len=getattr(model, "gen_len", image_tok.num_tokens),
                           und_len=getattr(model, "und_len", image_tok.num_tokens),
                           discrete=discrete, max_len=model_cfg.max_seq_len,
                           prompt_first=model_cfg.prompt_first)
