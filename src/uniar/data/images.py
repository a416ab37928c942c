"""Image tensor conventions shared by every module.

- A single image on disk or from the renderer: numpy uint8, (H, W, 3).
- A batch going into a model or tokenizer: torch float32, (B, 3, H, W), values in [-1, 1].
- A batch coming out for saving or scoring: torch uint8, (B, 3, H, W).
"""

from __future__ import annotations

import numpy as np
import torch


def to_model(images) -> torch.Tensor:
    """uint8 (B,H,W,3) numpy / (B,3,H,W) torch, or a list of (H,W,3) arrays -> float (B,3,H,W) in [-1,1]."""
    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(im) for im in images])
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (B, H, W, 3) uint8 images, got shape {images.shape}")
        images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    return images.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float (B,3,H,W) in [-1,1] -> uint8 (B,3,H,W), clamped and rounded."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def to_numpy_hwc(images: torch.Tensor) -> np.ndarray:
    """uint8 (B,3,H,W) torch -> numpy (B,H,W,3)."""
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    return images.permute(0, 2, 3, 1).cpu().numpy()
