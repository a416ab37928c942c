"""The text tokenizer: one interface over a built-in byte-level BPE or a pretrained vocabulary.

    tok = train_bpe(vocab_size=4096)                    # built-in, trained offline in ~0.3 s
    tok = TextTokenizer.from_pretrained("tinyllama/")   # tokenizer.json or SentencePiece tokenizer.model
    ids = tok.encode("a red circle", add_bos=True)
    tok.decode(ids) == "a red circle"

Special tokens. Every tokenizer carries all of SPECIAL_TOKENS, each a single id. They are never
produced by encoding ordinary text: `encode("<boi>")` splits the five characters like any other
text, so a caption or a user prompt cannot inject an image boundary or end a sequence. Special ids
enter a sequence only through `add_bos`/`add_eos` and `token_id(name)`, and `decode` renders them by
their uniar names (or drops them: `skip_special=True`, the default).

Where special ids live:
- built-in BPE: ids 0..len(SPECIAL_TOKENS)-1, in SPECIAL_TOKENS order; nothing is appended.
- pretrained: a uniar special reuses the vocabulary's own token for the same role when it has one
  that is special there (an added special token in tokenizer.json, a control piece in SentencePiece):
  `<bos>` <- `<bos>`/`<s>`, `<eos>` <- `<eos>`/`</s>`, `<pad>` <- `<pad>` (names in
  tokenizer_config.json / special_tokens_map.json come first). All others are appended after the
  vocabulary, in SPECIAL_TOKENS order; `new_special_ids` lists them, since a pretrained model needs
  new embedding rows for them. `<unk>` is never used as padding: it is a real encoder output.
  Reused ids are kept distinct: a vocabulary whose bos and eos are one token (GPT-2) maps it to
  `<eos>` and gets a new `<bos>`.

Round trips. Built-in BPE is byte-level: `decode(encode(s)) == s` for every string of valid Unicode
(emoji, CJK, control characters, leading/trailing spaces, ""). Pretrained: exact when the vocabulary
has byte fallback and no lossy normalisation, as in Llama-2/TinyLlama and Gemma. A SentencePiece
model trained with NFKC normalisation and `remove_extra_whitespaces` (SentencePiece's defaults)
decodes to its normalised text (runs of spaces collapse, full-width letters fold) and, without byte
fallback, unknown characters decode as " ⁇ "; then only `decode(encode(t)) == t` for an already
normalised `t` holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from uniar.errors import CheckpointError, UserError
from uniar.utils.io import read_json, write_bytes, write_json, write_text

N_RESERVED = 8

SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<bos>", "<eos>",
    "<boi>",        # begin image
    "<eoi>",        # end image
    "<img_mask>",   # stands in for a visual id that is not active yet (progressive vocabulary)
    "<t2i>", "<caption>", "<vqa>", "<edit>", "<text>",  # task markers
    "<uncond>",     # the dropped condition for classifier-free guidance
    "<answer>",
    *(f"<reserved_{i}>" for i in range(N_RESERVED)),
)

# Other names a pretrained vocabulary may give the same role.
_ALIASES: dict[str, tuple[str, ...]] = {"<bos>": ("<bos>", "<s>"), "<eos>": ("<eos>", "</s>"), "<pad>": ("<pad>",)}
# The order in which reusable ids are claimed, so that eos wins a token that is both bos and eos.
_CLAIM_ORDER = ("<eos>", "<bos>", "<pad>") + tuple(t for t in SPECIAL_TOKENS if t not in _ALIASES)

META_FILE = "uniar_tokenizer.json"
HF_FILE = "tokenizer.json"
SP_FILE = "tokenizer.model"
FORMAT_VERSION = 1


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"expected text as str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"text is not valid Unicode: {err.reason} at position {err.start} "
            f"({text[err.start:err.end]!r}); lone surrogates cannot be tokenized"
        ) from None


# ----------------------------------------------------------------------------------------------
# Backends: the pretrained vocabulary without uniar's specials. Each knows its own size, encodes
# ordinary text, decodes a run of its own ids, names its special tokens, and saves itself.


class _HFBackend:
    """A `tokenizers.Tokenizer` (tokenizer.json)."""

    kind = "tokenizers"
    filename = HF_FILE

    def __init__(self, tok) -> None:
        tok.encode_special_tokens = True  # special tokens in text are split like ordinary text
        self.tok = tok
        self._special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
        self.size = max(tok.get_vocab(with_added_tokens=True).values()) + 1

    @classmethod
    def from_file(cls, path: Path) -> "_HFBackend":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    # Pickle (DataLoader workers) through the JSON form: encode_special_tokens is not part of it.
    def __getstate__(self) -> str:
        return self.tok.to_str()

    def __setstate__(self, state: str) -> None:
        from tokenizers import Tokenizer

        self.__init__(Tokenizer.from_str(state))

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip_special: bool) -> str:
        return self.tok.decode(ids, skip_special_tokens=skip_special)

    def special_id(self, name: str) -> int | None:
        i = self.tok.token_to_id(name)
        return i if i in self._special else None

    def role_names(self) -> dict[str, str]:
        return {}

    def unk_id(self) -> int | None:
        unk = getattr(self.tok.model, "unk_token", None) or "<unk>"
        return self.tok.token_to_id(unk)

    def save(self, folder: Path) -> None:
        write_text(folder / self.filename, self.tok.to_str())


class _SentencePieceBackend:
    """A SentencePiece model (tokenizer.model), as Llama-2, TinyLlama and Gemma ship."""

    kind = "sentencepiece"
    filename = SP_FILE

    def __init__(self, proto: bytes) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_proto=proto)
        self.size = self.sp.get_piece_size()

    @classmethod
    def from_file(cls, path: Path) -> "_SentencePieceBackend":
        return cls(path.read_bytes())

    def __getstate__(self) -> bytes:
        return self.sp.serialized_model_proto()

    def __setstate__(self, state: bytes) -> None:
        self.__init__(state)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, out_type=int)

    def decode(self, ids: list[int], skip_special: bool) -> str:
        return self.sp.decode(ids)  # control pieces decode to "" either way

    def special_id(self, name: str) -> int | None:
        i = self.sp.piece_to_id(name)
        return i if self.sp.id_to_piece(i) == name and self.sp.is_control(i) else None

    def role_names(self) -> dict[str, str]:
        roles = {"<bos>": self.sp.bos_id(), "<eos>": self.sp.eos_id(), "<pad>": self.sp.pad_id()}
        return {name: self.sp.id_to_piece(i) for name, i in roles.items() if i >= 0}

    def unk_id(self) -> int | None:
        i = self.sp.unk_id()
        return i if i >= 0 else None

    def save(self, folder: Path) -> None:
        write_bytes(folder / self.filename, self.sp.serialized_model_proto())


_BACKENDS = {b.kind: b for b in (_HFBackend, _SentencePieceBackend)}


# ----------------------------------------------------------------------------------------------


class TextTokenizer:
    """Text <-> ids with uniar's special tokens. Build with `train_bpe`, `from_pretrained` or `load`."""

    def __init__(self, backend, special_ids: dict[str, int]) -> None:
        missing = [t for t in SPECIAL_TOKENS if t not in special_ids]
        if missing:
            raise ValueError(f"special token map lacks {missing}")
        self._backend = backend
        self.special_ids: dict[str, int] = {t: int(special_ids[t]) for t in SPECIAL_TOKENS}
        self._special_names = {i: t for t, i in self.special_ids.items()}
        if len(self._special_names) != len(SPECIAL_TOKENS):
            raise ValueError(f"special tokens must have distinct ids, got {self.special_ids}")
        self.base_vocab_size: int = backend.size
        self.new_special_ids: tuple[int, ...] = tuple(sorted(i for i in self._special_names if i >= backend.size))
        self.vocab_size: int = backend.size + len(self.new_special_ids)
        if self.new_special_ids and self.new_special_ids != tuple(range(backend.size, self.vocab_size)):
            raise ValueError(f"appended special ids must follow the vocabulary without gaps: {self.new_special_ids}")
        self.unk_id: int | None = backend.unk_id()

    # -- special tokens ----------------------------------------------------------------------

    @property
    def pad_id(self) -> int:
        return self.special_ids["<pad>"]

    @property
    def bos_id(self) -> int:
        return self.special_ids["<bos>"]

    @property
    def eos_id(self) -> int:
        return self.special_ids["<eos>"]

    def token_id(self, name: str) -> int:
        """The id of special token `name`, e.g. token_id("<boi>")."""
        try:
            return self.special_ids[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a special token; known: {', '.join(SPECIAL_TOKENS)}") from None

    def is_special(self, token_id: int) -> bool:
        return int(token_id) in self._special_names

    @property
    def backend(self) -> str:
        """"tokenizers" (a tokenizer.json) or "sentencepiece" (a tokenizer.model)."""
        return self._backend.kind

    # -- encode / decode ---------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids of `text`; special tokens are never produced from the text itself."""
        _check_text(text)
        return self._wrap(self._backend.encode(text), add_bos, add_eos)

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False) -> list[list[int]]:
        texts = list(texts)
        for t in texts:
            _check_text(t)
        return [self._wrap(ids, add_bos, add_eos) for ids in self._backend.encode_batch(texts)]

    def _wrap(self, ids: list[int], add_bos: bool, add_eos: bool) -> list[int]:
        return [self.bos_id] * add_bos + list(ids) + [self.eos_id] * add_eos

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of `ids` (a list, numpy array or 1-D tensor). Special ids are dropped, or shown
        by their uniar names with skip_special=False. Ids outside the vocabulary raise ValueError."""
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(
                f"token id {bad[0]} is outside the text vocabulary 0..{self.vocab_size - 1}; "
                "strip visual ids before decoding text"
            )
        # Decode runs of ordinary ids with the backend; specials are uniar's to render.
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            name = self._special_names.get(i)
            if name is None:
                run.append(i)
                continue
            if run:
                parts.append(self._backend.decode(run, skip_special))
                run = []
            if not skip_special:
                parts.append(name)
        if run:
            parts.append(self._backend.decode(run, skip_special))
        return "".join(parts)

    def decode_batch(self, batch: Iterable[Iterable[int]], skip_special: bool = True) -> list[str]:
        return [self.decode(ids, skip_special) for ids in batch]

    # -- files -------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write the vocabulary file (tokenizer.json or tokenizer.model) and uniar_tokenizer.json.

        Each file is written atomically; the uniar file comes last, so its presence means the
        folder is complete."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._backend.save(folder)
        write_json(folder / META_FILE, {
            "format_version": FORMAT_VERSION,
            "backend": self._backend.kind,
            "file": self._backend.filename,
            "base_vocab_size": self.base_vocab_size,
            "vocab_size": self.vocab_size,
            "special_ids": self.special_ids,
            "new_special_ids": list(self.new_special_ids),
        })

    @classmethod
    def load(cls, folder: str | Path) -> "TextTokenizer":
        """Load a folder written by `save` (ids identical to the saved tokenizer)."""
        folder = Path(folder)
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise CheckpointError(
                f"no {META_FILE} in {folder}: not a saved uniar tokenizer. "
                "For a pretrained tokenizer folder use TextTokenizer.from_pretrained."
            )
        try:
            meta = read_json(meta_path)
            backend_cls = _BACKENDS[meta["backend"]]
            special_ids = meta["special_ids"]
            base_size = int(meta["base_vocab_size"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{meta_path} is corrupt ({err!r}); re-save the tokenizer") from err
        backend = _read_backend(backend_cls, folder / backend_cls.filename, CheckpointError)
        if backend.size != base_size:
            raise CheckpointError(
                f"{folder / backend_cls.filename} has {backend.size} tokens but {META_FILE} says "
                f"{base_size}: the two files do not belong together; re-save the tokenizer"
            )
        missing = [t for t in SPECIAL_TOKENS if t not in special_ids]
        if missing:
            raise CheckpointError(f"{meta_path} lacks special tokens {missing}; re-save the tokenizer")
        return cls(backend, special_ids)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "TextTokenizer":
        """Load a local pretrained tokenizer: `tokenizer.json` (HF fast tokenizer, preferred when
        both exist) or SentencePiece `tokenizer.model`. Missing uniar specials are appended.
        A folder written by `save` (it has uniar_tokenizer.json) is read with `load`."""
        folder = Path(folder)
        expected = f"a {HF_FILE} (Hugging Face fast tokenizer) or a {SP_FILE} (SentencePiece)"
        if not folder.is_dir():
            raise UserError(f"tokenizer folder not found: {folder}. Expected a folder with {expected}.")
        if (folder / META_FILE).is_file():
            return cls.load(folder)
        for backend_cls in (_HFBackend, _SentencePieceBackend):
            path = folder / backend_cls.filename
            if path.is_file():
                backend = _read_backend(backend_cls, path, UserError)
                return cls(backend, _assign_special_ids(backend, _configured_role_names(folder)))
        present = sorted(p.name for p in folder.iterdir())[:20]
        raise UserError(f"{folder} holds neither file: expected {expected}; found {present or 'nothing'}.")

    def __repr__(self) -> str:
        return (f"TextTokenizer(backend={self.backend!r}, vocab_size={self.vocab_size}, "
                f"new_special_ids={len(self.new_special_ids)})")


def _read_backend(backend_cls, path: Path, error: type[UserError]):
    if not path.is_file():
        raise error(f"{path} is missing; the tokenizer folder is incomplete")
    try:
        return backend_cls.from_file(path)
    except Exception as err:  # the libraries raise assorted types for a bad file
        raise error(f"cannot read {path}: {err}. The file is corrupt or not a {backend_cls.kind} file.") from err


def _configured_role_names(folder: Path) -> dict[str, str]:
    """bos/eos/pad token names from a transformers tokenizer_config.json or special_tokens_map.json."""
    names: dict[str, str] = {}
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / fname
        if not path.is_file():
            continue
        try:
            cfg = read_json(path)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path} is not valid JSON ({err}); fix or remove it") from err
        for role in ("bos", "eos", "pad"):
            value = cfg.get(f"{role}_token") if isinstance(cfg, dict) else None
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                names[f"<{role}>"] = value
    return names


def _assign_special_ids(backend, configured: dict[str, str]) -> dict[str, int]:
    """Reuse the vocabulary's own special tokens where they fit; append the rest in SPECIAL_TOKENS order."""
    role_names = {**backend.role_names(), **configured}
    ids: dict[str, int] = {}
    for name in _CLAIM_ORDER:
        candidates = ([role_names[name]] if name in role_names else []) + list(_ALIASES.get(name, (name,)))
        for candidate in candidates:
            i = backend.special_id(candidate)
            if i is not None and i not in ids.values():
                ids[name] = i
                break
    next_id = backend.size
    for name in SPECIAL_TOKENS:
        if name not in ids:
            ids[name] = next_id
            next_id += 1
    return ids


def train_bpe(
    vocab_size: int = 4096,
    seed: int = 0,
    *,
    min_frequency: int = 2,
    documents: Sequence[str] | None = None,
    shapesworld_examples: int | None = None,
) -> TextTokenizer:
    """Train the built-in byte-level BPE tokenizer. Deterministic; about 0.3 s.

    By default it trains on `corpus_documents("train", seed=seed)` (pydoc topics minus the
    held-out slice, plus ShapesWorld `train` text); `seed` only chooses which ShapesWorld examples
    join (BPE training itself has no randomness). Pass `documents` to train on your own text.
    The vocabulary may come out smaller than `vocab_size` when the text has too few repeated
    pairs (pydoc text saturates near 6.7k at min_frequency=2); `vocab_size` on the result is the truth.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    smallest = 256 + len(SPECIAL_TOKENS)
    if vocab_size < smallest:
        raise UserError(f"vocab_size={vocab_size} is too small: byte-level BPE needs at least {smallest} "
                        f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
    if documents is None:
        from uniar.data.corpus import DEFAULT_SHAPESWORLD_EXAMPLES, corpus_documents

        n = DEFAULT_SHAPESWORLD_EXAMPLES if shapesworld_examples is None else shapesworld_examples
        documents = corpus_documents("train", shapesworld_examples=n, seed=seed)
    documents = list(documents)
    for d in documents:
        _check_text(d)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),  # ids 0..len-1
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, so any text encodes
        show_progress=False,
    )
    tok.train_from_iterator(documents, trainer)
    backend = _HFBackend(tok)
    return TextTokenizer(backend, _assign_special_ids(backend, {}))
