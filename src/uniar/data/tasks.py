"""The ShapesWorld task mixture: turns (task, example index) into sequences, deterministically.

Each optimizer step draws its rows from `np.random.default_rng([seed, step])`, so the data of
any step is a pure function of the seed and the step: a resumed run sees exactly the batches an
uninterrupted one would, and data-parallel ranks take disjoint rows of the same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from uniar.data.image_pool import ImagePool
from uniar.data.sequence import ImageData, Sequence, SequenceBuilder
from uniar.data.shapesworld import get_example
from uniar.data.shapesworld.questions import AID_TYPES, aid_questions, exists_question, near_misses
from uniar.errors import UserError

IMAGE_TASKS = ("t2i", "caption", "vqa", "edit", "interleaved")


@dataclass
class DataConfig:
    dataset: str = "shapesworld"
    image_size: int = 64
    max_objects: int = 3
    pool_size: int = 20000  # training examples whose images are pre-encoded
    paraphrase_prob: float = 0.25  # t2i prompts: a paraphrase instead of the canonical caption
    cond_drop: float = 0.1  # t2i/edit: condition replaced by <uncond> (classifier-free guidance)
    text_window: int = 64  # tokens per text-only training sequence
    order: str = "raster"  # image token order for generated images: raster | random
    # questions about one image per VQA training row (1: one question, as sampling asks; up to 5,
    # one of each type the scene allows). The image is paid for once and read for every answer.
    vqa_per_row: int = 1
    # how often each question type is asked in VQA training rows, relative to the others; a type
    # not named is not asked (a scene has one question of each type it allows, 4 or 5). Empty:
    # uniform over the scene's questions. Evaluation always asks every question of every scene.
    vqa_type_weights: dict = field(default_factory=dict)
    # share of the `no` exists questions in training that ask about a near miss (an absent pair that
    # shares its color or its shape with an object in the scene) where the scene has one. 0 = as
    # ShapesWorld asks them (absent pairs uniform; about half are near misses), which evaluation
    # keeps. Near misses are the ones a model that checks color and shape separately gets wrong.
    exists_near_miss: float = 0.0
    # how often each edit type (recolor, move, remove, add) is drawn for edit rows, relative to the
    # others; a type not named is not drawn. Empty: as ShapesWorld draws them (uniform over the
    # types a scene allows). Evaluation always scores the edits as the split has them.
    edit_type_weights: dict = field(default_factory=dict)


class TaskSampler:
    """Builds training sequences for ShapesWorld tasks from a pre-encoded image pool."""

    def __init__(self, cfg: DataConfig, builder: SequenceBuilder, pool: ImagePool | None,
                 text_ids: np.ndarray | None, und_pixels: bool = False):
        self.cfg = cfg
        self.builder = builder
        self.pool = pool
        self.text_ids = text_ids  # the training text corpus, tokenized and concatenated
        # images to be understood also carry pixels (UniFluid's understanding encoders read them);
        # they are rendered when needed, which costs less than keeping them in the pool
        self.und_pixels = und_pixels

    def image(self, index: int, which: str = "source") -> ImageData:
        t = (self.pool.source if which == "source" else self.pool.target)[index]
        if t.is_floating_point():
            return ImageData(latents=t.float())
        return ImageData(codes=t.numpy())

    def und_image(self, index: int, scene) -> ImageData:
        """Example `index`'s image in the form an understanding (UND) image needs."""
        data = self.image(index)
        if self.und_pixels:
            from uniar.data.images import to_model
            from uniar.data.shapesworld.render import render

            data.pixels = to_model(render(scene, self.cfg.image_size)[None])[0]
        return data

    def order(self, rng: np.random.Generator):
        if self.cfg.order == "raster":
            return None
        return rng.permutation(self.builder.gen_len)

    def make(self, task: str, rng: np.random.Generator, vqa_type_weights: dict | None = None,
             edit_type_weights: dict | None = None) -> Sequence:
        if task == "text":
            if self.text_ids is None or len(self.text_ids) <= self.cfg.text_window:
                raise UserError("the text task needs a tokenized text corpus")
            start = int(rng.integers(0, len(self.text_ids) - self.cfg.text_window))
            return self.builder.text_ids(self.text_ids[start:start + self.cfg.text_window].tolist())
        if task not in IMAGE_TASKS:
            raise UserError(f"unknown task {task!r}; tasks are text, {', '.join(IMAGE_TASKS)}")
        if self.pool is None:
            raise UserError(f"task {task!r} needs an image pool")
        if task == "edit":
            i, ex = self.edit_example(rng, edit_type_weights)
        else:
            i = int(rng.integers(0, len(self.pool)))
            ex = get_example(self.pool.split, i, self.cfg.max_objects)
        if task == "t2i":
            prompt = ex.caption
            if ex.paraphrases and rng.random() < self.cfg.paraphrase_prob:
                prompt = ex.paraphrases[int(rng.integers(0, len(ex.paraphrases)))]
            if rng.random() < self.cfg.cond_drop:
                prompt = None
            return self.builder.t2i(prompt, self.image(i), order=self.order(rng))
        if task == "caption":
            return self.builder.caption(self.und_image(i, ex.scene), ex.caption)
        if task == "vqa":
            picked = self.pick_questions(ex.questions, rng, ex.scene, vqa_type_weights)
            return self.builder.vqa(self.und_image(i, ex.scene), picked[0].question, picked[0].answer,
                                    follow_ups=[(q.question, q.answer) for q in picked[1:]])
        if task == "edit":
            instruction = None if rng.random() < self.cfg.cond_drop else ex.edit.instruction
            return self.builder.edit(self.und_image(i, ex.scene), instruction, self.image(i, "target"),
                                     order=self.order(rng))
        # interleaved: a caption, its image, an edit instruction, the edited image
        parts = [ex.caption, self.image(i), ex.edit.instruction, self.image(i, "target")]
        return self.builder.interleaved(parts, orders=[None, self.order(rng), None, self.order(rng)])

    def edit_example(self, rng: np.random.Generator, type_weights: dict | None = None):
        """(index, example) of one edit row: uniform over the pool, or with edit type weights
        (`type_weights`, or data.edit_type_weights) by rejection: an example is kept with
        probability weight(its type) / the largest weight."""
        weights = self.cfg.edit_type_weights if type_weights is None else type_weights
        top = max(weights.values(), default=0.0)
        while True:
            i = int(rng.integers(0, len(self.pool)))
            ex = get_example(self.pool.split, i, self.cfg.max_objects)
            if top <= 0 or rng.random() * top < float(weights.get(ex.edit.type, 0.0)):
                return i, ex

    def pick_questions(self, questions: list, rng: np.random.Generator, scene=None,
                       type_weights: dict | None = None) -> list:
        """The questions of one VQA training row: data.vqa_per_row of them, drawn by type weight
        (`type_weights`, or data.vqa_type_weights); with data.exists_near_miss, a `no` exists
        question may become a near miss of `scene`. Weights that name a training-aid type
        (questions.AID_TYPES) add the scene's aid questions to those it can draw from."""
        weights = self.cfg.vqa_type_weights if type_weights is None else type_weights
        if scene is not None and any(weights.get(t, 0) > 0 for t in AID_TYPES):
            questions = list(questions) + aid_questions(scene, rng)
        picked = self._pick(questions, rng, weights)
        if scene is None or self.cfg.exists_near_miss <= 0:
            return picked
        return [self._near_miss(q, scene, rng) if q.type == "exists" and q.answer == "no" else q for q in picked]

    def _near_miss(self, question, scene, rng: np.random.Generator):
        if rng.random() >= self.cfg.exists_near_miss:
            return question
        near = near_misses(scene, self.pool.split)
        if not near:
            return question
        color, shape = near[int(rng.integers(len(near)))]
        return exists_question(scene, color, shape)

    def _pick(self, questions: list, rng: np.random.Generator, type_weights: dict) -> list:
        k = min(self.cfg.vqa_per_row, len(questions))
        if not type_weights:
            if k == 1:
                return [questions[int(rng.integers(0, len(questions)))]]
            return [questions[j] for j in rng.permutation(len(questions))[:k]]  # random subset, random order
        w = np.array([float(type_weights.get(q.type, 0.0)) for q in questions])
        if w.sum() <= 0:  # none of this scene's types is weighted: fall back to uniform
            w = np.ones(len(questions))
        k = min(k, int((w > 0).sum()))
        return [questions[j] for j in rng.choice(len(questions), size=k, replace=False, p=w / w.sum())]

    def batch(self, weights: dict[str, float], n: int, seed: int, step: int,
              vqa_type_weights: dict | None = None, edit_type_weights: dict | None = None) -> list[Sequence]:
        """The `n` rows of step `step`, tasks drawn by `weights`; `vqa_type_weights` and
        `edit_type_weights` replace data.vqa_type_weights and data.edit_type_weights for these rows
        (a stage's own)."""
        tasks = [t for t, w in weights.items() if w > 0]
        if not tasks:
            raise UserError("a training stage needs at least one task with a positive weight")
        p = np.array([weights[t] for t in tasks], dtype=np.float64)
        p /= p.sum()
        rng = np.random.default_rng([seed, step])
        choice = rng.choice(len(tasks), size=n, p=p)
        return [self.make(tasks[c], rng, vqa_type_weights, edit_type_weights) for c in choice]


def example_image(pool_or_tokenizer, image_uint8: np.ndarray) -> ImageData:
    """Encode one rendered image with an image tokenizer into the form the builder takes."""
    from uniar.data.images import to_model

    with torch.no_grad():
        t = pool_or_tokenizer.encode(to_model(image_uint8[None]))[0]
    return ImageData(latents=t.float()) if t.is_floating_point() else ImageData(codes=t.numpy())
