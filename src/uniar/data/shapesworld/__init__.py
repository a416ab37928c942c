"""ShapesWorld: the embedded, exactly-scorable benchmark (docs/shapesworld.md)."""

from uniar.data.shapesworld.spec import (  # noqa: F401
    CELLS, COLOR_NAMES, COLORS, NOVEL_PAIRS, SHAPES, SIZE_NAMES, SIZES, SPLITS, Obj, Scene,
)
