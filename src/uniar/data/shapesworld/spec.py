"""ShapesWorld vocabulary and scene types (docs/shapesworld.md is the specification).

A `Scene` is what every scorer compares: the set of objects (shape, color, size, cell).
The jitter of each object is kept beside it so a scene renders the same image every time,
but it never takes part in equality: two scenes are equal when their objects are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 50, 50),
    "green": (50, 200, 80),
    "blue": (60, 110, 240),
    "yellow": (240, 220, 60),
    "purple": (190, 80, 230),
    "cyan": (60, 220, 220),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

# Side of the object's bounding box as a fraction of the image size S.
SIZES: dict[str, float] = {"small": 0.16, "large": 0.26}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)

# 3x3 grid, reading order.
CELLS: tuple[str, ...] = (
    "top left", "top center", "top right",
    "middle left", "center", "middle right",
    "bottom left", "bottom center", "bottom right",
)

JITTER = 0.025  # max centre offset per axis, as a fraction of S
MIN_IMAGE_SIZE = 48
DEFAULT_IMAGE_SIZE = 64
DEFAULT_MAX_OBJECTS = 3

# Held out of `train` entirely (images, captions, questions, edits); every `novel` scene has one.
NOVEL_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("red", "cross"), ("green", "circle"), ("blue", "triangle"), ("yellow", "square")}
)

SPLITS: tuple[str, ...] = ("train", "val", "test", "novel")

NUMBER_WORDS: tuple[str, ...] = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True, order=True)
class Obj:
    """One object. Ordered by cell first, so sorting a list of objects gives reading order."""

    cell: int
    shape: str
    color: str
    size: str

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}; expected one of {COLOR_NAMES}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; expected one of {SIZE_NAMES}")
        if not 0 <= self.cell < len(CELLS):
            raise ValueError(f"cell index {self.cell} out of range 0..{len(CELLS) - 1}")

    @property
    def cell_name(self) -> str:
        return CELLS[self.cell]


@dataclass(frozen=True)
class Scene:
    """Objects sorted by cell (at most one per cell) and each object's jitter (dx, dy) in units of S.

    Equality and hashing use the objects only; jitter is for rendering.
    """

    objects: tuple[Obj, ...]
    jitter: tuple[tuple[float, float], ...] = field(default=(), compare=False, hash=False)

    def __post_init__(self) -> None:
        cells = [o.cell for o in self.objects]
        if cells != sorted(cells) or len(set(cells)) != len(cells):
            raise ValueError(f"scene objects must be sorted by cell, one per cell; got cells {cells}")
        if self.jitter and len(self.jitter) != len(self.objects):
            raise ValueError("jitter must have one (dx, dy) per object")
        if not self.jitter:
            object.__setattr__(self, "jitter", tuple((0.0, 0.0) for _ in self.objects))

    @classmethod
    def from_objects(cls, objects, jitter=None) -> "Scene":
        """Build a scene from objects in any order (jitter, if given, follows the objects)."""
        objects = list(objects)
        jitter = list(jitter) if jitter is not None else [(0.0, 0.0)] * len(objects)
        pairs = sorted(zip(objects, jitter), key=lambda p: p[0].cell)
        return cls(tuple(o for o, _ in pairs), tuple(j for _, j in pairs))

    def object_at(self, cell: int) -> Obj | None:
        for o in self.objects:
            if o.cell == cell:
                return o
        return None

    def to_dict(self) -> dict:
        return {
            "objects": [
                {"shape": o.shape, "color": o.color, "size": o.size, "cell": o.cell_name,
                 "jitter": [float(j[0]), float(j[1])]}
                for o, j in zip(self.objects, self.jitter)
            ]
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        objs, jit = [], []
        for o in d["objects"]:
            cell = o["cell"] if isinstance(o["cell"], int) else CELLS.index(o["cell"])
            objs.append(Obj(cell=cell, shape=o["shape"], color=o["color"], size=o["size"]))
            jit.append(tuple(o.get("jitter", (0.0, 0.0))))
        return cls.from_objects(objs, jit)
