"""One sequence builder for every task, for training and for sampling (docs/sequence_format.md).

Every task becomes one flat token sequence with special tokens around images:

    text        <bos> <text> T… <eos>
    t2i         <bos> <t2i> C… <boi> I… <eoi> <eos>           (C = <uncond> when the condition is dropped)
    caption     <bos> <caption> <boi> I… <eoi> C… <eos>
    vqa         <bos> <vqa> <boi> I… <eoi> Q… <answer> A… <eos>
    edit        <bos> <edit> <boi> S… <eoi> E… <boi> I… <eoi> <eos>
    interleaved <bos> <text> T… <boi> I… <eoi> T… <boi> I… <eoi> … <eos>

`targets[t]` says whether token t is trained (predicted from position t-1): captioning trains the
caption, not the image it reads; text-to-image trains the image. A *prompt* for sampling is the
same sequence cut where the model must continue (after `<boi>` for an image, after `<eoi>` or
`<answer>` for text), so training and sampling cannot drift apart.

Images have a role: GEN (the model predicts it: VQ ids for UGen, continuous tokens for UniFluid)
or UND (the model reads it: VQ ids for UGen, encoder features for UniFluid). For the discrete
family the image's visual ids are written into `tokens`; for the continuous family the image
positions hold `<img_mask>` placeholders and the model embeds the content from `images`.
A GEN image may be given an `order` (a permutation of its token positions) for random-order
generation: span position j then holds image token order[j].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence as Seq

import numpy as np
import torch

from uniar.errors import UserError

TEXT, GEN, UND = 0, 1, 2
TASKS = ("text", "t2i", "caption", "vqa", "edit", "interleaved")


@dataclass
class ImageData:
    """One image in whichever forms the model family needs.

    codes: VQ indices (N,) for the discrete family; latents: normalised continuous tokens (N, D);
    pixels: float (3, S, S) in [-1, 1] for an understanding encoder. Any may be None.
    """

    codes: Any = None
    latents: Any = None
    pixels: Any = None


@dataclass
class ImageSpan:
    start: int  # index of the first image token in the sequence
    length: int
    image: int  # index into Sequence.images
    role: int  # GEN or UND
    order: Any = None  # permutation of range(length) for GEN images in random order; None = raster


@dataclass
class Sequence:
    task: str
    tokens: list[int] = field(default_factory=list)
    targets: list[bool] = field(default_factory=list)
    images: list[ImageData] = field(default_factory=list)
    spans: list[ImageSpan] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class Batch:
    """Padded tensors for a list of sequences (B rows, T columns)."""

    ids: torch.Tensor  # (B,T) long
    targets: torch.Tensor  # (B,T) bool: token t is trained (predicted from t-1)
    mask: torch.Tensor  # (B,T) bool: real token (False = padding)
    positions: torch.Tensor  # (B,T) long, 0 at each row's first real token
    role: torch.Tensor  # (B,T) long: TEXT, GEN or UND
    image_index: torch.Tensor  # (B,T) long: index into `images`, -1 on text
    image_pos: torch.Tensor  # (B,T) long: which token of its image sits here (after ordering), -1 on text
    next_image_pos: torch.Tensor  # (B,T) long: image position of the GEN token that follows, else -1
    tasks: list[str]
    images: list[ImageData]
    row_weight: torch.Tensor | None = None  # (B,) float: each row's weight in the loss (a stage's loss_weights); None = 1

    def to(self, device) -> "Batch":
        fields = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        return Batch(**fields)


class SequenceBuilder:
    """Builds task sequences from text and images.

    tokenizer: a uniar TextTokenizer; vocab: the unified Vocabulary; gen_len / und_len: tokens per
    image to generate / to read; discrete: write VQ visual ids into the sequence (UGen).
    """

    def __init__(self, tokenizer, vocab, gen_len: int, und_len: int, discrete: bool, max_len: int,
                 prompt_first: bool = False):
        self.tok = tokenizer
        # VQA questions and edit instructions before the image they are about (ModelConfig.prompt_first)
        self.prompt_first = prompt_first
        self.vocab = vocab
        self.gen_len = gen_len
        self.und_len = und_len
        self.discrete = discrete
        self.max_len = max_len
        s = vocab.sid
        self.bos, self.eos, self.boi, self.eoi = s("<bos>"), s("<eos>"), s("<boi>"), s("<eoi>")
        self.img_mask, self.uncond, self.answer = s("<img_mask>"), s("<uncond>"), s("<answer>")
        self.task_marker = {t: s(f"<{t}>") for t in ("text", "t2i", "caption", "vqa", "edit")}
        self.task_marker["interleaved"] = self.task_marker["text"]

    # ---- tasks -------------------------------------------------------------------------------

    def text(self, text: str | None = None, prompt: str | None = None) -> Sequence:
        """Plain text. Training: `text`, trained entirely. Sampling: `prompt`, continued by the model."""
        seq = self._start("text")
        if prompt is not None:
            self._text(seq, prompt, train=False)
            return self._check(seq)
        self._text(seq, text, train=True)
        return self._end(seq, train=True)

    def text_ids(self, ids: list[int]) -> Sequence:
        """Plain text given as token ids (training windows cut from a tokenized corpus)."""
        seq = self._start("text")
        for t in ids:
            self._push(seq, t, train=True)
        return self._check(seq)

    def t2i(self, caption: str | None, image: ImageData | None = None, order=None) -> Sequence:
        """Text-to-image; `caption=None` is the dropped condition (<uncond>); `image=None` makes a prompt."""
        seq = self._start("t2i")
        self._condition(seq, caption)
        if image is None:
            return self._open_image(seq)
        self._image(seq, image, GEN, train=True, order=order)
        return self._end(seq, train=True)

    def caption(self, image: ImageData, caption: str | None = None) -> Sequence:
        seq = self._start("caption")
        self._image(seq, image, UND, train=False)
        if caption is None:
            return self._check(seq)
        self._text(seq, caption, train=True)
        return self._end(seq, train=True)

    def vqa(self, image: ImageData, question: str, answer: str | None = None,
            follow_ups: Seq[tuple[str, str]] = ()) -> Sequence:
        """Visual question answering; `answer=None` makes a prompt.

        `follow_ups`: more (question, answer) pairs about the same image, each after the previous
        answer's <eos> (DataConfig.vqa_per_row). Only answers and their <eos> are trained, so the
        first turn is exactly the one-question row a prompt continues, and the model never learns to
        write a question after an answer.
        """
        if follow_ups and self.prompt_first:
            raise UserError("several questions per VQA row need the image first; "
                            "set data.vqa_per_row=1 or model.prompt_first=false")
        if follow_ups and answer is None:
            raise ValueError("follow-up questions need the first question's answer")
        seq = self._start("vqa")
        if self.prompt_first:
            self._text(seq, question, train=False)
            self._image(seq, image, UND, train=False)
        else:
            self._image(seq, image, UND, train=False)
            self._text(seq, question, train=False)
        self._push(seq, self.answer, train=False)
        if answer is None:
            return self._check(seq)
        self._text(seq, answer, train=True)
        for q, a in follow_ups:
            self._push(seq, self.eos, train=True)
            self._text(seq, q, train=False)
            self._push(seq, self.answer, train=False)
            self._text(seq, a, train=True)
        return self._end(seq, train=True)

    def edit(self, source: ImageData, instruction: str | None, target: ImageData | None = None,
             order=None) -> Sequence:
        """Editing; `instruction=None` is the dropped condition (the source image stays)."""
        seq = self._start("edit")
        if self.prompt_first:
            self._condition(seq, instruction)
            self._image(seq, source, UND, train=False)
        else:
            self._image(seq, source, UND, train=False)
            self._condition(seq, instruction)
        if target is None:
            return self._open_image(seq)
        self._image(seq, target, GEN, train=True, order=order)
        return self._end(seq, train=True)

    def interleaved(self, parts: Seq[str | ImageData], orders=None, prompt: bool = False) -> Sequence:
        """A document of text and images, trained throughout (the model learns to open images itself).

        With prompt=True nothing is trained and no <eos> is added: the model continues the document.
        """
        seq = self._start("interleaved")
        orders = list(orders) if orders is not None else [None] * len(parts)
        for part, order in zip(parts, orders):
            if isinstance(part, str):
                self._text(seq, part, train=not prompt)
            else:
                self._push(seq, self.boi, train=not prompt)
                self._image(seq, part, GEN, train=not prompt, order=order, open_token=False)
        if prompt:
            return self._check(seq)
        return self._end(seq, train=True)

    # ---- pieces ------------------------------------------------------------------------------

    def _start(self, task: str) -> Sequence:
        seq = Sequence(task=task)
        self._push(seq, self.bos, train=False)
        self._push(seq, self.task_marker[task], train=False)
        return seq

    def _push(self, seq: Sequence, token: int, train: bool) -> None:
        seq.tokens.append(int(token))
        seq.targets.append(bool(train))

    def _text(self, seq: Sequence, text: str, train: bool) -> None:
        if not isinstance(text, str):
            raise UserError(f"expected text, got {type(text).__name__}")
        for t in self.tok.encode(text):
            self._push(seq, t, train)

    def _condition(self, seq: Sequence, text: str | None) -> None:
        if text is None:
            self._push(seq, self.uncond, train=False)
        else:
            self._text(seq, text, train=False)

    def _image(self, seq: Sequence, image: ImageData, role: int, train: bool, order=None,
               open_token: bool = True) -> None:
        if open_token:
            self._push(seq, self.boi, train=False)
        n = self.gen_len if role == GEN else self.und_len
        if order is not None:
            order = [int(i) for i in order]
            if sorted(order) != list(range(n)):
                raise ValueError(f"order must be a permutation of range({n})")
        start = len(seq.tokens)
        if self.discrete:
            codes = image.codes
            if codes is None or len(codes) != n:
                raise UserError(f"image needs {n} VQ codes, got {None if codes is None else len(codes)}")
            codes = np.asarray(codes).reshape(-1)
            if order is not None:
                codes = codes[order]
            for c in codes.tolist():
                self._push(seq, self.vocab.visual_offset + int(c), train)
        else:
            for _ in range(n):
                self._push(seq, self.img_mask, train)
        seq.spans.append(ImageSpan(start=start, length=n, image=len(seq.images), role=role, order=order))
        seq.images.append(image)
        self._push(seq, self.eoi, train)

    def _open_image(self, seq: Sequence) -> Sequence:
        self._push(seq, self.boi, train=False)
        return self._check(seq)

    def _end(self, seq: Sequence, train: bool) -> Sequence:
        self._push(seq, self.eos, train)
        return self._check(seq)

    def _check(self, seq: Sequence) -> Sequence:
        if len(seq) > self.max_len:
            raise UserError(
                f"{seq.task} sequence is {len(seq)} tokens but the model's context is {self.max_len}; "
                "shorten the text, or raise model.max_seq_len"
            )
        return seq


def collate(seqs: list[Sequence], pad_id: int, side: str = "right", length: int | None = None) -> Batch:
    """Pad sequences into a Batch. Training pads on the right; sampling prompts on the left."""
    if side not in ("left", "right"):
        raise ValueError("side must be 'left' or 'right'")
    T = max(len(s) for s in seqs) if length is None else length
    B = len(seqs)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    targets = torch.zeros(B, T, dtype=torch.bool)
    mask = torch.zeros(B, T, dtype=torch.bool)
    role = torch.zeros(B, T, dtype=torch.long)
    image_index = torch.full((B, T), -1, dtype=torch.long)
    image_pos = torch.full((B, T), -1, dtype=torch.long)
    next_image_pos = torch.full((B, T), -1, dtype=torch.long)
    images: list[ImageData] = []
    for b, s in enumerate(seqs):
        n = len(s)
        if n > T:
            raise ValueError(f"sequence of {n} tokens does not fit length {T}")
        off = T - n if side == "left" else 0
        ids[b, off:off + n] = torch.tensor(s.tokens, dtype=torch.long)
        targets[b, off:off + n] = torch.tensor(s.targets, dtype=torch.bool)
        mask[b, off:off + n] = True
        for span in s.spans:
            a = off + span.start
            order = torch.arange(span.length) if span.order is None else torch.tensor(span.order)
            role[b, a:a + span.length] = span.role
            image_index[b, a:a + span.length] = len(images) + span.image
            image_pos[b, a:a + span.length] = order
            if span.role == GEN:
                # the token before each image token is told where the next one goes (random order)
                next_image_pos[b, a - 1:a - 1 + span.length] = order
        images.extend(s.images)
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    return Batch(ids=ids, targets=targets, mask=mask, positions=positions, role=role,
                 image_index=image_index, image_pos=image_pos, next_image_pos=next_image_pos,
                 tasks=[s.task for s in seqs], images=images)
