"""The built-in KL-VAE tokenizer (UniFluid's continuous tokens) and latent normalisation.

Latent width: 16 channels by default. feasibility-continuous.md measured the continuous AR path
with 16 and 32 dims per token: equal teacher-forced accuracy, but free-running sampling was much
better with 16 (per-dim standardisation gives every extra high-frequency dim equal loss weight
and adds input noise); and a linear 16-dim code of 8x8 patches (PCA-16) already lets the parser
read 99% of scenes back, so a trained nonlinear 16-dim code has room to spare.

The KL term is small (`kl_weight` on the mean per-element KL, against the mean per-pixel
reconstruction loss): it only keeps the posterior from turning into a point mass, so the decoder
learns to tolerate small latent errors, which is what a diffusion head will make. (The prototype's
KL-VAE diverged near step 1100 at a constant Adam lr of 1e-3; here the log-variance is clamped,
the residual blocks are normalised, and training uses warm-up, cosine decay and gradient
clipping: no divergence was seen.) Tokens handed to models are normalised
(`normalize`): `per_dim` (default; zero mean, unit std per channel), `global` (one mean and std
over all channels), or `none`. The statistics are measured on training images after training
(`fit_normalization`) and saved with the weights, so switching mode needs no retraining.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import torch
from torch import nn

from uniar.config import from_dict
from uniar.errors import UserError
from uniar.tokenizers.convnet import ConvDecoder, ConvEncoder, check_widths
from uniar.tokenizers.image import (
    ImageTokenizer, grid_to_tokens, load_weights, tokens_to_grid, write_folder,
)

NORMALIZE_MODES = ("per_dim", "global", "none")
LOGVAR_RANGE = (-30.0, 20.0)  # as in Stable Diffusion's VAE: keeps exp(logvar) finite in any dtype


@dataclass
class KLConfig:
    image_size: int = 64
    # the VQ's narrow net (see vq.py); the KL is the easier of the two (100% exact after 5 min)
    channels: list[int] = field(default_factory=lambda: [32, 64, 64, 64])
    encoder_blocks: list[int] = field(default_factory=lambda: [0, 0, 0, 2])
    decoder_blocks: list[int] = field(default_factory=lambda: [0, 0, 0, 2])
    latent_channels: int = 16
    kl_weight: float = 1e-5
    normalize: Literal["per_dim", "global", "none"] = "per_dim"
    layer_norm: bool = True  # LayerNorm in the conv nets' residual blocks
    # 3: every token sees the whole image; 1: a token sees its own patch (convnet.py). Folders
    # written before this field existed load as 3, the net they were trained with.
    encoder_token_kernel: int = 3

    def __post_init__(self) -> None:
        check_widths(self.channels, self.encoder_blocks, self.decoder_blocks)
        factor = 2 ** (len(self.channels) - 1)
        if self.image_size % factor:
            raise UserError(f"image_size {self.image_size} is not divisible by the down-sampling factor {factor}")
        if self.latent_channels < 1:
            raise UserError("latent_channels must be >= 1")
        check_mode(self.normalize)


def check_mode(mode: str) -> None:
    if mode not in NORMALIZE_MODES:
        raise UserError(f"unknown latent normalisation {mode!r}; choose one of {', '.join(NORMALIZE_MODES)}")


class LatentStats:
    """Running per-channel mean and std of latents (B, C, h, w), in float64."""

    def __init__(self, channels: int):
        self.n = 0
        self.sum = torch.zeros(channels, dtype=torch.float64)
        self.sum_sq = torch.zeros(channels, dtype=torch.float64)

    def add(self, z: torch.Tensor) -> None:
        z = z.detach().double().cpu().transpose(0, 1).reshape(z.shape[1], -1)
        self.n += z.shape[1]
        self.sum += z.sum(1)
        self.sum_sq += z.pow(2).sum(1)

    def result(self) -> dict[str, torch.Tensor]:
        if self.n < 2:
            raise UserError("need at least two latent positions to measure normalisation statistics")
        mean = self.sum / self.n
        var = (self.sum_sq / self.n - mean.pow(2)).clamp_min(0)
        g_mean = self.sum.sum() / (self.n * len(mean))
        g_var = (self.sum_sq.sum() / (self.n * len(mean)) - g_mean.pow(2)).clamp_min(0)
        return {"channel_mean": mean.float(), "channel_std": var.sqrt().clamp_min(1e-6).float(),
                "global_mean": g_mean.reshape(1).float(), "global_std": g_var.sqrt().clamp_min(1e-6).reshape(1).float()}


class LatentNormalizer(nn.Module):
    """Maps raw latents to model tokens and back. Statistics are NaN until measured or given."""

    def __init__(self, channels: int, mode: str):
        super().__init__()
        check_mode(mode)
        self.mode = mode
        nan = float("nan")
        self.register_buffer("channel_mean", torch.full((channels,), nan))
        self.register_buffer("channel_std", torch.full((channels,), nan))
        self.register_buffer("global_mean", torch.full((1,), nan))
        self.register_buffer("global_std", torch.full((1,), nan))

    def set_stats(self, stats: dict[str, torch.Tensor]) -> None:
        for name, value in stats.items():
            getattr(self, name).copy_(value)

    def _shift_scale(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "per_dim":
            mean, std = self.channel_mean, self.channel_std
        else:
            mean, std = self.global_mean, self.global_std
        if torch.isnan(mean).any() or torch.isnan(std).any():
            raise UserError(
                f"latent normalisation {self.mode!r} has no statistics yet; compute them with "
                "fit_normalization(images) (train-tokenizer does this), or set normalize='none'"
            )
        shape = (1, -1, 1, 1)
        return mean.to(z).view(shape), std.to(z).view(shape)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) raw latents -> normalised."""
        if self.mode == "none":
            return z
        mean, std = self._shift_scale(z)
        return (z - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return z
        mean, std = self._shift_scale(z)
        return z * std + mean


def fit_normalization(tokenizer, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Measure per-channel and global latent statistics (of posterior means) over image batches.

    `tokenizer` is any continuous tokenizer with `raw_latents(images)` and a `normalizer`; the
    statistics are stored in it (and saved with it) and returned.
    """
    stats = LatentStats(tokenizer.token_dim)
    with torch.no_grad():
        for images in batches:
            tokenizer.check_images(images)
            stats.add(tokenizer.raw_latents(images.to(tokenizer.device, torch.float32)))
    result = stats.result()
    tokenizer.normalizer.set_stats(result)
    return result


class KLTokenizer(ImageTokenizer):
    """Conv encoder -> diagonal Gaussian posterior -> conv decoder; S/8 x S/8 tokens of `latent_channels`."""

    type_name = "uniar_kl"
    kind = "continuous"

    def __init__(self, cfg: KLConfig | None = None):
        super().__init__()
        self.cfg = cfg or KLConfig()
        c = self.cfg
        self.image_size = c.image_size
        side = c.image_size // 2 ** (len(c.channels) - 1)
        self.grid = (side, side)
        self.token_dim = c.latent_channels
        self.encoder = ConvEncoder(c.channels, c.encoder_blocks, 2 * c.latent_channels, c.layer_norm, c.encoder_token_kernel)
        self.decoder = ConvDecoder(c.channels, c.decoder_blocks, c.latent_channels, c.layer_norm)
        self.normalizer = LatentNormalizer(c.latent_channels, c.normalize)

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance (B, C, h, w), fp32."""
        mean, logvar = self.encoder(images).float().chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def raw_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Un-normalised posterior means (B, C, h, w): what the normalisation statistics describe."""
        return self.posterior(images)[0]

    # ---- inference -------------------------------------------------------------------------

    def _encode(self, images: torch.Tensor, sample: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised tokens (B, N, C): the posterior mean, or a sample if `sample`."""
        mean, logvar = self.posterior(images)
        z = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device)
            z = mean + (0.5 * logvar).exp() * noise
        return grid_to_tokens(self.normalizer.normalize(z))

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        z = self.normalizer.denormalize(tokens_to_grid(tokens.float(), self.grid))
        return self.decoder(z)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean. Skips the normalisation (a no-op round trip), so it also
        works before the statistics are measured, as during training."""
        self.check_images(images)
        z = self.raw_latents(images.to(self.device, torch.float32))
        return self.decoder(z).float().clamp(-1.0, 1.0)

    # ---- training --------------------------------------------------------------------------

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """Training pass: decode a posterior sample; KL to N(0, I) averaged per latent element."""
        mean, logvar = self.posterior(images)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        z = mean + (0.5 * logvar).exp() * noise
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        recon = self.decoder(z)
        return {"recon": recon, "aux_loss": self.cfg.kl_weight * kl, "kl": kl,
                "posterior_std": (0.5 * logvar).exp().mean()}

    def fit_normalization(self, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
        return fit_normalization(self, batches)

    @property
    def normalize(self) -> str:
        return self.normalizer.mode

    @normalize.setter
    def normalize(self, mode: str) -> None:
        check_mode(mode)
        self.normalizer.mode = mode
        self.cfg.normalize = mode

    # ---- files -----------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        write_folder(folder, {"type": self.type_name, "config": asdict(self.cfg)}, self.state_dict())

    @classmethod
    def from_folder(cls, folder: Path, config: dict) -> "KLTokenizer":
        model = cls(from_dict(KLConfig, config.get("config", {})))
        load_weights(model, folder)
        return model
