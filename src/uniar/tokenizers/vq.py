"""The built-in VQ tokenizer: a conv autoencoder with an EMA codebook (UGen's discrete tokens).

Keeping a small codebook in use is the hard part of VQ training (feasibility.md §3: without
restarts fewer than 20 of 512 codes stayed alive). So:

- the codebook is not trained by gradients but follows the encodings assigned to it, as an
  exponential moving average (VQ-VAE-2 style), with Laplace smoothing of the counts;
- it is seeded by k-means++ on the encodings of a few hundred images when quantisation starts
  (after the plain-autoencoder warm-up of train_image.py, so the encodings already mean something);
- a code whose average use (EMA over ~1/(1-decay) steps) falls below `dead_threshold`
  assignments per step is restarted on an encoding of the current batch, drawn with probability
  proportional to its squared distance to the nearest code, so dead codes move to where the
  codebook serves the data worst;
- encodings and codes are l2-normalised (`l2_normalize`, as in ViT-VQGAN): the encoder cannot
  inflate its outputs away from the codes (an early run without it, and without LayerNorm, blew
  up), and the nearest code
  is the one with the highest cosine similarity, which spreads use over the codebook;
- the nearest-neighbour search always runs in fp32, outside autocast (bf16 distances tie and
  flip assignments).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from uniar.config import from_dict
from uniar.errors import UserError
from uniar.tokenizers.convnet import ConvDecoder, ConvEncoder, check_widths
from uniar.tokenizers.image import (
    ImageTokenizer, grid_to_tokens, load_weights, tokens_to_grid, write_folder,
)


@dataclass
class VQConfig:
    image_size: int = 64
    # Narrow: on this CPU [32, 64, 64, 64] ran ~3x the steps of [32, 64, 128, 256] and scored
    # better in the same 5 minutes (96% vs 91% exact on 300 test images).
    channels: list[int] = field(default_factory=lambda: [32, 64, 64, 64])
    encoder_blocks: list[int] = field(default_factory=lambda: [0, 0, 0, 2])
    decoder_blocks: list[int] = field(default_factory=lambda: [0, 0, 0, 2])
    codebook_size: int = 512
    code_dim: int = 64  # 5-min runs, 300 test images: dim 8 -> 42%, 32 -> 87%, 64 -> 91% exact
    commitment: float = 0.25  # weight of |z - sg(code)|^2 in the loss
    ema_decay: float = 0.99
    dead_threshold: float = 0.03  # restart codes used fewer times per step than this (EMA)
    l2_normalize: bool = True  # codes and encodings on the unit sphere
    layer_norm: bool = True  # LayerNorm in the conv nets' residual blocks
    # 3: every token sees the whole image; 1: a token sees its own patch (convnet.py). Folders
    # written before this field existed load as 3, the net they were trained with.
    encoder_token_kernel: int = 3

    def __post_init__(self) -> None:
        check_widths(self.channels, self.encoder_blocks, self.decoder_blocks)
        factor = 2 ** (len(self.channels) - 1)
        if self.image_size % factor:
            raise UserError(f"image_size {self.image_size} is not divisible by the down-sampling factor {factor}")
        if self.codebook_size < 2 or self.code_dim < 1:
            raise UserError("codebook_size must be >= 2 and code_dim >= 1")


def _squared_distances(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """(M, D), (K, D) -> (M, K) squared Euclidean distances, in fp32."""
    return (z.pow(2).sum(1, keepdim=True) - 2.0 * z @ codes.t() + codes.pow(2).sum(1)[None]).clamp_min(0.0)


class EMAQuantizer(nn.Module):
    """Nearest-code quantiser whose codebook is an EMA of the encodings assigned to each code."""

    def __init__(self, codebook_size: int, code_dim: int, decay: float, dead_threshold: float,
                 l2_normalize: bool = False):
        super().__init__()
        self.decay = decay
        self.dead_threshold = dead_threshold
        self.l2_normalize = l2_normalize
        self.register_buffer("codebook", torch.randn(codebook_size, code_dim) * 0.1)
        self.register_buffer("ema_count", torch.zeros(codebook_size))
        self.register_buffer("ema_sum", torch.zeros(codebook_size, code_dim))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    def prepare(self, z: torch.Tensor) -> torch.Tensor:
        """Encodings as the codebook sees them: fp32, on the unit sphere if `l2_normalize`."""
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            return F.normalize(z, dim=-1) if self.l2_normalize else z

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """(M, D) prepared encodings -> (M,) ids of the nearest codes (fp32, autocast off)."""
        with torch.autocast(z.device.type, enabled=False):
            return _squared_distances(z.float(), self.codebook.float()).argmin(1)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.codebook)

    @torch.no_grad()
    def initialise(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """k-means++ seeding of the codebook from encodings z (M, D), M >= 1."""
        z = z.float()
        k = self.codebook_size
        chosen = torch.empty(k, dtype=torch.long, device=z.device)
        chosen[0] = torch.randint(len(z), (1,), generator=generator, device=z.device)
        best = _squared_distances(z, z[chosen[:1]]).squeeze(1)
        for i in range(1, k):
            weights = best if best.sum() > 0 else torch.ones_like(best)
            chosen[i] = torch.multinomial(weights, 1, generator=generator)
            best = torch.minimum(best, _squared_distances(z, z[chosen[i:i + 1]]).squeeze(1))
        self.codebook.copy_(z[chosen])
        # Zero history: the first update sets each code to the mean of its encodings, and codes
        # that win too few of them are restarted at once instead of after a long decay.
        self.ema_sum.zero_()
        self.ema_count.zero_()
        self.initialised.fill_(True)

    @torch.no_grad()
    def update(self, z: torch.Tensor, ids: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """One training step's EMA update and dead-code restarts. z (M, D) fp32, ids (M,).

        Returns batch statistics: codes used, codebook perplexity, codes restarted.
        """
        z = z.float()
        k = self.codebook_size
        counts = torch.bincount(ids, minlength=k).float()
        sums = torch.zeros_like(self.ema_sum).index_add_(0, ids, z)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        eps = 1e-5
        smoothed = (self.ema_count + eps) / (total + k * eps) * total
        codebook = self.ema_sum / smoothed[:, None]
        self.codebook.copy_(F.normalize(codebook, dim=1) if self.l2_normalize else codebook)
        restarted = self.restart_dead(z, generator)
        return {"codes_used": int((counts > 0).sum()), "perplexity": perplexity(counts), "restarted": restarted}

    @torch.no_grad()
    def restart_dead(self, z: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Move codes used less than `dead_threshold` times per step onto badly served encodings."""
        dead = (self.ema_count < self.dead_threshold).nonzero().squeeze(1)
        if len(dead) == 0:
            return 0
        # clamp: sampling without replacement needs as many non-zero weights as picks
        weights = _squared_distances(z, self.codebook).min(1).values.clamp_min(1e-12)
        n = min(len(dead), len(z))
        dead = dead[:n]
        picks = torch.multinomial(weights, n, replacement=False, generator=generator)
        self.codebook[dead] = z[picks]
        # A short grace period: unused, a restarted code is dead again after ln(1.25)/(1-decay)
        # steps (~22 at decay 0.99). Longer ones left early collapses (1-3 codes in use) standing.
        restart_count = 1.25 * self.dead_threshold
        self.ema_count[dead] = restart_count
        self.ema_sum[dead] = z[picks] * restart_count
        return n


def perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of a code-use histogram: the effective number of codes in use."""
    p = counts.float() / counts.sum().clamp_min(1)
    p = p[p > 0]
    return float(math.exp(-(p * p.log()).sum().item()))


class VQTokenizer(ImageTokenizer):
    """Conv encoder -> nearest code (EMA codebook) -> conv decoder; S/8 x S/8 code ids per image."""

    type_name = "uniar_vq"
    kind = "discrete"

    def __init__(self, cfg: VQConfig | None = None):
        super().__init__()
        self.cfg = cfg or VQConfig()
        c = self.cfg
        self.image_size = c.image_size
        side = c.image_size // 2 ** (len(c.channels) - 1)
        self.grid = (side, side)
        self.codebook_size = c.codebook_size
        self.encoder = ConvEncoder(c.channels, c.encoder_blocks, c.code_dim, c.layer_norm, c.encoder_token_kernel)
        self.quantizer = EMAQuantizer(c.codebook_size, c.code_dim, c.ema_decay, c.dead_threshold, c.l2_normalize)
        self.decoder = ConvDecoder(c.channels, c.decoder_blocks, c.code_dim, c.layer_norm)

    # ---- inference -------------------------------------------------------------------------

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        z = self.quantizer.prepare(grid_to_tokens(self.encoder(images)))  # (B, N, D)
        return self.quantizer.nearest(z.reshape(-1, z.shape[-1])).view(z.shape[:2])

    def code_vectors(self) -> torch.Tensor:
        return self.quantizer.codebook.detach().clone()

    def _decode(self, ids: torch.Tensor) -> torch.Tensor:
        codes = self.quantizer.lookup(ids.long())  # (B, N, D)
        return self.decoder(tokens_to_grid(codes, self.grid))

    # ---- training --------------------------------------------------------------------------

    def forward(self, images: torch.Tensor, quantize: bool = True) -> dict:
        """Training pass: reconstruction from straight-through codes, ids, encodings, commitment loss.

        quantize=False decodes the encodings themselves (the plain-autoencoder warm-up).
        """
        z = self.quantizer.prepare(grid_to_tokens(self.encoder(images)))
        flat = z.reshape(-1, z.shape[-1])
        ids = self.quantizer.nearest(flat.detach())
        out = {"ids": ids.view(z.shape[:2]), "z": flat, "quantized": quantize}
        if quantize:
            codes = self.quantizer.lookup(ids).view_as(z)
            out["commit"] = F.mse_loss(z, codes.detach())
            out["aux_loss"] = self.cfg.commitment * out["commit"]
            z = z + (codes - z).detach()  # straight-through: the decoder sees codes, the encoder gets gradients
        else:
            out["aux_loss"] = torch.zeros((), device=z.device)
        out["recon"] = self.decoder(tokens_to_grid(z, self.grid))
        return out

    @torch.no_grad()
    def initialise_codebook(self, images: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Seed the codebook by k-means++ on the encodings of `images` (more images: better spread)."""
        z = self.quantizer.prepare(grid_to_tokens(self.encoder(images)))
        self.quantizer.initialise(z.reshape(-1, z.shape[-1]), generator)

    def after_step(self, out: dict, generator: torch.Generator | None = None) -> dict:
        """Codebook maintenance after an optimiser step (the codebook is not a parameter)."""
        if not out["quantized"]:
            return {}
        z, ids = out["z"].detach(), out["ids"].reshape(-1)
        return self.quantizer.update(z, ids, generator)

    # ---- files -----------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        write_folder(folder, {"type": self.type_name, "config": asdict(self.cfg)}, self.state_dict())

    @classmethod
    def from_folder(cls, folder: Path, config: dict) -> "VQTokenizer":
        model = cls(from_dict(VQConfig, config.get("config", {})))
        load_weights(model, folder)
        return model
