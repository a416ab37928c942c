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

        if image_tok.kind != "discrete":
            raise UserError("UGen needs a discrete (VQ) image tokenizer; got a continuous one")
        vocab = Vocabulary.from_tokenizer(text_tok, n_visual=image_tok.codebook_size)
        backbone = build_backbone(model_cfg.backbone, vocab.size)
        return UGen(backbone, vocab)
    raise UserError(f"model family {model_cfg.family!r} is not available; use ugen")


def make_builder(model, model_cfg, text_tok, image_tok) -> SequenceBuilder:
    discrete = image_tok.kind == "discrete"
    return SequenceBuilder(text_tok, model.vocab, gen_len=image_tok.num_tokens,
                           und_len=getattr(model, "und_len", image_tok.num_tokens),
                           discrete=discrete, max_len=model_cfg.max_seq_len)
