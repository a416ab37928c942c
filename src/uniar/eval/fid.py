"""Domain FID for ShapesWorld (`fid_sw`): Fréchet distance of features from a ShapesWorld network.

The Inception FID needs weights this project cannot download, so `fid_sw` uses a small CNN of its
own, trained on ShapesWorld renders to read every cell of the 3x3 grid (is it occupied, and by
which shape, color and size). Its penultimate layer is the feature: it encodes what a ShapesWorld
image shows, so generated images that draw wrong, blurred or broken objects move the feature
statistics away from real ones.

The network is built by a fixed recipe (`FeatureRecipe`: data, seed, architecture, steps) and
cached under `$UNIAR_CACHE/fid_sw/` (default `~/.cache/uniar/fid_sw/`) as safetensors weights
plus a JSON file holding the recipe, its hash and the network's accuracy on `val`.
`feature_network()` loads it when files with the recipe's hash are there and trains it (under a
minute on two free CPU cores) when not. The same recipe gives the same network up to float
rounding, so FIDs computed on different machines agree closely but not bit for bit; compare
FIDs only when they come from the same recipe hash and the same numbers of images (FID is
biased by sample size: two real sets of 200 images score several times higher than of 1000).

Any other feature network works too: `domain_fid(real, fake, feature=module)` takes any
nn.Module mapping uint8 (B, 3, H, W) to (B, D), for example an Inception a user has locally.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from uniar.data.shapesworld.spec import CELLS, COLOR_NAMES, SHAPES, SIZE_NAMES, Scene
from uniar.errors import CheckpointError, UserError
from uniar.utils.io import load_safetensors, read_json, save_safetensors, write_json

# Per cell, class 0 means "empty" and the attributes follow in spec order.
N_SHAPE, N_COLOR, N_SIZE = len(SHAPES) + 1, len(COLOR_NAMES) + 1, len(SIZE_NAMES) + 1
CLASSES_PER_CELL = N_SHAPE + N_COLOR + N_SIZE


@dataclasses.dataclass(frozen=True)
class FeatureRecipe:
    """Everything that decides the feature network. Its hash names the cached weights.

    Bump `version` whenever the architecture or the training code below changes meaning.
    """

    version: int = 2
    image_size: int = 72  # inputs are resized to this: 3 cells of 24 px, 9 x 9 after three stride-2 convs
    render_size: int = 64  # training renders are made at the usual S and resized like any input
    train_images: int = 8192  # `train` examples 0 .. train_images-1
    steps: int = 300
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    width: int = 16  # channels of the first conv; doubled twice
    cell_dim: int = 16  # features per cell; the feature vector has 9 * cell_dim entries
    eval_images: int = 512  # `val` examples used to report the network's accuracy

    def hash(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


DEFAULT_RECIPE = FeatureRecipe()


class ShapesWorldFeatures(nn.Module):
    """uint8 images (B, 3, H, W), any H and W -> features (B, 9 * cell_dim).

    Images are resized to `image_size` (area averaging when shrinking, bilinear when enlarging)
    and scaled to [-1, 1]. Four convolutions (three of stride 2) give a 9 x 9 map, average-pooled
    to one vector per cell of the 3 x 3 grid; a 1 x 1 convolution shared by all cells turns each
    into `cell_dim` features (ReLU). The features are these, flattened; the classifier used for
    training (`logits`) is one more 1 x 1 convolution. Sharing weights across cells lets a few
    hundred steps teach the network all nine cells at once.
    """

    def __init__(self, recipe: FeatureRecipe = DEFAULT_RECIPE):
        super().__init__()
        if recipe.image_size % 24:
            raise UserError(f"image_size must be a multiple of 24 (3 cells, 3 stride-2 convs), got {recipe.image_size}")
        self.image_size = recipe.image_size
        self.num_features = len(CELLS) * recipe.cell_dim  # read by torchmetrics instead of probing
        w = recipe.width
        self.trunk = nn.Sequential(
            _conv(3, w, stride=2), _conv(w, 2 * w, stride=2), _conv(2 * w, 4 * w, stride=2), _conv(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(3),  # one vector per cell
            nn.Conv2d(4 * w, recipe.cell_dim, 1), nn.ReLU(),
        )
        self.head = nn.Conv2d(recipe.cell_dim, CLASSES_PER_CELL, 1)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float (B, 3, S, S) in [-1, 1], S = image_size."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise UserError(
                f"the feature network takes uint8 images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}; "
                "convert model outputs with uniar.data.images.to_uint8"
            )
        x = images.to(self.head.weight.device).float()
        s = self.image_size
        if x.shape[-2:] != (s, s):
            shrinking = x.shape[-2] >= s and x.shape[-1] >= s
            x = F.interpolate(x, size=(s, s), mode="area") if shrinking else \
                F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return x / 127.5 - 1.0

    def cell_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, cell_dim, 3, 3): the features of each cell."""
        return self.trunk(self.prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.cell_features(images).flatten(1)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Per-cell class logits (B, 9, CLASSES_PER_CELL): shape, then color, then size; cells in reading order."""
        return self.head(self.cell_features(images)).flatten(2).transpose(1, 2)


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3 x 3 convolution, batch norm (fast, stable training), ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


# ----------------------------------------------------------------------------- training


def cell_targets(scenes: list[Scene]) -> torch.Tensor:
    """(N, 9, 3) long: per cell the shape, color and size class (0 = empty cell)."""
    out = torch.zeros(len(scenes), len(CELLS), 3, dtype=torch.long)
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            out[i, o.cell] = torch.tensor(
                [SHAPES.index(o.shape) + 1, COLOR_NAMES.index(o.color) + 1, SIZE_NAMES.index(o.size) + 1]
            )
    return out


def _split_logits(logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return logits.split([N_SHAPE, N_COLOR, N_SIZE], dim=-1)


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return sum(
        F.cross_entropy(part.reshape(-1, part.shape[-1]), targets[..., k].reshape(-1))
        for k, part in enumerate(_split_logits(logits))
    )


def _training_set(recipe: FeatureRecipe) -> tuple[torch.Tensor, torch.Tensor]:
    """Renders of `train` scenes with every object's color redrawn, and their per-cell targets.

    `train` never shows the four novel (color, shape) pairs, but the network must read every
    pair that `test` and `novel` images show; redrawing colors (seeded by the recipe) covers them.
    """
    from uniar.data.shapesworld import render_batch, scenes

    rng = np.random.default_rng(recipe.seed)
    recolored = []
    for scene in scenes("train", 0, recipe.train_images):
        objects = [dataclasses.replace(o, color=COLOR_NAMES[rng.integers(len(COLOR_NAMES))]) for o in scene.objects]
        recolored.append(Scene(tuple(objects), scene.jitter))
    return _as_batch(render_batch(recolored, recipe.render_size)), cell_targets(recolored)


def _held_out_set(recipe: FeatureRecipe) -> tuple[torch.Tensor, torch.Tensor]:
    """`val` renders (all pairs occur there) and their targets, to report the network's accuracy."""
    from uniar.data.shapesworld import images, scenes

    return _as_batch(images("val", 0, recipe.eval_images, recipe.render_size)), cell_targets(
        scenes("val", 0, recipe.eval_images)
    )


def _as_batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def read_accuracy(net: ShapesWorldFeatures, pixels: torch.Tensor, targets: torch.Tensor) -> dict:
    """How well the classifier reads images: per cell (empty ones included), per object, per image."""
    logits = torch.cat([net.logits(pixels[i : i + 256]) for i in range(0, len(pixels), 256)])
    pred = torch.stack([part.argmax(-1) for part in _split_logits(logits)], dim=-1)
    cell_right = (pred == targets).all(-1)
    occupied = targets[..., 0] > 0
    return {
        "cell_accuracy": float(cell_right.float().mean()),
        "object_accuracy": float(cell_right[occupied].float().mean()),
        "scene_accuracy": float(cell_right.all(-1).float().mean()),
    }


def train_feature_network(recipe: FeatureRecipe = DEFAULT_RECIPE) -> tuple[ShapesWorldFeatures, dict]:
    """Train the feature network by `recipe` on CPU; returns it (eval mode) and a report dict."""
    start = time.perf_counter()
    pixels, targets = _training_set(recipe)
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(recipe.seed)
        net = ShapesWorldFeatures(recipe)
    batches = torch.Generator().manual_seed(recipe.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.steps, pct_start=0.1)
    net.train()
    losses = []
    for _ in range(recipe.steps):
        idx = torch.randint(len(pixels), (recipe.batch_size,), generator=batches)
        loss = _loss(net.logits(pixels[idx]), targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    net.eval().requires_grad_(False)
    val_pixels, val_targets = _held_out_set(recipe)
    report = {
        "final_loss": float(np.mean(losses[-20:])),
        "val": read_accuracy(net, val_pixels, val_targets),
        "train_seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
    }
    return net, report


# ----------------------------------------------------------------------------- the cache


def cache_dir() -> Path:
    """Where feature networks are cached: `$UNIAR_CACHE/fid_sw`, else `~/.cache/uniar/fid_sw`."""
    root = os.environ.get("UNIAR_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "uniar") / "fid_sw"


def _paths(folder: Path, recipe: FeatureRecipe) -> tuple[Path, Path]:
    stem = folder / f"feature-net-{recipe.hash()}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _load_cached(folder: Path, recipe: FeatureRecipe) -> ShapesWorldFeatures | None:
    """The cached network of this recipe, or None when it is missing, stale or unreadable."""
    weights, info = _paths(folder, recipe)
    if not (weights.is_file() and info.is_file()):
        return None
    try:
        meta = read_json(info)
        state = load_safetensors(weights)
    except (OSError, ValueError, CheckpointError):
        return None
    if meta.get("recipe_hash") != recipe.hash() or meta.get("recipe") != dataclasses.asdict(recipe):
        return None
    net = ShapesWorldFeatures(recipe)
    try:
        net.load_state_dict(state)
    except RuntimeError:  # shapes or names do not fit: rebuild rather than guess
        return None
    return net.eval().requires_grad_(False)


def feature_network(
    train_if_missing: bool = True,
    recipe: FeatureRecipe = DEFAULT_RECIPE,
    cache: str | os.PathLike | None = None,
) -> ShapesWorldFeatures:
    """The ShapesWorld feature network of `recipe`: loaded from the cache, or trained and cached.

    `cache` overrides the cache folder (see `cache_dir`). With `train_if_missing=False` a missing
    network raises UserError instead of training one.
    """
    folder = Path(cache) if cache is not None else cache_dir()
    net = _load_cached(folder, recipe)
    if net is not None:
        return net
    if not train_if_missing:
        raise UserError(
            f"no ShapesWorld feature network for recipe {recipe.hash()} in {folder}; call "
            "uniar.eval.fid.feature_network() once to train and cache it (a minute or two on CPU)"
        )
    with torch.enable_grad():  # callers may be under no_grad (domain_fid is)
        net, report = train_feature_network(recipe)
    weights, info = _paths(folder, recipe)
    # Weights first, JSON last: a JSON file only exists beside complete weights.
    save_safetensors(weights, net.state_dict(), metadata={"recipe_hash": recipe.hash()})
    write_json(info, {"recipe": dataclasses.asdict(recipe), "recipe_hash": recipe.hash(), **report})
    return net


# ----------------------------------------------------------------------------- FID


def as_uint8_batch(images) -> torch.Tensor:
    """numpy uint8 (N, H, W, 3) or torch uint8 (N, 3, H, W) -> torch uint8 (N, 3, H, W)."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise UserError(f"expected numpy images (N, H, W, 3), got shape {images.shape}")
        images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise UserError("expected images as numpy uint8 (N, H, W, 3) or torch uint8 (N, 3, H, W)")
    if images.dtype != torch.uint8:
        raise UserError(f"expected uint8 images, got {images.dtype}; convert with uniar.data.images.to_uint8")
    return images


@torch.no_grad()
def domain_fid(real, fake, feature: nn.Module | None = None, batch_size: int = 256) -> float:
    """Fréchet distance between the features of two image sets (torchmetrics' FID).

    `real` and `fake`: uint8 images, numpy (N, H, W, 3) or torch (N, 3, H, W), at least 2 each.
    `feature`: any nn.Module mapping uint8 (B, 3, H, W) to (B, D); by default the cached
    ShapesWorld network (`feature_network()`), which makes this `fid_sw`.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = as_uint8_batch(real), as_uint8_batch(fake)
    if len(real) < 2 or len(fake) < 2:
        raise UserError(f"FID needs at least 2 images per set, got {len(real)} real and {len(fake)} fake")
    feature = feature if feature is not None else feature_network()
    device = next(feature.parameters(), torch.empty(0)).device  # run where the user put the network
    metric = FrechetInceptionDistance(feature=feature, normalize=False).to(device)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            metric.update(images[i : i + batch_size].to(device), real=is_real)
    return float(metric.compute())


def fid_sw(generated, split: str = "test", n_real: int | None = None, feature: nn.Module | None = None) -> float:
    """`fid_sw` of generated images against real renders of `split` (examples 0..n_real-1).

    Real images are rendered at the generated images' size; `n_real` defaults to the number of
    generated images, so the two sets weigh the same.
    """
    from uniar.data.shapesworld import images

    generated = as_uint8_batch(generated)
    size = generated.shape[-1]
    if generated.shape[-2] != size:
        raise UserError(f"ShapesWorld images are square; got {tuple(generated.shape[-2:])}")
    real = images(split, 0, n_real or len(generated), size)
    return domain_fid(real, generated, feature)
