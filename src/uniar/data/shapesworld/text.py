"""Captions: the canonical caption of a scene, training paraphrases, and the canonical parser.

Canonical form (docs/shapesworld.md, section 2): the objects in cell order, each as
`a {size} {color} {shape} at the {cell}`, joined by ", " with " and " before the last, no period.
Every evaluation prompt and reference caption uses it; paraphrases are for training only.
"""

from __future__ import annotations

import re

import numpy as np

from uniar.data.shapesworld.spec import CELLS, COLOR_NAMES, SHAPES, SIZE_NAMES, Obj, Scene


class NotCanonicalCaption(ValueError):
    """A caption that does not follow the canonical form; the message says which part and why."""


def object_phrase(obj: Obj) -> str:
    """`a {size} {color} {shape} at the {cell}`."""
    return f"a {obj.size} {obj.color} {obj.shape} at the {obj.cell_name}"


def join_list(items: list[str], sep: str = ", ", last: str = " and ") -> str:
    """`x`, `x and y`, `x, y and z`."""
    if len(items) <= 1:
        return "".join(items)
    return sep.join(items[:-1]) + last + items[-1]


def caption(scene: Scene) -> str:
    """The canonical caption of a scene ("" for a scene with no objects)."""
    return join_list([object_phrase(o) for o in scene.objects])


# ---------------------------------------------------------------- paraphrases (training only)

_OBJECT_FORMS = (
    "a {size} {color} {shape} in the {cell}",
    "a {color} {shape} at the {cell}, {size}",
    "a {size} {shape} in {color} at the {cell}",
    "at the {cell} a {size} {color} {shape}",
    "in the {cell} there is a {size} {color} {shape}",
    "the {cell} holds a {size} {color} {shape}",
    "a {size} {color} {shape} ({cell})",
    "a {color} {shape} that is {size} at the {cell}",
    "a {size} {color} {shape} at the {cell}",  # the canonical phrase, in a non-canonical sentence
)
_PREFIXES = ("", "", "there is ", "the image shows ", "this picture contains ", "we see ", "an image of ")
_JOINERS = ((", ", " and "), ("; ", " and "), (" and ", " and "), (", ", ", "), (", ", " and also "))
_ENDINGS = ("", "", ".")


def paraphrase(scene: Scene, rng: np.random.Generator) -> str:
    """A random non-canonical description of the scene: other phrasings and word orders.

    Never returns the canonical caption (a draw that would equal it is redrawn).
    """
    canonical = caption(scene)
    for _ in range(100):
        order = rng.permutation(len(scene.objects))
        phrases = []
        for k in order:
            o = scene.objects[int(k)]
            form = _OBJECT_FORMS[int(rng.integers(len(_OBJECT_FORMS)))]
            phrases.append(form.format(size=o.size, color=o.color, shape=o.shape, cell=o.cell_name))
        sep, last = _JOINERS[int(rng.integers(len(_JOINERS)))]
        text = _PREFIXES[int(rng.integers(len(_PREFIXES)))] + join_list(phrases, sep, last)
        text += _ENDINGS[int(rng.integers(len(_ENDINGS)))]
        if text != canonical:
            return text
    # Only reachable for an empty scene, whose caption has nothing to rephrase.
    return "an empty image" if not scene.objects else text


# ---------------------------------------------------------------- parsing canonical captions

_PHRASE = re.compile(r"a (\S+) (\S+) (\S+) at the (.+)")


def _parse_phrase(part: str, k: int) -> Obj:
    where = f"object {k + 1} ({part!r})"
    m = _PHRASE.fullmatch(part)
    if not m:
        raise NotCanonicalCaption(f"{where} is not of the form 'a {{size}} {{color}} {{shape}} at the {{cell}}'")
    size, color, shape, cell = m.groups()
    if size not in SIZE_NAMES:
        raise NotCanonicalCaption(f"{where}: unknown size {size!r}; expected one of {', '.join(SIZE_NAMES)}")
    if color not in COLOR_NAMES:
        raise NotCanonicalCaption(f"{where}: unknown color {color!r}; expected one of {', '.join(COLOR_NAMES)}")
    if shape not in SHAPES:
        raise NotCanonicalCaption(f"{where}: unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    if cell not in CELLS:
        raise NotCanonicalCaption(f"{where}: unknown cell {cell!r}; expected one of {', '.join(CELLS)}")
    return Obj(cell=CELLS.index(cell), shape=shape, color=color, size=size)


def parse_caption(text: str) -> Scene:
    """Read a canonical caption back into a scene (jitter 0).

    Raises NotCanonicalCaption, naming the part that is not canonical, for anything else:
    other phrasings, wrong order, repeated cells, wrong separators, a final period, capitals.
    """
    if not isinstance(text, str):
        raise NotCanonicalCaption(f"a caption must be a string, got {type(text).__name__}")
    if not text:
        raise NotCanonicalCaption("the caption is empty; a canonical caption names at least one object")
    if text != text.strip() or "  " in text:
        raise NotCanonicalCaption(f"{text!r} has leading, trailing or doubled spaces")
    if text != text.lower():
        raise NotCanonicalCaption(f"{text!r} has capital letters; canonical captions are lower case")
    if text.endswith("."):
        raise NotCanonicalCaption(f"{text!r} ends with a period; canonical captions have none")
    parts = re.split(r", | and ", text)
    objects = [_parse_phrase(part, k) for k, part in enumerate(parts)]
    cells = [o.cell for o in objects]
    if len(set(cells)) != len(cells):
        raise NotCanonicalCaption(f"{text!r} names a cell more than once; a cell holds at most one object")
    if cells != sorted(cells):
        raise NotCanonicalCaption(
            f"{text!r} does not list the objects in cell order (reading order: top left first)"
        )
    scene = Scene(tuple(objects))
    if caption(scene) != text:
        raise NotCanonicalCaption(
            f"{text!r} joins its objects wrongly: use ', ' between objects and ' and ' before the last"
        )
    return scene
