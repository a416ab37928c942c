"""Understanding encoders: how UniFluid reads an image it is asked about (UND role).

Generated images enter the backbone as continuous VAE tokens; images to be *understood* go through a
separate encoder (UniFluid uses SigLIP), whose features a projector maps to the backbone width:

    builtin   a small conv encoder trained from scratch with the model (tiny CPU presets)
    siglip    a pretrained SigLIP vision tower from a local folder (transformers), frozen by default
    vae       the image's own continuous tokens, the same as generation reads (an ablation)

Every encoder maps a batch of images to (K, num_tokens, out_dim) features on a square grid. An
optional patch merger (`merge` k, as Qwen2-VL's 2x2 merger) turns each k x k block of neighbouring
features into one token of k²·out_dim before the projector; the tokens left are the sequence
builder's `und_len`. Pixel encoders read `ImageData.pixels`, float (3, S, S) in [-1, 1];
the vae encoder reads `ImageData.latents` (N, D).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from uniar.errors import UserError

UND_ENCODERS = ("builtin", "siglip", "vae")
PROJECTORS = ("linear", "mlp", "gen")  # gen: vae only, read through UniFluid's generation input projection


@dataclass
class BuiltinEncoderConfig:
    """The built-in conv encoder: one stride-2 conv per entry of `channels`.

    A 64 px image and 3 entries give an 8 x 8 grid: 64 tokens of channels[-1] features.
    """

    channels: list[int] = field(default_factory=lambda: [32, 64, 128])


class BuiltinImageEncoder(nn.Module):
    """Stride-2 3x3 convs with GELU, a 3x3 residual conv at the final grid (no normalisation layers,
    as the built-in tokenizers: GroupNorm is slow on CPU), and a learned position embedding per grid
    cell: (K, 3, S, S) -> (K, (S / 2^n)^2, channels[-1])."""

    reads = "pixels"

    def __init__(self, image_size: int, cfg: BuiltinEncoderConfig):
        super().__init__()
        if not cfg.channels or any(c < 1 for c in cfg.channels):
            raise UserError(f"builtin encoder channels must be positive integers, got {cfg.channels}")
        factor = 2 ** len(cfg.channels)
        if image_size % factor:
            raise UserError(f"builtin encoder: image size {image_size} is not divisible by 2^{len(cfg.channels)} "
                            f"(one halving per entry of channels {cfg.channels}); use fewer channels")
        self.image_size = image_size
        self.grid = image_size // factor
        layers, c_in = [], 3
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GELU()]
            c_in = c
        self.down = nn.Sequential(*layers)
        self.mix = nn.Conv2d(c_in, c_in, 3, padding=1)
        nn.init.zeros_(self.mix.weight)  # the residual conv starts as the identity
        nn.init.zeros_(self.mix.bias)
        self.out_dim = c_in
        self.num_tokens = self.grid * self.grid
        self.pos = nn.Parameter(torch.randn(self.num_tokens, c_in) * 0.02)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        check_pixels(pixels, self.image_size)
        x = self.down(pixels)
        x = x + self.mix(F.gelu(x))
        return x.flatten(2).transpose(1, 2) + self.pos


class SiglipImageEncoder(nn.Module):
    """A SigLIP vision tower (transformers `SiglipVisionModel`) from a local folder.

    SigLIP's preprocessing maps pixels to [-1, 1] (mean 0.5, std 0.5), which is already the
    project's convention; images of another size are resized (bilinear, antialiased) to the tower's
    `image_size`. Features are the last hidden state (after SigLIP's final LayerNorm), one per patch;
    the attention-pooling head is not built. Frozen by default (eval mode, no gradients).
    """

    reads = "pixels"

    def __init__(self, vision_model: nn.Module, trainable: bool = False):
        super().__init__()
        self.model = vision_model
        cfg = vision_model.config
        self.image_size = cfg.image_size
        self.num_tokens = (cfg.image_size // cfg.patch_size) ** 2
        self.out_dim = cfg.hidden_size
        self.trainable = trainable
        if not trainable:
            self.model.requires_grad_(False)
            self.model.eval()

    @classmethod
    def from_folder(cls, folder: str | Path, trainable: bool = False) -> "SiglipImageEncoder":
        """Load the vision tower of a local SigLIP folder (a SiglipModel or SiglipVisionModel checkpoint)."""
        from transformers import SiglipVisionModel

        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise UserError(f"SigLIP folder not found or without config.json: {folder}; download a SigLIP "
                            "checkpoint (e.g. google/siglip-so400m-patch14-384) on a machine with network "
                            "access and set model.unifluid.siglip_path to its local folder")
        if not any(folder.glob("*.safetensors")):
            raise UserError(f"{folder} has no *.safetensors weights (pickle weights are not loaded); "
                            "re-save it with save_pretrained(..., safe_serialization=True)")
        try:
            model, info = SiglipVisionModel.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=True, vision_use_head=False,
                output_loading_info=True)
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"cannot load a SigLIP vision model from {folder}: {err}") from err
        if info.get("missing_keys"):
            raise UserError(f"{folder} lacks SigLIP weights for {len(info['missing_keys'])} tensors "
                            f"(e.g. {info['missing_keys'][:3]}); they would be random")
        return cls(model, trainable)

    @classmethod
    def from_config_dict(cls, config: dict, trainable: bool = False) -> "SiglipImageEncoder":
        """The architecture only (random weights), for loading a uniar checkpoint's weights into."""
        from transformers import SiglipVisionConfig, SiglipVisionModel

        config = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version")}
        return cls(SiglipVisionModel(SiglipVisionConfig(**{**config, "vision_use_head": False})), trainable)

    def config_dict(self) -> dict:
        return self.model.config.to_dict()

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trainable:
            self.model.eval()  # a frozen tower stays in inference mode
        return self

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        check_pixels(pixels, None)
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            pixels = F.interpolate(pixels.float(), size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            out = self.model(pixel_values=pixels.to(next(self.model.parameters()).dtype))
        return out.last_hidden_state


class LatentImageEncoder(nn.Module):
    """The `vae` choice: an image is read as its continuous VAE tokens (N, D), the same as generation."""

    reads = "latents"

    def __init__(self, num_tokens: int, token_dim: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.out_dim = token_dim

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 3 or latents.shape[1:] != (self.num_tokens, self.out_dim):
            raise UserError(f"vae understanding encoder: latents must be (K, {self.num_tokens}, {self.out_dim}), "
                            f"got {tuple(latents.shape)}")
        return latents.float()


def merge_neighbours(feats: torch.Tensor, k: int, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """(..., h*w, D) features in raster order on an h x w grid (square when `grid` is None) ->
    (..., h*w/k², k²·D): each k x k block of neighbours concatenated into one token, blocks in raster order."""
    if k == 1:
        return feats
    n, d = feats.shape[-2], feats.shape[-1]
    h, w = grid or (math.isqrt(n),) * 2
    lead = feats.shape[:-2]
    x = feats.reshape(*lead, h // k, k, w // k, k, d).movedim(-4, -3)  # (..., h/k, w/k, k, k, D)
    return x.reshape(*lead, (h // k) * (w // k), k * k * d)


def make_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """Encoder features -> backbone width: one linear layer, or LLaVA's Linear-GELU-Linear (or, for
    `gen`, nothing here: UniFluid applies its generation input projection)."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    if kind == "gen":  # no projector of its own: the model maps the tokens as it maps generated ones
        return nn.Identity()
    raise UserError(f"unknown projector {kind!r}; choose one of {', '.join(PROJECTORS)}")


class UnderstandingEncoder(nn.Module):
    """An image encoder, its patch merger and its projector: a list of images -> (K, num_tokens, hidden_size)."""

    def __init__(self, encoder: nn.Module, hidden_size: int, projector: str = "mlp", merge: int = 1):
        super().__init__()
        g = math.isqrt(encoder.num_tokens)
        if merge < 1 or (merge > 1 and (g * g != encoder.num_tokens or g % merge)):
            raise UserError(f"model.unifluid.und_merge={merge}: the understanding encoder gives "
                            f"{encoder.num_tokens} tokens; merging k x k neighbours needs a square grid whose "
                            "side k divides (und_merge 1 turns merging off)")
        self.encoder = encoder
        self.merge = merge
        self.projector = make_projector(projector, encoder.out_dim * merge * merge, hidden_size)
        self.encoder_tokens = encoder.num_tokens
        self.num_tokens = encoder.num_tokens // (merge * merge)
        self.reads = encoder.reads

    def forward(self, images: list, device: torch.device, prepare=None) -> torch.Tensor:
        """images: ImageData of each image to read, in order. Returns (K, num_tokens, hidden).

        `prepare` maps stacked latents to the model's tokens (UniFluid's token grouping), for `vae`.
        """
        inputs = torch.stack([self._input(im, i) for i, im in enumerate(images)]).to(device)
        if prepare is not None and self.reads == "latents":
            inputs = prepare(inputs)
        feats = self.encoder(inputs)
        if feats.shape[1] != self.encoder_tokens:
            raise UserError(f"understanding encoder gave {feats.shape[1]} tokens per image, expected "
                            f"{self.encoder_tokens}")
        return self.projector(merge_neighbours(feats, self.merge))

    def _input(self, image, i: int) -> torch.Tensor:
        value = getattr(image, self.reads)
        if value is None:
            raise UserError(
                f"image {i} to be understood has no {self.reads}: this model's understanding encoder reads "
                f"{self.reads} (ImageData.{self.reads}); Pipeline.encode_image and the training data fill them")
        return torch.as_tensor(value).float()


def check_pixels(pixels: torch.Tensor, size: int | None) -> None:
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise UserError(f"pixels must be (K, 3, S, S), got {tuple(pixels.shape)}")
    if size is not None and tuple(pixels.shape[-2:]) != (size, size):
        raise UserError(f"this understanding encoder reads {size}x{size} images, got "
                        f"{pixels.shape[-1]}x{pixels.shape[-2]}")


def build_und_encoder(kind: str, *, hidden_size: int, projector: str, image_size: int, gen_len: int,
                      token_dim: int, builtin: BuiltinEncoderConfig | None = None, siglip_path: str = "",
                      siglip_config: dict | None = None, siglip_trainable: bool = False,
                      merge: int = 1) -> UnderstandingEncoder:
    """The understanding encoder `kind` (builtin | siglip | vae) with its projector to `hidden_size`.

    siglip: loaded from `siglip_path` when that folder exists; else built from `siglip_config` (the
    architecture a checkpoint recorded; its weights then come from the checkpoint).
    """
    if kind == "builtin":
        encoder = BuiltinImageEncoder(image_size, builtin or BuiltinEncoderConfig())
    elif kind == "siglip":
        if siglip_path and Path(siglip_path).expanduser().is_dir():
            encoder = SiglipImageEncoder.from_folder(siglip_path, siglip_trainable)
        elif siglip_config:
            encoder = SiglipImageEncoder.from_config_dict(siglip_config, siglip_trainable)
        elif siglip_path:
            encoder = SiglipImageEncoder.from_folder(siglip_path, siglip_trainable)  # raises: not found
        else:
            raise UserError("und_encoder 'siglip' needs model.unifluid.siglip_path: a local SigLIP folder")
    elif kind == "vae":
        encoder = LatentImageEncoder(gen_len, token_dim)
    else:
        raise UserError(f"unknown understanding encoder {kind!r}; choose one of {', '.join(UND_ENCODERS)}")
    return UnderstandingEncoder(encoder, hidden_size, projector, merge)
