"""Scene sampling: every scene is a pure function of (split, index).

Seeding: each (split, index) owns a family of independent random streams, built as
`np.random.SeedSequence(SEED_BASE, spawn_key=(SPLIT_IDS[split], index, stream))`. The stream
number says what the randomness is for (`STREAM_*` below), so drawing more paraphrases never
changes a scene, a question or an edit. SeedSequence hashes its inputs with a fixed algorithm, so
the same call gives the same scene on every machine and numpy version that keeps PCG64.
"""

from __future__ import annotations

import numpy as np

from uniar.data.shapesworld.spec import (
    CELLS, COLOR_NAMES, DEFAULT_MAX_OBJECTS, JITTER, NOVEL_PAIRS, SHAPES, SIZE_NAMES, SPLITS, Obj, Scene,
)

SEED_BASE = 20240611  # the data set's one global seed
SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}  # train 0, val 1, test 2, novel 3

# Independent streams per (split, index).
STREAM_SCENE = 0
STREAM_TEXT = 1
STREAM_QUESTIONS = 2
STREAM_EDIT = 3

ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOR_NAMES for s in SHAPES)
TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in ALL_PAIRS if p not in NOVEL_PAIRS)
NOVEL_PAIR_LIST: tuple[tuple[str, str], ...] = tuple(sorted(NOVEL_PAIRS))


def check_split(split: str) -> None:
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def rng_for(split: str, index: int, stream: int) -> np.random.Generator:
    """The random generator of one stream of one example (see the module docstring)."""
    check_split(split)
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"example index must be a non-negative integer, got {index!r}")
    seq = np.random.SeedSequence(SEED_BASE, spawn_key=(SPLIT_IDS[split], int(index), stream))
    return np.random.Generator(np.random.PCG64(seq))


def allowed_pairs(split: str) -> tuple[tuple[str, str], ...]:
    """(color, shape) pairs that may appear in a split: all but the novel ones in `train`."""
    return TRAIN_PAIRS if split == "train" else ALL_PAIRS


def sample_jitter(rng: np.random.Generator) -> tuple[float, float]:
    """A centre offset (dx, dy) in units of S, uniform in [-JITTER, JITTER] per axis."""
    dx, dy = rng.uniform(-JITTER, JITTER, size=2)
    return (float(dx), float(dy))


def sample_scene(split: str, index: int, max_objects: int = DEFAULT_MAX_OBJECTS) -> Scene:
    """The scene of example `index` of `split`: 1..max_objects objects in distinct cells.

    `train` never contains a novel (color, shape) pair; every `novel` scene contains at least one.
    """
    if not 1 <= max_objects <= len(CELLS):
        raise ValueError(f"max_objects must be in 1..{len(CELLS)}, got {max_objects}")
    rng = rng_for(split, index, STREAM_SCENE)
    n = int(rng.integers(1, max_objects + 1))
    cells = rng.choice(len(CELLS), size=n, replace=False)
    pairs = allowed_pairs(split)
    objects, jitter = [], []
    for cell in cells:
        color, shape = pairs[int(rng.integers(len(pairs)))]
        size = SIZE_NAMES[int(rng.integers(len(SIZE_NAMES)))]
        objects.append(Obj(cell=int(cell), shape=shape, color=color, size=size))
        jitter.append(sample_jitter(rng))
    if split == "novel" and not any((o.color, o.shape) in NOVEL_PAIRS for o in objects):
        # Turn one object into a held-out pair; size, cell and jitter stay as drawn.
        k = int(rng.integers(n))
        color, shape = NOVEL_PAIR_LIST[int(rng.integers(len(NOVEL_PAIR_LIST)))]
        objects[k] = Obj(cell=objects[k].cell, shape=shape, color=color, size=objects[k].size)
    named = [(o.color, o.shape) for o in objects]
    if n >= max(2, max_objects) and all(named.count(p) > 1 for p in named):
        # Every edit names an object by a unique (color, shape) and `add` needs room, so a full
        # scene of look-alikes could not be edited: give its last object another pair.
        others = [p for p in pairs if p != named[-1]]
        color, shape = others[int(rng.integers(len(others)))]
        objects[-1] = Obj(cell=objects[-1].cell, shape=shape, color=color, size=objects[-1].size)
    return Scene.from_objects(objects, jitter)


def has_novel_pair(scene: Scene) -> bool:
    """Whether any object of the scene is one of the held-out (color, shape) pairs."""
    return any((o.color, o.shape) in NOVEL_PAIRS for o in scene.objects)
