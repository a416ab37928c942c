"""The scene parser: reads a ShapesWorld image back into a scene, so every task can be scored exactly.

Every object lies inside its own cell (the largest half-side plus the jitter, 0.155 S, is less than
half a cell, 0.167 S), so the parser looks at each of the 9 cells on its own:

1. Presence: the bright pixels of the cell (max channel > FOREGROUND) form connected components;
   components with less than MIN_MASS pixels' worth of light are dropped as specks. A cell with
   none left is empty.
2. Color: the median RGB of the object's strongly lit pixels, snapped to the nearest palette entry
   (allowing it to look dimmer, as blurred small objects do).
3. Coverage: each pixel's projection onto that palette color estimates the fraction of the pixel
   the object covers (1 inside, 0 outside, in between at the anti-aliased edge).
4. Shape and size: the coverage-weighted centroid anchors a bank of templates (4 shapes x 2 sizes,
   each rendered by the renderer itself at sub-pixel offsets around the centroid and at a few blur
   levels); the template with the least squared error over the cell wins, each template scaled by
   its best gain (within limits) so a dimmed object still matches. Blurred templates keep blurred,
   compressed or reconstructed images readable: a blurred small cross matches a blurred cross
   better than any sharp shape.

Images larger than MAX_PARSE_SIZE are area-downsampled first. About 3 ms per 64 x 64 image.
`parser_accuracy` scores the parser (or anything that produces images of known scenes) on a set
of images; other benchmarks (tokenizer reconstructions, generated images) call it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image
from scipy import ndimage

from uniar.data.shapesworld.render import cell_bounds, check_size, coverage
from uniar.data.shapesworld.spec import (
    COLOR_NAMES, COLORS, MIN_IMAGE_SIZE, SHAPES, SIZE_NAMES, SIZES, Obj, Scene,
)

FOREGROUND = 80  # max channel above this (of 255) counts as a bright pixel
STRONG = 0.75  # strongly lit: max channel at least this fraction of the object's brightest pixel
MIN_MASS = 0.25  # of the smallest object's area (a small triangle): lighter components are specks
BLUR_LEVELS = (0.0, 0.75, 1.25, 2.0)  # Gaussian sigmas (pixels) of the template bank
OFFSET_STEP = 0.25  # sub-pixel step of the template positions (pixels)
OFFSET_RANGE = 1.0  # the bank holds templates up to this far from the rounded centroid (pixels)
GAIN_MIN, GAIN_MAX = 0.5, 1.25  # how much dimmer or brighter than the palette an object may look
MAX_PARSE_SIZE = 128  # larger images are area-downsampled to this size first
SEARCH = 0.375  # templates within this distance of the measured centroid are compared (pixels)

_PALETTE = np.array([COLORS[c] for c in COLOR_NAMES], dtype=np.float32)
HYPOTHESES = tuple((shape, size) for shape in SHAPES for size in SIZE_NAMES)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# ---------------------------------------------------------------- template bank


def centroid_offset(shape: str, half: float) -> float:
    """How far below the box centre the shape's centroid lies (y grows down): h/3 for the triangle."""
    return half / 3 if shape == "triangle" else 0.0


class TemplateBank:
    """Coverage templates for one image size, anchored on their centroids.

    `templates[h, b, i, j]` is a (window x window) coverage image, flattened, of hypothesis
    `HYPOTHESES[h]` = (shape, size), blurred by `BLUR_LEVELS[b]`, with its centroid at window
    coordinates (radius + steps[j], radius + steps[i]).
    """

    def __init__(self, size: int):
        self.size = size
        largest = max(SIZES.values()) * size
        margin = math.ceil(3 * max(BLUR_LEVELS)) + math.ceil(OFFSET_RANGE) + 1
        self.radius = math.ceil(largest / 2) + margin
        window = 2 * self.radius
        self.steps = np.arange(-OFFSET_RANGE, OFFSET_RANGE + 1e-9, OFFSET_STEP)
        n = len(self.steps)
        sharp = np.zeros((len(HYPOTHESES), n, n, window, window), dtype=np.float32)
        for h, (shape, size_name) in enumerate(HYPOTHESES):
            half = SIZES[size_name] * size / 2
            for i, oy in enumerate(self.steps):
                for j, ox in enumerate(self.steps):
                    cy = self.radius + oy - centroid_offset(shape, half)
                    sharp[h, i, j] = coverage(shape, self.radius + ox, cy, half, 0, 0, window, window)
        blurred = [
            sharp if sigma == 0 else ndimage.gaussian_filter(sharp, (0, 0, 0, sigma, sigma), mode="constant")
            for sigma in BLUR_LEVELS
        ]
        self.templates = np.stack(blurred, axis=1).reshape(len(HYPOTHESES), len(BLUR_LEVELS), n, n, -1)

    def best(self, observed: np.ndarray, weight: np.ndarray, fx: float, fy: float) -> tuple[int, float, float]:
        """(hypothesis index, x offset, y offset) of the template with the least weighted squared
        error against `observed`, among those placed within SEARCH of the centroid (fx, fy)."""
        near_x = np.flatnonzero(np.abs(self.steps - fx) <= SEARCH + 1e-6)
        near_y = np.flatnonzero(np.abs(self.steps - fy) <= SEARCH + 1e-6)
        ys, xs = slice(near_y[0], near_y[-1] + 1), slice(near_x[0], near_x[-1] + 1)
        t = self.templates[:, :, ys, xs]
        w = weight.ravel()
        # With a gain g per template: sum w (g t - o)^2 = g^2 sum w t^2 - 2 g sum w t o + const,
        # least at g = sum w t o / sum w t^2 (kept in [GAIN_MIN, GAIN_MAX]).
        tt = (t * t) @ w
        to = t @ (w * observed.ravel())
        gain = np.clip(to / np.maximum(tt, 1e-6), GAIN_MIN, GAIN_MAX)
        error = gain * gain * tt - 2 * gain * to
        h, _, i, j = np.unravel_index(int(np.argmin(error)), error.shape)
        return int(h), float(self.steps[xs][j]), float(self.steps[ys][i])


@functools.lru_cache(maxsize=4)
def template_bank(size: int) -> TemplateBank:
    """The (cached) template bank for images of size S; built in well under a second."""
    return TemplateBank(size)


# ---------------------------------------------------------------- parsing


def check_image(img) -> np.ndarray:
    """Validate one image: a numpy uint8 (S, S, 3) array with S >= 48."""
    if not isinstance(img, np.ndarray):
        raise TypeError(
            f"parse_image expects a numpy uint8 (S, S, 3) array, got {type(img).__name__}; "
            "convert model outputs with uniar.data.images.to_numpy_hwc"
        )
    if img.dtype != np.uint8:
        raise ValueError(f"parse_image expects uint8 pixels (0..255), got dtype {img.dtype}")
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] != img.shape[1]:
        raise ValueError(f"parse_image expects a square RGB image of shape (S, S, 3), got {img.shape}")
    if img.shape[0] < MIN_IMAGE_SIZE:
        raise ValueError(f"image size {img.shape[0]} is below the ShapesWorld minimum of {MIN_IMAGE_SIZE}")
    return img


def nearest_color(rgb: np.ndarray) -> str:
    """The palette color nearest to a color, allowing each palette entry to be dimmed or brightened.

    The distance to entry c is |rgb - g c| with the gain g fitted in [GAIN_MIN, GAIN_MAX]: blur and
    lossy reconstructions dim small objects, and a dim yellow is still closer to yellow than to red.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    gain = np.clip(_PALETTE @ rgb / (_PALETTE**2).sum(axis=1), GAIN_MIN, GAIN_MAX)
    return COLOR_NAMES[int(np.argmin(((gain[:, None] * _PALETTE - rgb) ** 2).sum(axis=1)))]


def _object_region(bright: np.ndarray, value: np.ndarray, min_mass: float) -> np.ndarray | None:
    """Mask of the cell's object (its non-speck bright components), or None for an empty cell."""
    if not bright.any():
        return None
    labels, count = ndimage.label(bright, structure=_EIGHT_CONNECTED)
    if count == 0:
        return None
    mass = ndimage.sum_labels(value, labels, index=np.arange(1, count + 1)) / 255.0
    keep = np.flatnonzero(mass >= min_mass) + 1
    if keep.size == 0:
        return None
    return np.isin(labels, keep)


def _parse_cell(img: np.ndarray, value: np.ndarray, padded: np.ndarray, inside: np.ndarray,
                cell: int, bounds: tuple[int, int, int, int], bank: TemplateBank, min_mass: float):
    """(Obj, jitter) for the object in one cell, or None."""
    y0, y1, x0, x1 = bounds
    region = _object_region(value[y0:y1, x0:x1] > FOREGROUND, value[y0:y1, x0:x1], min_mass)
    if region is None:
        return None
    pixels = img[y0:y1, x0:x1][region].astype(np.float32)
    lit = pixels.max(axis=1)
    color = nearest_color(np.median(pixels[lit >= STRONG * lit.max()], axis=0))
    palette_rgb = _PALETTE[COLOR_NAMES.index(color)]
    project = palette_rgb / float(palette_rgb @ palette_rgb)  # pixel @ project = coverage

    # Coverage estimate, and its centroid (pixel centres sit at i + 0.5).
    near = ndimage.binary_dilation(region, iterations=2)
    alpha = np.clip(img[y0:y1, x0:x1].astype(np.float32) @ project, 0.0, 1.5) * near
    total = float(alpha.sum())  # > 0: every palette color has all channels >= 50
    ys, xs = np.mgrid[y0:y1, x0:x1]
    ux = float((alpha * (xs + 0.5)).sum() / total)
    uy = float((alpha * (ys + 0.5)).sum() / total)

    # Compare the window around the centroid with every template, over the cell's pixels only.
    r, pad = bank.radius, bank.radius + 1
    ax, ay = int(round(ux)), int(round(uy))
    window = padded[ay - r + pad:ay + r + pad, ax - r + pad:ax + r + pad].astype(np.float32)
    observed = np.clip(window @ project, -0.5, 1.5)
    weight = inside[ay - r + pad:ay + r + pad, ax - r + pad:ax + r + pad].astype(np.float32)
    cell_rows = (np.arange(ay - r, ay + r) >= y0) & (np.arange(ay - r, ay + r) < y1)
    cell_cols = (np.arange(ax - r, ax + r) >= x0) & (np.arange(ax - r, ax + r) < x1)
    weight *= cell_rows[:, None] & cell_cols[None, :]
    h, ox, oy = bank.best(observed, weight, ux - ax, uy - ay)
    shape, size_name = HYPOTHESES[h]
    half = SIZES[size_name] * bank.size / 2
    cx, cy = ax + ox, ay + oy - centroid_offset(shape, half)
    side = bank.size / 3
    jitter = ((cx - (cell % 3 + 0.5) * side) / bank.size, (cy - (cell // 3 + 0.5) * side) / bank.size)
    return Obj(cell=cell, shape=shape, color=color, size=size_name), jitter


def parse_image(img: np.ndarray) -> Scene:
    """Read one uint8 (S, S, 3) image back into a scene (with estimated jitter).

    A black image gives an empty scene; any image of the right shape and dtype gives some scene.
    """
    img = check_image(img)
    if img.shape[0] > MAX_PARSE_SIZE:
        # Area-downsampling an anti-aliased render gives (nearly) the render at the smaller size;
        # jitter is in units of S, so the parsed scene is the same. Keeps the template bank small.
        img = np.asarray(Image.fromarray(img).resize((MAX_PARSE_SIZE, MAX_PARSE_SIZE), Image.BOX))
    size = check_size(img.shape[0])
    bank = template_bank(size)
    value = img.max(axis=2)
    pad = bank.radius + 1
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    inside = np.pad(np.ones((size, size), dtype=bool), pad)  # outside the image there is nothing to compare
    min_mass = MIN_MASS * 0.5 * (min(SIZES.values()) * size) ** 2
    objects, jitter = [], []
    for cell, bounds in enumerate(cell_bounds(size)):
        found = _parse_cell(img, value, padded, inside, cell, bounds, bank, min_mass)
        if found is not None:
            objects.append(found[0])
            jitter.append(found[1])
    return Scene(tuple(objects), tuple(jitter))


def parse_images(images) -> list[Scene]:
    """Parse a batch: a uint8 (B, S, S, 3) array or a sequence of (S, S, 3) arrays."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"parse_images expects a uint8 (B, S, S, 3) array, got shape {images.shape}")
        return [parse_image(img) for img in images]
    if isinstance(images, (list, tuple)):
        return [parse_image(img) for img in images]
    raise TypeError(
        f"parse_images expects a numpy uint8 (B, S, S, 3) array or a list of (S, S, 3) arrays, "
        f"got {type(images).__name__}; convert torch batches with uniar.data.images.to_numpy_hwc"
    )


# ---------------------------------------------------------------- scoring


def scene_agreement(parsed: list[Scene], truth: list[Scene]) -> dict:
    """Scores of parsed scenes against the true ones.

    - exact: the parsed scene equals the true one (nothing missing, nothing extra, all attributes).
    - recall / precision: objects matched on all four attributes, over true / parsed objects.
    - acc_cell: true objects whose cell holds a parsed object; acc_shape, acc_color, acc_size: true
      objects whose cell holds a parsed object with that attribute right (a miss counts as wrong).
    - count_acc: the number of objects is right.
    """
    if len(parsed) != len(truth):
        raise ValueError(f"{len(parsed)} parsed scenes for {len(truth)} true scenes")
    exact = matched = n_true = n_parsed = count_ok = 0
    attr = {"cell": 0, "shape": 0, "color": 0, "size": 0}
    for got, want in zip(parsed, truth):
        exact += got == want
        count_ok += len(got.objects) == len(want.objects)
        got_objects = set(got.objects)
        n_true += len(want.objects)
        n_parsed += len(got.objects)
        for obj in want.objects:
            matched += obj in got_objects
            found = got.object_at(obj.cell)
            if found is not None:
                attr["cell"] += 1
                attr["shape"] += found.shape == obj.shape
                attr["color"] += found.color == obj.color
                attr["size"] += found.size == obj.size
    n = len(truth)
    return {
        "exact": exact / n if n else 0.0,
        "recall": matched / n_true if n_true else 1.0,
        "precision": matched / n_parsed if n_parsed else 1.0,
        **{f"acc_{k}": v / n_true if n_true else 1.0 for k, v in attr.items()},
        "count_acc": count_ok / n if n else 0.0,
        "n": n,
        "n_objects": n_true,
    }


def parser_accuracy(images, scenes) -> dict:
    """Parse `images` (uint8 (B, S, S, 3) or a list) and score them against their true `scenes`.

    The function other benchmarks call (tokenizer reconstructions, generated images); see
    `scene_agreement` for the metrics.
    """
    return scene_agreement(parse_images(images), list(scenes))

