"""The text corpus: Python's own documentation plus ShapesWorld text, with a fixed held-out part.

Sources (no download; everything ships with Python and this package):

- pydoc topics: every string of `pydoc_data.topics.topics` (79 topics, 465k characters on
  Python 3.11; the exact text follows the interpreter's version), one document per topic, in
  sorted topic-name order.
- ShapesWorld: per example one document of its caption, paraphrases, each question followed by its
  answer, and its edit instruction, one per line.

The split rule (stable: a topic's part depends on its name only, not on its neighbours or on how
many topics a Python version has):

- a pydoc topic is held out when `zlib.crc32(name.encode()) % 10 == 0`. On Python 3.11 that is 5
  topics (attribute-access, context-managers, floating, formatstrings, power), 9% of the characters;
- ShapesWorld text of the `train` part comes from the `train` split, examples
  `seed * 10**6 + i` for i < n; the `heldout` part uses the `val` split, the same indices, n // 10
  examples.

The held-out part is kept out of tokenizer training (`uniar.tokenizers.text.train_bpe`) and out
of LM training; it is the text behind the `text_ppl` score.
"""

from __future__ import annotations

import functools
import zlib
from typing import Iterator, Sequence

import numpy as np

PARTS = ("train", "heldout")
HELDOUT_MODULUS = 10
DEFAULT_SHAPESWORLD_EXAMPLES = 1000
SEED_BLOCK = 10**6  # seed s takes ShapesWorld examples s*SEED_BLOCK onwards
_SHAPESWORLD_SPLIT = {"train": "train", "heldout": "val"}


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise ValueError(f"unknown corpus part {part!r}; expected one of {PARTS}")


def is_heldout_topic(name: str) -> bool:
    """The split rule for pydoc topics (see the module docstring)."""
    return zlib.crc32(name.encode("utf-8")) % HELDOUT_MODULUS == 0


def pydoc_documents(part: str) -> list[str]:
    """The pydoc topic texts of `part` ("train" or "heldout"), in sorted topic-name order."""
    from pydoc_data.topics import topics

    _check_part(part)
    want_heldout = part == "heldout"
    return [topics[name] for name in sorted(topics) if is_heldout_topic(name) == want_heldout]


def shapesworld_text(example) -> str:
    """All the text of one ShapesWorld example as one document, one sentence per line."""
    lines = [example.caption, *example.paraphrases]
    lines += [f"{q.question} {q.answer}" for q in example.questions]
    lines.append(example.edit.instruction)
    return "\n".join(lines)


@functools.lru_cache(maxsize=8)
def _shapesworld_documents(part: str, n_examples: int, seed: int) -> tuple[str, ...]:
    from uniar.data.shapesworld.dataset import get_example

    split = _SHAPESWORLD_SPLIT[part]
    n = n_examples if part == "train" else n_examples // 10
    start = seed * SEED_BLOCK
    return tuple(shapesworld_text(get_example(split, start + i)) for i in range(n))


def shapesworld_documents(part: str, n_examples: int = DEFAULT_SHAPESWORLD_EXAMPLES, seed: int = 0) -> list[str]:
    """ShapesWorld text documents of `part`: n_examples from `train`, or n_examples // 10 from `val`.

    About 0.5 ms per example; results are cached per (part, n_examples, seed)."""
    _check_part(part)
    if not 0 <= n_examples <= SEED_BLOCK:
        raise ValueError(f"n_examples must be in 0..{SEED_BLOCK}, got {n_examples}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return list(_shapesworld_documents(part, n_examples, seed))


def corpus_documents(part: str, shapesworld_examples: int = DEFAULT_SHAPESWORLD_EXAMPLES, seed: int = 0) -> list[str]:
    """The whole text corpus of `part`: pydoc topics, then ShapesWorld documents."""
    return pydoc_documents(part) + shapesworld_documents(part, shapesworld_examples, seed)


def token_stream(tokenizer, docs: Sequence[str], add_bos: bool = True, add_eos: bool = True) -> np.ndarray:
    """All documents encoded and concatenated (each wrapped in bos/eos): int64 (N,)."""
    encoded = tokenizer.encode_batch(list(docs), add_bos=add_bos, add_eos=add_eos)
    if not encoded:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.asarray(ids, dtype=np.int64) for ids in encoded])


def token_windows(
    tokenizer,
    docs: Sequence[str],
    seq_len: int,
    *,
    stride: int | None = None,
    add_bos: bool = True,
    add_eos: bool = True,
    drop_last: bool = True,
) -> Iterator[np.ndarray]:
    """Fixed-length windows (int64, (seq_len,)) over the concatenated token stream of `docs`.

    A window is used as inputs w[:-1] and targets w[1:]. The default stride, seq_len - 1, makes
    consecutive windows share one token, so every token of the stream after the first is a target
    exactly once: the right thing for perplexity, and a fine order for training. With
    drop_last=False the tail that does not fill a window comes as one more window padded with
    `tokenizer.pad_id` (mask targets equal to pad_id out of the loss).
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 (inputs and targets), got {seq_len}")
    stride = seq_len - 1 if stride is None else stride
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride must be in 1..seq_len={seq_len}, got {stride}")
    stream = token_stream(tokenizer, docs, add_bos, add_eos)
    start, covered = 0, 1  # stream[:covered] has been yielded (position 0 is never a target)
    while start + seq_len <= len(stream):
        yield stream[start:start + seq_len].copy()
        covered = start + seq_len
        start += stride
    if not drop_last and len(stream) > covered and len(stream) - start >= 2:
        tail = np.full(seq_len, tokenizer.pad_id, dtype=np.int64)
        tail[:len(stream) - start] = stream[start:]
        yield tail
