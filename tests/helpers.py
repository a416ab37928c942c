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
