"""Text corpus: the held-out rule, ShapesWorld documents, token windows."""

import numpy as np
import pytest

from uniar.data.corpus import (
    corpus_documents, is_heldout_topic, pydoc_documents, shapesworld_documents, shapesworld_text, token_stream,
    token_windows,
)
from uniar.tokenizers.text import train_bpe


@pytest.fixture(scope="module")
def tok():
    return train_bpe(vocab_size=1024, documents=pydoc_documents("train"))


def test_pydoc_split_is_a_partition_by_name():
    from pydoc_data.topics import topics

    train, heldout = pydoc_documents("train"), pydoc_documents("heldout")
    assert len(train) + len(heldout) == len(topics)
    assert set(train).isdisjoint(heldout)
    assert heldout == [topics[n] for n in sorted(topics) if is_heldout_topic(n)]
    share = sum(map(len, heldout)) / sum(map(len, topics.values()))
    assert 0.03 < share < 0.3 and len(heldout) >= 3
    assert pydoc_documents("heldout") == heldout  # stable
    with pytest.raises(ValueError, match="unknown corpus part"):
        pydoc_documents("test")


def test_shapesworld_documents():
    from uniar.data.shapesworld.dataset import get_example

    docs = shapesworld_documents("train", 20)
    assert len(docs) == 20 and docs == shapesworld_documents("train", 20)
    ex = get_example("train", 3)
    assert docs[3] == shapesworld_text(ex)
    lines = docs[3].split("\n")
    assert lines[0] == ex.caption and lines[-1] == ex.edit.instruction
    assert f"{ex.questions[0].question} {ex.questions[0].answer}" in lines
    assert shapesworld_documents("train", 20, seed=1) != docs
    heldout = shapesworld_documents("heldout", 20)
    assert len(heldout) == 2 and heldout[0] == shapesworld_text(get_example("val", 0))


def test_corpus_keeps_heldout_out_of_train():
    train = corpus_documents("train", shapesworld_examples=10)
    heldout = corpus_documents("heldout", shapesworld_examples=10)
    assert set(pydoc_documents("heldout")) <= set(heldout)
    assert set(train).isdisjoint(heldout)
    assert len(train) == len(pydoc_documents("train")) + 10


def test_token_windows_cover_every_target_once(tok):
    docs = pydoc_documents("heldout")[:3]
    stream = token_stream(tok, docs)
    assert stream[0] == tok.bos_id and stream[-1] == tok.eos_id
    assert (stream == tok.bos_id).sum() == 3 and (stream == tok.eos_id).sum() == 3
    windows = list(token_windows(tok, docs, seq_len=64))
    assert all(w.shape == (64,) and w.dtype == np.int64 for w in windows)
    # Default stride seq_len - 1: windows share one token; targets w[1:] tile the stream.
    targets = np.concatenate([w[1:] for w in windows])
    assert np.array_equal(targets, stream[1:1 + len(targets)])
    assert len(stream) - 1 - len(targets) < 63  # only the tail that does not fill a window is left
    padded = list(token_windows(tok, docs, seq_len=64, drop_last=False))
    assert len(padded) == len(windows) + 1
    tail = padded[-1]
    real = tail[tail != tok.pad_id]
    assert np.array_equal(np.concatenate([targets, real[1:]]), stream[1:])
    assert tok.decode(np.concatenate([windows[0], *[w[1:] for w in windows[1:]]])).startswith(docs[0][:100])


def test_token_windows_stride_and_bad_arguments(tok):
    docs = ["one two three four five six seven eight nine ten"] * 4
    stream = token_stream(tok, docs, add_bos=False, add_eos=False)
    windows = list(token_windows(tok, docs, seq_len=8, stride=8, add_bos=False, add_eos=False))
    assert len(windows) == len(stream) // 8
    assert np.array_equal(np.concatenate(windows), stream[:8 * len(windows)])
    assert list(token_windows(tok, [], seq_len=8)) == []
    assert list(token_windows(tok, ["hi"], seq_len=64)) == []
    with pytest.raises(ValueError, match="seq_len"):
        list(token_windows(tok, docs, seq_len=1))
    with pytest.raises(ValueError, match="stride"):
        list(token_windows(tok, docs, seq_len=8, stride=9))
