"""Where derived artefacts (encoded image pools, the FID feature network) are cached."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch


def cache_dir(*parts: str) -> Path:
    """$UNIAR_CACHE (default ~/.cache/uniar) joined with `parts`, created on demand."""
    root = Path(os.environ.get("UNIAR_CACHE", Path.home() / ".cache" / "uniar"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def module_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a module's weights and buffers: changes whenever any of them does."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
