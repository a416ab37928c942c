"""Text tokenizer: built-in byte-level BPE and pretrained folders (tokenizer.json, SentencePiece)."""

import json
import random

import numpy as np
import pytest

from uniar.errors import CheckpointError, UserError
from uniar.tokenizers.text import SPECIAL_TOKENS, TextTokenizer, train_bpe

FIXED_STRINGS = [
    "",
    " ",
    "a large red circle at the top left",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n and \x00 nul \x07 bell \x1b[0m escape",
    "emoji 😀🎉 and a family 👨‍👩‍👧 with ZWJ, flags 🇫🇷",
    "CJK 漢字かなカナ 한국어, Arabic مرحبا, Hebrew שלום",
    "combining e\u0301 vs é, ligature ﬁ, full-width ｆｕｌｌ",
    "<boi> <eos> <pad> written as text",
    "def f(x):\n    return x ** 2  # python\n",
    "\uffff\U0010ffff private \ue000 plane",
]


def random_unicode(rng: random.Random, n: int) -> list[str]:
    """Seeded random strings mixing ASCII, controls, Latin, CJK, emoji and any non-surrogate code point."""
    ranges = [(0x20, 0x7E), (0x00, 0x1F), (0xA0, 0x24F), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF), (0, 0x10FFFF)]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randrange(0, 40)):
            lo, hi = rng.choice(ranges)
            c = rng.randint(lo, hi)
            chars.append(chr(c) if not 0xD800 <= c <= 0xDFFF else " ")
        out.append("".join(chars))
    return out


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(vocab_size=4096, seed=0)


# -- built-in BPE --------------------------------------------------------------------------


def test_special_tokens_list():
    assert len(set(SPECIAL_TOKENS)) == len(SPECIAL_TOKENS)
    for name in ["<pad>", "<bos>", "<eos>", "<boi>", "<eoi>", "<img_mask>", "<t2i>", "<caption>", "<vqa>",
                 "<edit>", "<text>", "<uncond>", "<answer>", "<reserved_0>", "<reserved_7>"]:
        assert name in SPECIAL_TOKENS


def test_bpe_specials_are_single_ids_never_made_from_text(bpe):
    assert bpe.vocab_size == 4096 and bpe.new_special_ids == ()
    assert (bpe.pad_id, bpe.bos_id, bpe.eos_id) == (0, 1, 2)
    for i, name in enumerate(SPECIAL_TOKENS):
        assert bpe.token_id(name) == bpe.special_ids[name] == i
        assert bpe.decode([i], skip_special=False) == name
        assert bpe.decode([i]) == ""
        # Written as text, a special token's name is ordinary text.
        ids = bpe.encode(name)
        assert len(ids) > 1 and not any(bpe.is_special(t) for t in ids)
        assert bpe.decode(ids) == name
    with pytest.raises(KeyError, match="not a special token"):
        bpe.token_id("<image>")


def test_bpe_round_trip_fixed_and_random_unicode(bpe):
    texts = FIXED_STRINGS + random_unicode(random.Random(0), 300)
    batch = bpe.encode_batch(texts)
    for text, ids in zip(texts, batch):
        assert ids == bpe.encode(text)
        assert not any(bpe.is_special(t) for t in ids)
        assert bpe.decode(ids) == text, repr(text)
    assert bpe.encode("") == [] and bpe.decode([]) == ""


def test_bpe_compresses_corpus_text(bpe):
    from uniar.data.corpus import pydoc_documents

    text = pydoc_documents("heldout")[0]
    assert len(text) / len(bpe.encode(text)) > 3.0  # ~3.8 chars/token on held-out pydoc text


def test_bos_eos_and_mixed_decode(bpe):
    ids = bpe.encode("a red circle", add_bos=True, add_eos=True)
    assert ids[0] == bpe.bos_id and ids[-1] == bpe.eos_id
    assert bpe.decode(ids) == "a red circle"
    mixed = [bpe.bos_id, *bpe.encode("draw"), bpe.token_id("<boi>"), bpe.token_id("<eoi>"), *bpe.encode(" done"), bpe.eos_id]
    assert bpe.decode(mixed, skip_special=False) == "<bos>draw<boi><eoi> done<eos>"
    assert bpe.decode(np.array(mixed)) == "draw done"
    assert bpe.decode_batch([mixed, []]) == ["draw done", ""]
    assert bpe.encode_batch(["x", ""], add_bos=True) == [[bpe.bos_id, *bpe.encode("x")], [bpe.bos_id]]


def test_bad_inputs(bpe):
    with pytest.raises(ValueError, match="outside the text vocabulary"):
        bpe.decode([5, bpe.vocab_size])
    with pytest.raises(ValueError, match="outside the text vocabulary"):
        bpe.decode([-1])
    with pytest.raises(ValueError, match="surrogate"):
        bpe.encode("a\ud800b")
    with pytest.raises(TypeError):
        bpe.encode(b"bytes")
    with pytest.raises(UserError, match="too small"):
        train_bpe(vocab_size=100)


def test_train_bpe_is_deterministic(bpe):
    again = train_bpe(vocab_size=4096, seed=0)
    assert again._backend.tok.to_str() == bpe._backend.tok.to_str()
    small = train_bpe(vocab_size=600, documents=["hello world"] * 50 + ["a red circle"] * 50)
    assert small.vocab_size <= 600 and small.decode(small.encode("hello red world!")) == "hello red world!"


def test_save_load_identical(bpe, tmp_path):
    bpe.save(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["tokenizer.json", "uniar_tokenizer.json"]
    meta = json.loads((tmp_path / "tok" / "uniar_tokenizer.json").read_text())
    assert meta["special_ids"]["<boi>"] == bpe.token_id("<boi>") and meta["new_special_ids"] == []
    loaded = TextTokenizer.load(tmp_path / "tok")
    assert loaded.vocab_size == bpe.vocab_size and loaded.special_ids == bpe.special_ids
    texts = FIXED_STRINGS + random_unicode(random.Random(1), 50)
    assert loaded.encode_batch(texts, add_bos=True) == bpe.encode_batch(texts, add_bos=True)
    # Its tokenizer.json alone, read as a pretrained folder, maps to the same ids.
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "tokenizer.json").write_bytes((tmp_path / "tok" / "tokenizer.json").read_bytes())
    bare = TextTokenizer.from_pretrained(tmp_path / "bare")
    assert bare.special_ids == bpe.special_ids and bare.new_special_ids == ()
    assert bare.encode_batch(texts) == bpe.encode_batch(texts)


def test_pickle_keeps_behaviour(bpe, tmp_path):
    """DataLoader workers receive tokenizers by pickle; specials in text must still stay text."""
    import pickle

    for tok in (bpe, TextTokenizer.from_pretrained(make_sentencepiece(tmp_path / "sp"))):
        copy = pickle.loads(pickle.dumps(tok))
        assert copy.special_ids == tok.special_ids
        assert copy.encode_batch(FIXED_STRINGS) == tok.encode_batch(FIXED_STRINGS)


def test_load_errors(bpe, tmp_path):
    with pytest.raises(CheckpointError, match="from_pretrained"):
        TextTokenizer.load(tmp_path)
    bpe.save(tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        TextTokenizer.load(tmp_path / "tok")
    bpe.save(tmp_path / "tok2")
    meta = json.loads((tmp_path / "tok2" / "uniar_tokenizer.json").read_text())
    meta["base_vocab_size"] = 123
    (tmp_path / "tok2" / "uniar_tokenizer.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not belong together"):
        TextTokenizer.load(tmp_path / "tok2")


# -- pretrained folders --------------------------------------------------------------------


def corpus_lines(n=600):
    from pydoc_data.topics import topics

    return [line for k in sorted(topics) for line in topics[k].splitlines() if line.strip()][:n]


def make_sentencepiece(folder, llama_like=True):
    """Train a tiny SentencePiece model offline. llama_like: identity normalisation, byte fallback,
    whitespace kept (as Llama-2/TinyLlama); otherwise SentencePiece's defaults (NFKC, whitespace
    collapsed) plus a <pad> piece."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    options = (dict(normalization_rule_name="identity", byte_fallback=True, remove_extra_whitespaces=False)
               if llama_like else dict(pad_id=3))
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()), model_prefix=str(folder / "tokenizer"), vocab_size=500,
        model_type="bpe", minloglevel=2, **options)
    (folder / "tokenizer.vocab").unlink()
    return folder


def make_llama_style_json(folder):
    """A tokenizer.json laid out as TinyLlama's: BPE with byte fallback and <unk>, <s>, </s> specials,
    normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer, and the matching decoder."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(corpus_lines(), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):  # byte-fallback pieces, as Llama has them
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    spec["pre_tokenizer"] = None  # Metaspace was only for training; Llama's normalizer does its work
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def make_gpt2_style_json(folder):
    """Byte-level BPE whose only special token is <|endoftext|>, named as both bos and eos."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus_lines(), trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>"}, "pad_token": None}))
    return folder


ORDINARY_TEXT = [
    "", "hello world", "  two  spaces  and trailing ", "line one\nline two\ttabbed",
    "emoji 😀 and CJK 漢字 and é", "x = [i ** 2 for i in range(10)]", "<s> and </s> as text",
]


def check_appended_specials(tok, reused: dict):
    """Reused names keep the vocabulary's ids; every other special is appended in SPECIAL_TOKENS order."""
    for name, i in reused.items():
        assert tok.token_id(name) == i
    appended = [n for n in SPECIAL_TOKENS if n not in reused]
    assert [tok.token_id(n) for n in appended] == list(range(tok.base_vocab_size, tok.vocab_size))
    assert tok.new_special_ids == tuple(range(tok.base_vocab_size, tok.vocab_size))


def check_round_trip_and_reload(tok, tmp_path, texts):
    for text in texts:
        ids = tok.encode(text, add_bos=True, add_eos=True)
        assert not any(tok.is_special(t) for t in ids[1:-1])
        assert tok.decode(ids) == text, repr(text)
    mixed = [tok.bos_id, *tok.encode("hi"), tok.token_id("<boi>"), tok.eos_id]
    assert tok.decode(mixed, skip_special=False) == "<bos>hi<boi><eos>"
    tok.save(tmp_path / "saved")
    loaded = TextTokenizer.load(tmp_path / "saved")
    assert loaded.special_ids == tok.special_ids and loaded.new_special_ids == tok.new_special_ids
    assert loaded.encode_batch(texts, add_bos=True) == tok.encode_batch(texts, add_bos=True)
    assert TextTokenizer.from_pretrained(tmp_path / "saved").special_ids == tok.special_ids


def test_sentencepiece_llama_like(tmp_path):
    tok = TextTokenizer.from_pretrained(make_sentencepiece(tmp_path / "sp"))
    assert tok.backend == "sentencepiece" and tok.base_vocab_size == 500
    assert tok.unk_id == 0
    check_appended_specials(tok, {"<bos>": 1, "<eos>": 2})
    assert tok.pad_id not in (tok.unk_id, tok.bos_id, tok.eos_id)
    check_round_trip_and_reload(tok, tmp_path, ORDINARY_TEXT + random_unicode(random.Random(2), 100))


def test_sentencepiece_default_normalisation_is_idempotent(tmp_path):
    tok = TextTokenizer.from_pretrained(make_sentencepiece(tmp_path / "sp", llama_like=False))
    check_appended_specials(tok, {"<bos>": 1, "<eos>": 2, "<pad>": 3})
    # NFKC + collapsed whitespace: exact on normalised text, and decoding is a fixed point after one pass.
    assert tok.decode(tok.encode("hello world")) == "hello world"
    assert tok.decode(tok.encode("  two  spaces ")) == "two spaces"
    rng = random.Random(3)
    ascii_texts = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz 0123.,:()=-\t\n") for _ in range(rng.randrange(40)))
                   for _ in range(100)]
    for text in ascii_texts:
        once = tok.decode(tok.encode(text))
        assert tok.decode(tok.encode(once)) == once
    # Without byte fallback, characters outside the vocabulary are lost.
    assert " ⁇ " in tok.decode(tok.encode("emoji 😀"))


def test_llama_style_tokenizer_json(tmp_path):
    tok = TextTokenizer.from_pretrained(make_llama_style_json(tmp_path / "hf"))
    assert tok.backend == "tokenizers" and tok.unk_id == 0
    check_appended_specials(tok, {"<bos>": 1, "<eos>": 2})
    check_round_trip_and_reload(tok, tmp_path, ORDINARY_TEXT + random_unicode(random.Random(4), 100))


def test_gpt2_style_tokenizer_json_shared_bos_eos(tmp_path):
    tok = TextTokenizer.from_pretrained(make_gpt2_style_json(tmp_path / "hf"))
    check_appended_specials(tok, {"<eos>": 0})  # bos would be the same token: it gets a new id
    assert (tok.pad_id, tok.bos_id) == (tok.base_vocab_size, tok.base_vocab_size + 1)
    assert tok.unk_id is None
    check_round_trip_and_reload(tok, tmp_path, ORDINARY_TEXT + random_unicode(random.Random(5), 100))


def test_tokenizer_json_preferred_when_both_exist(tmp_path):
    folder = make_sentencepiece(tmp_path / "both")
    make_gpt2_style_json(folder)
    assert TextTokenizer.from_pretrained(folder).backend == "tokenizers"


def test_bad_pretrained_folders(tmp_path):
    with pytest.raises(UserError, match="tokenizer.json.*tokenizer.model"):
        TextTokenizer.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="neither file.*config.json"):
        TextTokenizer.from_pretrained(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(UserError, match="cannot read"):
        TextTokenizer.from_pretrained(tmp_path / "bad")
