"""The image tokenizer interface shared by both model families, and the loader.

An image tokenizer turns a batch of images, float (B, 3, S, S) in [-1, 1], into tokens and back:

- discrete (`kind == "discrete"`, UGen): `encode` gives code ids, LongTensor (B, N), raster order;
  `codebook_size` says how many ids there are.
- continuous (`kind == "continuous"`, UniFluid): `encode` gives *normalised* latent vectors,
  FloatTensor (B, N, D), raster order; `token_dim` is D. `decode` undoes the normalisation.

N = `num_tokens` = h * w, where (h, w) = `grid`. Both verbs run without gradients.

A tokenizer folder holds `config.json` (with a "type" field) and `model.safetensors`;
`load_image_tokenizer(folder)` reads any of them back, and also reads a plain diffusers
`VQModel` / `AutoencoderKL` folder (its `config.json` names the class in `_class_name`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from uniar.errors import CheckpointError, UserError
from uniar.utils.io import read_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# Small slack on the [-1, 1] range: resampling and float rounding can overshoot a little.
_RANGE_SLACK = 1e-3


class ImageTokenizer(nn.Module):
    """Base class: subclasses set the attributes below and implement `_encode` / `_decode`."""

    kind: str  # "discrete" | "continuous"
    image_size: int
    grid: tuple[int, int]
    codebook_size: int | None = None  # discrete only
    token_dim: int | None = None  # continuous only

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def encode(self, images: torch.Tensor, **kwargs) -> torch.Tensor:
        """float (B,3,S,S) in [-1,1] -> ids (B,N) long, or normalised latents (B,N,D) float."""
        self.check_images(images)
        return self._encode(images.to(self.device, torch.float32), **kwargs)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens as `encode` returns them -> float images (B,3,S,S) in [-1,1]."""
        self.check_tokens(tokens)
        return self._decode(tokens.to(self.device)).float().clamp(-1.0, 1.0)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """decode(encode(images)): what the tokens keep of the images."""
        return self.decode(self.encode(images))

    def code_vectors(self) -> torch.Tensor:
        """Discrete tokenizers: the (codebook_size, code_dim) vector each code id stands for."""
        raise UserError(f"{type(self).__name__} has no codebook to read code vectors from")

    def _encode(self, images: torch.Tensor, **kwargs) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def save(self, folder: str | Path) -> None:
        """Write `config.json` (with "type") and `model.safetensors` into `folder`, atomically."""
        raise NotImplementedError

    # ---- input checks: every public entry point says exactly what is wrong -------------------

    def check_images(self, images) -> None:
        if not isinstance(images, torch.Tensor):
            raise UserError(
                f"images must be a torch tensor (B, 3, {self.image_size}, {self.image_size}), got "
                f"{type(images).__name__}; convert uint8 arrays with uniar.data.images.to_model"
            )
        want = (3, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise UserError(
                f"images must have shape (B, {', '.join(map(str, want))}), got {tuple(images.shape)}; "
                f"this tokenizer works on {self.image_size}x{self.image_size} RGB images, channels first"
            )
        if not images.is_floating_point():
            raise UserError(
                f"images must be float in [-1, 1], got dtype {images.dtype}; "
                "convert uint8 images with uniar.data.images.to_model"
            )
        if images.numel():
            lo, hi = images.min().item(), images.max().item()
            if lo < -1 - _RANGE_SLACK or hi > 1 + _RANGE_SLACK:
                raise UserError(
                    f"image values must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}]; "
                    "convert uint8 images with uniar.data.images.to_model"
                )

    def check_tokens(self, tokens) -> None:
        if not isinstance(tokens, torch.Tensor):
            raise UserError(f"tokens must be a torch tensor, got {type(tokens).__name__}")
        n = self.num_tokens
        if self.kind == "discrete":
            if tokens.ndim != 2 or tokens.shape[1] != n or tokens.is_floating_point():
                raise UserError(
                    f"discrete tokens must be integer ids of shape (B, {n}), "
                    f"got {tokens.dtype} {tuple(tokens.shape)}"
                )
            if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.codebook_size):
                raise UserError(
                    f"token ids must lie in [0, {self.codebook_size}), "
                    f"got [{tokens.min().item()}, {tokens.max().item()}]"
                )
        else:
            d = self.token_dim
            if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (n, d) or not tokens.is_floating_point():
                raise UserError(
                    f"continuous tokens must be float of shape (B, {n}, {d}), "
                    f"got {tokens.dtype} {tuple(tokens.shape)}"
                )


# ---- grid <-> token sequence (raster order: row by row, left to right) ----------------------

def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B, h*w, D)."""
    return x.flatten(2).transpose(1, 2)


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, D) -> (B, D, h, w)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


# ---- folders -----------------------------------------------------------------------------------

def write_folder(folder: str | Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write a tokenizer folder: weights first, then the config (each file atomically)."""
    from uniar.utils.io import save_safetensors, write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(folder / WEIGHTS_FILE, tensors)
    write_json(folder / CONFIG_FILE, config)


def load_weights(module: nn.Module, folder: str | Path) -> None:
    """Load `model.safetensors` of `folder` into `module`; missing or extra tensors are an error."""
    from uniar.utils.io import load_safetensors

    state = load_safetensors(Path(folder) / WEIGHTS_FILE)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"the weights in {Path(folder) / WEIGHTS_FILE} do not fit the model its config.json "
            f"describes ({str(err).splitlines()[0]} ...); the folder is mixed up or corrupt"
        ) from err


# ---- loading -----------------------------------------------------------------------------------

def _loaders() -> dict[str, Callable[[Path, dict], ImageTokenizer]]:
    # Imported here so that `import uniar.tokenizers.image` stays light (no diffusers import).
    from uniar.tokenizers import diffusers_adapters, kl, vq

    return {
        vq.VQTokenizer.type_name: vq.VQTokenizer.from_folder,
        kl.KLTokenizer.type_name: kl.KLTokenizer.from_folder,
        diffusers_adapters.DiffusersVQTokenizer.type_name: diffusers_adapters.DiffusersVQTokenizer.from_folder,
        diffusers_adapters.DiffusersKLTokenizer.type_name: diffusers_adapters.DiffusersKLTokenizer.from_folder,
    }


def read_config(folder: str | Path) -> dict:
    """The `config.json` of a tokenizer folder, or a CheckpointError that says what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"image tokenizer folder not found: {folder}. Train one with `uniar train-tokenizer vq|kl "
            "--out DIR`, or point to a local diffusers VQModel / AutoencoderKL folder"
        )
    path = folder / CONFIG_FILE
    if not path.is_file():
        hint = [p.name for p in folder.iterdir() if (p / CONFIG_FILE).is_file()]
        extra = f" (its subfolders {hint} have one: point to the right one)" if hint else ""
        raise CheckpointError(f"{folder} has no {CONFIG_FILE}; it is not an image tokenizer folder{extra}")
    try:
        cfg = read_json(path)
    except ValueError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); re-save the tokenizer") from err
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return cfg


def load_image_tokenizer(folder: str | Path, device: str | torch.device = "cpu") -> ImageTokenizer:
    """Load any image tokenizer folder (built-in vq / kl, or a diffusers VQModel / AutoencoderKL)."""
    folder = Path(folder)
    cfg = read_config(folder)
    loaders = _loaders()
    if "type" in cfg:
        kind = cfg["type"]
    elif cfg.get("_class_name") == "VQModel":
        kind = "diffusers_vq"
    elif cfg.get("_class_name") == "AutoencoderKL":
        kind = "diffusers_kl"
    else:
        raise CheckpointError(
            f"{folder / CONFIG_FILE} names no known image tokenizer (type={cfg.get('type')!r}, "
            f"_class_name={cfg.get('_class_name')!r}); known types: {', '.join(loaders)}"
        )
    if kind not in loaders:
        raise CheckpointError(f"unknown image tokenizer type {kind!r} in {folder}; known: {', '.join(loaders)}")
    tokenizer = loaders[kind](folder, cfg)
    return tokenizer.to(device).eval()
