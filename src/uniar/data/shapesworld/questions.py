"""Visual questions with one-word answers (docs/shapesworld.md, section 2).

| type   | question                                | answer                   |
|--------|-----------------------------------------|--------------------------|
| color  | what color is the {shape} at the {cell}? | a color                  |
| shape  | what shape is at the {cell}?             | a shape, or `nothing`    |
| count  | how many objects are there?              | `one` ... `nine`         |
| exists | is there a {color} {shape}?              | `yes` / `no`             |
| where  | where is the {color} {shape}?            | a cell (asked only when exactly one object matches) |

In `train` no question mentions a novel (color, shape) pair, not even one answered `no`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from uniar.data.shapesworld.generate import allowed_pairs
from uniar.data.shapesworld.spec import CELLS, COLOR_NAMES, NOVEL_PAIRS, NUMBER_WORDS, SHAPES, Scene

QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "count", "exists", "where")

# Training aids, never asked in evaluation: `exists` and `where` by ONE attribute ("is there a red
# object?", "where is the circle?"). ShapesWorld's own lookups name an object by color AND shape,
# which small models learn slowly (docs/sequence_format.md); these are a step towards them.
AID_TYPES: tuple[str, ...] = ("exists_color", "exists_shape", "where_color", "where_shape")

# Every possible answer, for building vocabularies and checking outputs.
ANSWERS: tuple[str, ...] = COLOR_NAMES + SHAPES + ("nothing",) + NUMBER_WORDS + ("yes", "no") + CELLS


@dataclass(frozen=True)
class Question:
    """One visual question: its type (one of QUESTION_TYPES), the text and the one-word answer."""

    type: str
    question: str
    answer: str


def matching(scene: Scene, color: str, shape: str) -> list:
    """The objects of the scene with this color and shape."""
    return [o for o in scene.objects if o.color == color and o.shape == shape]


def uniquely_named(scene: Scene) -> list:
    """Objects that are the only one of their (color, shape) in the scene, so a name picks them out."""
    return [o for o in scene.objects if len(matching(scene, o.color, o.shape)) == 1]


def near_misses(scene: Scene, split: str) -> list[tuple[str, str]]:
    """Absent (color, shape) pairs of `split` that share their color or their shape with an object
    of the scene: the `no` exists questions a model checking color and shape apart gets wrong."""
    present = {(o.color, o.shape) for o in scene.objects}
    return [p for p in allowed_pairs(split) if p not in present
            and any(p[0] == c or p[1] == s for c, s in present)]


def color_question(obj) -> Question:
    return Question("color", f"what color is the {obj.shape} at the {obj.cell_name}?", obj.color)


def shape_question(scene: Scene, cell: int) -> Question:
    obj = scene.object_at(cell)
    return Question("shape", f"what shape is at the {CELLS[cell]}?", obj.shape if obj else "nothing")


def count_question(scene: Scene) -> Question:
    n = len(scene.objects)
    if not 1 <= n <= len(NUMBER_WORDS):
        raise ValueError(f"a count question needs 1..{len(NUMBER_WORDS)} objects, the scene has {n}")
    return Question("count", "how many objects are there?", NUMBER_WORDS[n - 1])


def exists_question(scene: Scene, color: str, shape: str) -> Question:
    answer = "yes" if matching(scene, color, shape) else "no"
    return Question("exists", f"is there a {color} {shape}?", answer)


def where_question(scene: Scene, obj) -> Question:
    if len(matching(scene, obj.color, obj.shape)) != 1:
        raise ValueError(f"'where is the {obj.color} {obj.shape}?' is ambiguous: it needs exactly one match")
    return Question("where", f"where is the {obj.color} {obj.shape}?", obj.cell_name)


def balanced_pick(present: list, absent: list, rng: np.random.Generator) -> tuple:
    """(an item to ask `exists` about, whether it is present): present half the time when both
    lists have items, uniform within the list."""
    ask_yes = bool(present) and (not absent or rng.random() < 0.5)
    options = present if ask_yes else absent
    return options[int(rng.integers(len(options)))], ask_yes


def questions_for(scene: Scene, rng: np.random.Generator, split: str) -> list[Question]:
    """One question of each type the scene allows, with balanced answers.

    The shape question asks about an empty cell half the time (`nothing`), the exists question is
    `yes` half the time; the objects and cells asked about are uniform. The pairs asked about in
    `train` come from the non-novel pairs only.
    """
    if split == "train" and any((o.color, o.shape) in NOVEL_PAIRS for o in scene.objects):
        raise ValueError("train questions cannot be asked about a scene with a novel (color, shape) pair")
    questions = []
    objects = list(scene.objects)
    if objects:
        questions.append(color_question(objects[int(rng.integers(len(objects)))]))
    empty = [c for c in range(len(CELLS)) if scene.object_at(c) is None]
    occupied = [o.cell for o in objects]
    pool = empty if (not occupied or (empty and rng.random() < 0.5)) else occupied
    questions.append(shape_question(scene, int(pool[int(rng.integers(len(pool)))])))
    if objects:
        questions.append(count_question(scene))
    pairs = allowed_pairs(split)
    present = sorted({(o.color, o.shape) for o in objects})
    absent = [p for p in pairs if p not in present]
    color, shape = balanced_pick(present, absent, rng)[0]
    questions.append(exists_question(scene, color, shape))
    unique = uniquely_named(scene)
    if unique:
        questions.append(where_question(scene, unique[int(rng.integers(len(unique)))]))
    return questions


def _attribute_noun(attribute: str, value: str) -> str:
    return f"{value} object" if attribute == "color" else value


def aid_questions(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """The training-aid questions the scene allows (AID_TYPES), one of each, with balanced answers:
    `exists_*` is `yes` half the time, `where_*` asks about an object whose color (shape) is the only
    one of its kind in the scene. They mention one attribute, never a (color, shape) pair, so they
    are the same in every split."""
    questions = []
    for attribute, values in (("color", COLOR_NAMES), ("shape", SHAPES)):
        present = sorted({getattr(o, attribute) for o in scene.objects})
        absent = [v for v in values if v not in present]
        value, ask_yes = balanced_pick(present, absent, rng)
        questions.append(Question(f"exists_{attribute}", f"is there a {_attribute_noun(attribute, value)}?",
                                  "yes" if ask_yes else "no"))
        values_seen = [getattr(o, attribute) for o in scene.objects]
        unique = [o for o in scene.objects if values_seen.count(getattr(o, attribute)) == 1]
        if unique:
            obj = unique[int(rng.integers(len(unique)))]
            noun = _attribute_noun(attribute, getattr(obj, attribute))
            questions.append(Question(f"where_{attribute}", f"where is the {noun}?", obj.cell_name))
    return questions


# ---------------------------------------------------------------- answering from a scene

_PATTERNS = (
    ("color", re.compile(r"what color is the (\w+) at the (.+)\?")),
    ("shape", re.compile(r"what shape is at the (.+)\?")),
    ("count", re.compile(r"how many objects are there\?")),
    ("exists", re.compile(r"is there a (\w+) (\w+)\?")),
    ("where", re.compile(r"where is the (\w+) (\w+)\?")),
)


def answer(scene: Scene, question: str) -> str:
    """The answer the scene gives to a question text (for scoring answers on parsed images).

    Raises ValueError for a question that is not one of the five forms, or that the scene leaves
    unanswerable (a color question about a shape not at that cell, an ambiguous `where`).
    """
    for kind, pattern in _PATTERNS:
        m = pattern.fullmatch(question)
        if not m:
            continue
        if kind == "color":
            shape, cell = m.groups()
            obj = scene.object_at(CELLS.index(cell)) if cell in CELLS else None
            if obj is None or obj.shape != shape:
                raise ValueError(f"{question!r}: there is no {shape} at the {cell}")
            return obj.color
        if kind == "shape":
            if m.group(1) not in CELLS:
                raise ValueError(f"{question!r}: unknown cell {m.group(1)!r}")
            return shape_question(scene, CELLS.index(m.group(1))).answer
        if kind == "count":
            return count_question(scene).answer
        color, shape = m.groups()
        if color not in COLOR_NAMES or shape not in SHAPES:
            raise ValueError(f"{question!r}: unknown color or shape")
        if kind == "exists":
            return exists_question(scene, color, shape).answer
        found = matching(scene, color, shape)
        if len(found) != 1:
            raise ValueError(f"{question!r}: {len(found)} objects match; a where question needs exactly one")
        return found[0].cell_name
    raise ValueError(f"{question!r} is not one of the ShapesWorld question forms")
