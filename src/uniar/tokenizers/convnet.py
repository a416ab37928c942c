"""The convolutional encoder and decoder shared by the built-in VQ and KL tokenizers.

`channels[i]` is the width at resolution S / 2**i, so len(channels) - 1 stride-2 steps give a
down-sampling factor of 2**(len(channels) - 1) (8 for the default four widths: 64x64 -> 8x8).
`encoder_blocks[i]` / `decoder_blocks[i]` residual blocks run at each resolution.

`token_kernel` is the kernel of the encoder's residual convs at the token resolution. With 3, two
blocks at 6x6 let every token see the whole 48-px image: its code then mixes every object, and a
model reading the codes could name what is at a cell but not find an object by colour and shape
(docs/image_tokenizers.md). With 1 those blocks are per-token MLPs, and a token sees only its
patch and the down-sampling path's halo (24 px for 8-px tokens).

Residual blocks are pre-norm with a LayerNorm over channels (`layer_norm`), and start as the
identity (their last conv is zero-initialised). GroupNorm would cost ~40% of a training step on
this CPU in channels-last layout, the per-pixel LayerNorm ~10%; without any norm, training at a
useful learning rate blew up. Weights are kept channels-last, which oneDNN runs ~1.5x faster here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uniar.errors import UserError


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel of a (B, C, H, W) map (cheap in channels-last)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ResBlock(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))), starting as the identity."""

    def __init__(self, channels: int, layer_norm: bool = True, kernel: int = 3):
        super().__init__()
        make_norm = (lambda: ChannelNorm(channels)) if layer_norm else nn.Identity
        self.norm1, self.norm2 = make_norm(), make_norm()
        self.conv1 = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv (no checkerboard artefacts of transposed convs)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _out_norm(channels: int, layer_norm: bool) -> nn.Module:
    return ChannelNorm(channels) if layer_norm else nn.Identity()


def check_widths(channels, encoder_blocks, decoder_blocks) -> None:
    if len(channels) < 2:
        raise UserError(f"channels needs at least two widths (one per resolution), got {channels}")
    for name, blocks in (("encoder_blocks", encoder_blocks), ("decoder_blocks", decoder_blocks)):
        if len(blocks) != len(channels):
            raise UserError(f"{name} needs one entry per width in channels {channels}, got {blocks}")


class ConvEncoder(nn.Module):
    """(B, 3, S, S) -> (B, out_channels, S/f, S/f) with f = 2**(len(channels) - 1)."""

    def __init__(self, channels: list[int], blocks: list[int], out_channels: int, layer_norm: bool = True,
                 token_kernel: int = 3):
        super().__init__()
        if token_kernel not in (1, 3):
            raise UserError(f"encoder_token_kernel must be 1 or 3, got {token_kernel}")
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, padding=1)]
        for i, width in enumerate(channels):
            kernel = token_kernel if i == len(channels) - 1 else 3
            layers += [ResBlock(width, layer_norm, kernel) for _ in range(blocks[i])]
            if i + 1 < len(channels):
                layers.append(nn.Conv2d(width, channels[i + 1], 4, stride=2, padding=1))
        layers += [_out_norm(channels[-1], layer_norm), nn.SiLU(), nn.Conv2d(channels[-1], out_channels, 1)]
        self.layers = nn.Sequential(*layers)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.contiguous(memory_format=torch.channels_last))


class ConvDecoder(nn.Module):
    """(B, in_channels, S/f, S/f) -> (B, 3, S, S), unbounded (the loss pulls it into [-1, 1])."""

    def __init__(self, channels: list[int], blocks: list[int], in_channels: int, layer_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[-1], 3, padding=1)]
        for i in reversed(range(len(channels))):
            layers += [ResBlock(channels[i], layer_norm) for _ in range(blocks[i])]
            if i > 0:
                layers.append(Upsample(channels[i], channels[i - 1]))
        layers += [_out_norm(channels[0], layer_norm), nn.SiLU(), nn.Conv2d(channels[0], 3, 3, padding=1)]
        self.layers = nn.Sequential(*layers)
        self.to(memory_format=torch.channels_last)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z.contiguous(memory_format=torch.channels_last))
