"""Edits: an instruction plus the source and target scenes (docs/shapesworld.md, section 2).

| type    | instruction                                   |
|---------|-----------------------------------------------|
| recolor | make the {color} {shape} {new color}          |
| move    | move the {color} {shape} to the {cell}        |
| remove  | remove the {color} {shape}                    |
| add     | add a {size} {color} {shape} at the {cell}    |

An object is named by color and shape only when exactly one object matches. Unchanged objects keep
their jitter; a moved object keeps its own jitter (relative to its new cell); an added object gets
fresh jitter. `make_edit` writes the instruction first and builds the target by applying it with
`apply_edit_instruction`, so the generator and the instruction parser cannot disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from uniar.data.shapesworld.generate import allowed_pairs, sample_jitter
from uniar.data.shapesworld.questions import matching, uniquely_named
from uniar.data.shapesworld.spec import (
    CELLS, COLOR_NAMES, DEFAULT_MAX_OBJECTS, NOVEL_PAIRS, SHAPES, SIZE_NAMES, Obj, Scene,
)

EDIT_TYPES: tuple[str, ...] = ("recolor", "move", "remove", "add")


class EditError(ValueError):
    """An instruction that cannot be read or cannot be applied to the scene."""


@dataclass(frozen=True)
class Edit:
    """One edit: its type (one of EDIT_TYPES), the instruction, and the scenes before and after."""

    type: str
    instruction: str
    source: Scene
    target: Scene


_WORD = r"(\w+)"
_CELL = r"(" + "|".join(CELLS) + r")"
_INSTRUCTIONS = (
    ("recolor", re.compile(rf"make the {_WORD} {_WORD} {_WORD}")),
    ("move", re.compile(rf"move the {_WORD} {_WORD} to the {_CELL}")),
    ("remove", re.compile(rf"remove the {_WORD} {_WORD}")),
    ("add", re.compile(rf"add a {_WORD} {_WORD} {_WORD} at the {_CELL}")),
)


def parse_instruction(instruction: str) -> tuple[str, tuple[str, ...]]:
    """(edit type, the instruction's words: names, colors, sizes, cells) or EditError."""
    for kind, pattern in _INSTRUCTIONS:
        m = pattern.fullmatch(instruction)
        if m:
            return kind, m.groups()
    raise EditError(
        f"{instruction!r} is not an edit instruction; expected one of: 'make the {{color}} {{shape}} "
        "{new color}', 'move the {color} {shape} to the {cell}', 'remove the {color} {shape}', "
        "'add a {size} {color} {shape} at the {cell}'"
    )


def _check_word(word: str, allowed: tuple[str, ...], what: str, instruction: str) -> None:
    if word not in allowed:
        raise EditError(f"{instruction!r}: unknown {what} {word!r}; expected one of {', '.join(allowed)}")


def _named_object(scene: Scene, color: str, shape: str, instruction: str) -> int:
    """Index of the one object called `{color} {shape}`, or EditError if none or several match."""
    _check_word(color, COLOR_NAMES, "color", instruction)
    _check_word(shape, SHAPES, "shape", instruction)
    found = matching(scene, color, shape)
    if len(found) != 1:
        raise EditError(f"{instruction!r}: {len(found)} objects are {color} {shape}s; an edit needs exactly one")
    return scene.objects.index(found[0])


def _empty_cell(scene: Scene, cell_name: str, instruction: str) -> int:
    cell = CELLS.index(cell_name)
    if scene.object_at(cell) is not None:
        raise EditError(f"{instruction!r}: the {cell_name} is not empty")
    return cell


def apply_edit_instruction(scene: Scene, instruction: str,
                           added_jitter: tuple[float, float] = (0.0, 0.0)) -> Scene:
    """The scene after the instruction; `added_jitter` is the jitter of an object an `add` creates.

    Raises EditError for an unreadable instruction, an ambiguous or missing object, or a move/add
    to an occupied cell.
    """
    kind, words = parse_instruction(instruction)
    objects, jitter = list(scene.objects), list(scene.jitter)
    if kind == "add":
        size, color, shape, cell_name = words
        _check_word(size, SIZE_NAMES, "size", instruction)
        _check_word(color, COLOR_NAMES, "color", instruction)
        _check_word(shape, SHAPES, "shape", instruction)
        cell = _empty_cell(scene, cell_name, instruction)
        objects.append(Obj(cell=cell, shape=shape, color=color, size=size))
        jitter.append(tuple(added_jitter))
        return Scene.from_objects(objects, jitter)
    k = _named_object(scene, words[0], words[1], instruction)
    old = objects[k]
    if kind == "recolor":
        _check_word(words[2], COLOR_NAMES, "color", instruction)
        objects[k] = Obj(cell=old.cell, shape=old.shape, color=words[2], size=old.size)
    elif kind == "move":
        cell = _empty_cell(scene, words[2], instruction)
        objects[k] = Obj(cell=cell, shape=old.shape, color=old.color, size=old.size)
    else:  # remove
        del objects[k], jitter[k]
    return Scene.from_objects(objects, jitter)


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def make_edit(scene: Scene, rng: np.random.Generator, split: str,
              max_objects: int = DEFAULT_MAX_OBJECTS) -> Edit:
    """A random edit of the scene, its type uniform over the types the scene allows.

    remove needs at least two objects (the target keeps one); add needs fewer than `max_objects`.
    In `train` the instruction and the target never contain a novel (color, shape) pair.
    """
    if split == "train" and any((o.color, o.shape) in NOVEL_PAIRS for o in scene.objects):
        raise ValueError("a train edit cannot start from a scene with a novel (color, shape) pair")
    pairs = allowed_pairs(split)
    named = uniquely_named(scene)
    empty = [c for c in range(len(CELLS)) if scene.object_at(c) is None]
    n = len(scene.objects)
    recolorable = [(o, c) for o in named for c in COLOR_NAMES if c != o.color and (c, o.shape) in pairs]
    feasible = {
        "recolor": bool(recolorable),
        "move": bool(named) and bool(empty),
        "remove": bool(named) and n >= 2,
        "add": bool(empty) and n < max_objects,
    }
    kinds = [k for k in EDIT_TYPES if feasible[k]]
    if not kinds:
        raise ValueError(f"no edit applies to a scene with {n} objects and max_objects={max_objects}")
    kind = _pick(rng, kinds)
    added_jitter = (0.0, 0.0)
    if kind == "recolor":
        obj, new_color = _pick(rng, recolorable)
        instruction = f"make the {obj.color} {obj.shape} {new_color}"
    elif kind == "move":
        obj = _pick(rng, named)
        instruction = f"move the {obj.color} {obj.shape} to the {CELLS[_pick(rng, empty)]}"
    elif kind == "remove":
        obj = _pick(rng, named)
        instruction = f"remove the {obj.color} {obj.shape}"
    else:
        color, shape = _pick(rng, pairs)
        size = _pick(rng, SIZE_NAMES)
        instruction = f"add a {size} {color} {shape} at the {CELLS[_pick(rng, empty)]}"
        added_jitter = sample_jitter(rng)
    target = apply_edit_instruction(scene, instruction, added_jitter)
    return Edit(kind, instruction, scene, target)
