"""The ShapesWorld renderer: a scene -> an S x S uint8 RGB image (docs/shapesworld.md, section 1).

Anti-aliasing follows the spec: shapes are sampled at 4x resolution (4 x 4 points per pixel, at
the centres of the sub-pixels) and box-filtered down, so a pixel's value is the palette colour
times the fraction of its sub-pixels inside the shape. Objects never overlap, so each one is
rasterised only inside its own bounding box and written straight into the image; this keeps a
64 x 64 render to a few tens of microseconds per object.
"""

from __future__ import annotations

import math

import numpy as np

from uniar.data.shapesworld.spec import (
    CELLS, COLORS, DEFAULT_IMAGE_SIZE, MIN_IMAGE_SIZE, SHAPES, SIZES, Obj, Scene,
)

SUPERSAMPLE = 4  # sub-pixels per pixel along each axis


def check_size(size: int) -> int:
    """Validate an image size S and return it as an int."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"image size must be an integer, got {size!r}")
    if size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image size {size} is too small: ShapesWorld needs S >= {MIN_IMAGE_SIZE} "
            "so that small objects stay recognisable"
        )
    return int(size)


def object_geometry(obj: Obj, jitter: tuple[float, float], size: int) -> tuple[float, float, float]:
    """(cx, cy, half) in pixels: the centre of the object's box and half its side.

    Pixel (row i, column j) covers [j, j+1) x [i, i+1), so the image spans [0, S) on each axis.
    """
    cell_side = size / 3
    cx = (obj.cell % 3 + 0.5) * cell_side + jitter[0] * size
    cy = (obj.cell // 3 + 0.5) * cell_side + jitter[1] * size
    return cx, cy, SIZES[obj.size] * size / 2


def inside(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Which points, at offsets (dx, dy) from the box centre, lie inside the shape (y grows down)."""
    in_box = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "square":
        return in_box
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "triangle":
        # Apex at (0, -half), base from (-half, half) to (half, half): the half-width grows by 1/2 per unit of depth.
        return in_box & (np.abs(dx) <= (dy + half) / 2)
    if shape == "cross":
        arm = half / 3  # half the arm thickness: the arm is a third of the side
        return in_box & ((np.abs(dx) <= arm) | (np.abs(dy) <= arm))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def subpixel_counts(shape: str, cx: float, cy: float, half: float,
                    x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """How many of each pixel's 4 x 4 sub-pixel centres lie inside the shape, as int32 (height, width).

    The window is [x0, x0+width) x [y0, y0+height) in pixels; (cx, cy) is the centre of the box.
    """
    ss = SUPERSAMPLE
    xs = (x0 - cx + (np.arange(ss * width) + 0.5) / ss)[None, :]
    ys = (y0 - cy + (np.arange(ss * height) + 0.5) / ss)[:, None]
    mask = inside(shape, xs, ys, half)
    return mask.reshape(height, ss, width, ss).sum(axis=(1, 3), dtype=np.int32)


def coverage(shape: str, cx: float, cy: float, half: float,
             x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Fraction of each pixel of the window covered by the shape: float32 (height, width) in [0, 1]."""
    counts = subpixel_counts(shape, cx, cy, half, x0, y0, width, height)
    return counts.astype(np.float32) / (SUPERSAMPLE * SUPERSAMPLE)


def _draw_object(out: np.ndarray, obj: Obj, jitter: tuple[float, float]) -> None:
    size = out.shape[0]
    cx, cy, half = object_geometry(obj, jitter, size)
    x0, x1 = max(0, math.floor(cx - half)), min(size, math.ceil(cx + half))
    y0, y1 = max(0, math.floor(cy - half)), min(size, math.ceil(cy + half))
    if x1 <= x0 or y1 <= y0:
        return
    counts = subpixel_counts(obj.shape, cx, cy, half, x0, y0, x1 - x0, y1 - y0)
    ss2 = SUPERSAMPLE * SUPERSAMPLE
    color = np.asarray(COLORS[obj.color], dtype=np.int32)
    # Box filter with round-half-up: the mean of 16 sub-pixels that are either the colour or black.
    patch = (counts[..., None] * color + ss2 // 2) // ss2
    region = out[y0:y1, x0:x1]
    lit = counts > 0
    region[lit] = patch[lit].astype(np.uint8)


def render(scene: Scene, size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """Render a scene as a (size, size, 3) uint8 image on a black background."""
    size = check_size(size)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    for obj, jitter in zip(scene.objects, scene.jitter):
        _draw_object(out, obj, jitter)
    return out


def render_batch(scenes, size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """Render a sequence of scenes into one (B, size, size, 3) uint8 array."""
    size = check_size(size)
    scenes = list(scenes)
    out = np.zeros((len(scenes), size, size, 3), dtype=np.uint8)
    for image, scene in zip(out, scenes):
        for obj, jitter in zip(scene.objects, scene.jitter):
            _draw_object(image, obj, jitter)
    return out


def cell_bounds(size: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) pixel ranges of the 9 cells: pixel i is in the cell holding its centre i + 0.5."""
    edges = [0] + [math.ceil(k * size / 3 - 0.5) for k in (1, 2)] + [size]
    return [(edges[c // 3], edges[c // 3 + 1], edges[c % 3], edges[c % 3 + 1]) for c in range(len(CELLS))]
