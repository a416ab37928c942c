"""A pool of ShapesWorld training images, encoded once by an image tokenizer and cached.

Training draws examples from indices [0, size) of a split. Rendering and tokenizing each image at
every step would cost more than the model's own step on this CPU, so the images (each example's
image and its edit target) are encoded once and kept as a safetensors file under
$UNIAR_CACHE/pools/, keyed by the tokenizer's weights, the split, the size and the image size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from uniar.data.images import to_model
from uniar.data.shapesworld import get_example
from uniar.data.shapesworld.render import render_batch
from uniar.utils.cache import cache_dir, module_fingerprint
from uniar.utils.io import load_safetensors, save_safetensors


@dataclass
class ImagePool:
    """Encoded tokens of example images: `source[i]` for example i, `target[i]` for its edit target.

    Discrete tokenizers give int codes (n, N); continuous ones give float latents (n, N, D).
    """

    split: str
    source: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return self.source.shape[0]


@torch.no_grad()
def encode_images(tokenizer, images_uint8: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    out = []
    for i in range(0, len(images_uint8), batch_size):
        out.append(tokenizer.encode(to_model(images_uint8[i:i + batch_size])))
    return torch.cat(out)


def build_pool(tokenizer, split: str, size: int, image_size: int, max_objects: int,
               progress: bool = True, use_cache: bool = True) -> ImagePool:
    key = f"{split}-{size}-{image_size}-{max_objects}-{tokenizer.kind}-{module_fingerprint(tokenizer)}"
    path = cache_dir("pools") / f"{key}.safetensors"
    if use_cache and path.is_file():
        t = load_safetensors(path)
        return ImagePool(split, t["source"], t["target"])
    sources, targets = [], []
    chunk = 1024
    bar = tqdm(total=size, desc=f"encoding {split} image pool", disable=not progress, unit="img")
    for start in range(0, size, chunk):
        exs = [get_example(split, i, max_objects) for i in range(start, min(size, start + chunk))]
        sources.append(encode_images(tokenizer, render_batch([e.scene for e in exs], image_size)))
        targets.append(encode_images(tokenizer, render_batch([e.edit.target for e in exs], image_size)))
        bar.update(len(exs))
    bar.close()
    pool = ImagePool(split, _compact(torch.cat(sources)), _compact(torch.cat(targets)))
    if use_cache:
        save_safetensors(path, {"source": pool.source, "target": pool.target})
    return pool


def _compact(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point():
        return t.to(torch.bfloat16)  # latents: half the memory, ample precision for inputs/targets
    return t.to(torch.int32)
