"""The per-token diffusion head: MAR's SimpleMLP-AdaLN with its training loss and its sampler.

The backbone gives one condition vector per image token; this small MLP models p(token | condition)
by denoising (Li et al. 2024, "Autoregressive Image Generation without Vector Quantization").

    head = DiffusionHead(DiffusionHeadConfig(token_dim=16, cond_dim=256))
    loss = head.loss(hidden, tokens, mask)                        # training
    tokens = head.sample(hidden, generator, cfg_scale=2.0, uncond=hidden_u)   # generation

Where it differs from MAR's code: MAR outputs 2·token_dim channels and also learns the reverse
variance with a VLB term; this head predicts eps (or v) only and samples with the fixed posterior
variance, which the feasibility study found sufficient. Its block LayerNorms have no affine
parameters (the adaLN shift and scale take that role). Sampling adds x0 clipping with eps
recomputed, which removed the t≈T blow-up of eps models on this project's latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from uniar.errors import UserError
from uniar.models.diffusion.schedule import PREDICTIONS, SCHEDULES, DiffusionSchedule


@dataclass
class DiffusionHeadConfig:
    """Shape, schedule and sampling defaults of a diffusion head (`sample` can override the sampling fields)."""

    token_dim: int = 16  # channels of one continuous image token
    cond_dim: int = 256  # hidden size of the backbone that conditions the head
    width: int = 256
    depth: int = 3  # residual adaLN blocks
    num_train_steps: int = 1000
    schedule: Literal["cosine", "linear"] = "cosine"
    prediction: Literal["eps", "v"] = "eps"
    timesteps_per_token: int = 4  # MAR's diffusion_batch_mul: independent (t, noise) draws per token per step
    sample_steps: int = 50  # respaced reverse steps
    sampler: Literal["ddpm", "ddim"] = "ddpm"
    ddim_eta: float = 0.0
    temperature: float = 1.0  # scales the noise each reverse step adds (MAR's τ); not the initial noise
    clip_x0: float | None = 8.0  # clip predicted x0 to ±clip_x0 while sampling; None turns it off

    def __post_init__(self):
        for name in ("token_dim", "cond_dim", "width", "depth", "num_train_steps", "timesteps_per_token"):
            if getattr(self, name) < 1:
                raise UserError(f"diffusion head: {name} must be a positive integer, got {getattr(self, name)}")
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("prediction", self.prediction, PREDICTIONS)
        _check_sampling(self.sampler, self.sample_steps, self.num_train_steps, self.temperature, self.ddim_eta)
        if self.clip_x0 is not None and self.clip_x0 <= 0:
            raise UserError(f"diffusion head: clip_x0 must be positive or null, got {self.clip_x0}")


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) timesteps -> (N, dim) features [cos(t·f), sin(t·f)] over geometric frequencies f."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(embedding, (0, dim % 2))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of t followed by a two-layer MLP."""

    def __init__(self, width: int, frequencies: int = 256):
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.frequencies))


class AdaLNBlock(nn.Module):
    """x + gate·MLP(modulate(LN(x), shift, scale)), with shift, scale and gate computed from the condition y."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, width: int, token_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6, elementwise_affine=False)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, token_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(y).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiffusionHead(nn.Module):
    """Denoising MLP for continuous tokens, with `loss` for training and `sample` for generation.

    Both run in fp32 with autocast off, whatever the caller's autocast: the head is small, and the
    schedule's extreme coefficients near t = T do not survive bf16. Keep the head's weights in fp32.
    """

    def __init__(self, config: DiffusionHeadConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.input_proj = nn.Linear(config.token_dim, width)
        self.time_embed = TimestepEmbedder(width)
        self.cond_proj = nn.Linear(config.cond_dim, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width) for _ in range(config.depth))
        self.final = FinalLayer(width, config.token_dim)
        self.schedule = DiffusionSchedule.create(config.schedule, config.num_train_steps)
        self._sampling_schedules: dict[int, DiffusionSchedule] = {}
        self._compiled_net = None  # set by compile_net(): the denoiser `loss` runs, compiled
        self._init_weights()

    def _init_weights(self) -> None:
        # As MAR: Xavier everywhere, N(0, 0.02) for the time MLP, zeros for every adaLN and the output
        # layer, so a new head predicts 0 and each block starts as the identity.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for layer in (self.time_embed.mlp[0], self.time_embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for layer in [b.modulation[-1] for b in self.blocks] + [self.final.modulation[-1], self.final.linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict eps or v (config.prediction) for noisy tokens x_t (N, D) at training timesteps t (N,)."""
        y = self.time_embed(t) + self.cond_proj(cond)
        x = self.input_proj(x_t)
        for block in self.blocks:
            x = block(x, y)
        return self.final(x, y)

    def compile_net(self) -> None:
        """torch.compile the denoiser for `loss` (dynamic shapes: the token count varies by batch)."""
        self._compiled_net = torch.compile(self.forward, dynamic=True)

    # ---- training ----

    def loss(
        self,
        cond: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Diffusion loss: MSE on the prediction target, averaged over the tokens `mask` selects.

        cond (N, cond_dim) and target (N, token_dim) pair one condition with one clean token; `mask`
        (N,) is bool, or float weights ≥ 0. Each kept token is noised `timesteps_per_token` times with
        t ~ U{0..T−1}; tokens with mask 0 are dropped before the head runs, so they cost nothing and
        get no gradient. Random draws come from `generator` (on the tokens' device) when given.
        """
        n = self._check_cond(cond, "cond")
        if target.shape != (n, self.config.token_dim):
            raise UserError(f"diffusion loss: target must be ({n}, {self.config.token_dim}) to match cond, "
                            f"got {tuple(target.shape)}")
        weight = torch.ones(n, device=cond.device) if mask is None else self._check_mask(mask, n)
        keep = weight > 0
        with torch.autocast(device_type=cond.device.type, enabled=False):
            cond, x0, weight = cond[keep].float(), target[keep].float(), weight[keep]
            repeats, kept = self.config.timesteps_per_token, x0.shape[0]
            cond, x0 = cond.repeat(repeats, 1), x0.repeat(repeats, 1)
            t = torch.randint(0, len(self.schedule), (x0.shape[0],), generator=generator, device=x0.device)
            noise = torch.randn(x0.shape, generator=generator, device=x0.device)
            output = (self._compiled_net or self)(self.schedule.q_sample(x0, t, noise), t, cond)
            wanted = self.schedule.target(x0, noise, t, self.config.prediction)
            per_token = (output - wanted).pow(2).mean(dim=-1).view(repeats, kept).mean(dim=0)
            # An all-zero mask gives 0 (not NaN) with a graph, so a batch without image tokens still steps.
            return (per_token * weight).sum() / weight.sum().clamp_min(1e-12)

    # ---- sampling ----

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        generator: torch.Generator,
        temperature: float | None = None,
        cfg_scale: float | torch.Tensor = 1.0,
        uncond: torch.Tensor | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        eta: float | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw one token (N, token_dim) per condition row by the respaced reverse process from pure noise.

        Classifier-free guidance: with `uncond` (N, cond_dim) and cfg_scale ≠ 1,
        eps = eps_u + s·(eps_c − eps_u); both branches run as one doubled batch on the same x_t and
        noise. `cfg_scale` is a float or a per-token tensor (N,), e.g. a linear schedule over the
        tokens of an image. None for temperature, steps, sampler or eta takes the config's value.
        `temperature` scales the noise each step adds, not the initial noise (as MAR); `noise`
        (N, token_dim) replaces the initial draw. Every random draw comes from `generator`, which must
        live on cond's device.
        """
        cfg = self.config
        temperature = cfg.temperature if temperature is None else temperature
        steps = cfg.sample_steps if steps is None else steps
        sampler = cfg.sampler if sampler is None else sampler
        eta = cfg.ddim_eta if eta is None else eta
        _check_sampling(sampler, steps, cfg.num_train_steps, temperature, eta)
        n = self._check_cond(cond, "cond")
        guide = self._guidance(cfg_scale, uncond, n)
        schedule = self.sampling_schedule(steps)
        with torch.autocast(device_type=cond.device.type, enabled=False):
            cond = cond.float()
            if guide is not None:
                cond = torch.cat([cond, uncond.float()])
            if noise is None:
                x = torch.randn((n, cfg.token_dim), generator=generator, device=cond.device)
            elif noise.shape != (n, cfg.token_dim):
                raise UserError(f"diffusion sample: noise must be ({n}, {cfg.token_dim}), "
                                f"got {tuple(noise.shape)}")
            else:
                x = noise.to(cond.device, torch.float32)
            for i in reversed(range(len(schedule))):
                x = self.denoise_step(x, i, schedule, cond, generator, cfg_scale=guide, sampler=sampler, eta=eta,
                                      temperature=temperature)
        return x

    def denoise_step(
        self,
        x: torch.Tensor,
        i: int,
        schedule: DiffusionSchedule,
        cond: torch.Tensor,
        generator: torch.Generator,
        *,
        cfg_scale: torch.Tensor | None = None,
        sampler: str = "ddpm",
        eta: float = 0.0,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """One reverse step of every token from step i of `schedule` to step i − 1.

        The fresh noise of an ancestral step is drawn only when it is used (std·temperature > 0).
        With guidance, cond holds [cond; uncond] (2N rows) and cfg_scale is (N, 1). Guiding the raw
        output is guiding eps even for a v model: eps = sqrt(1 − ab)·x_t + sqrt(ab)·v is affine in v
        with the same x_t in both branches, and u + s·(c − u) has weights summing to one.
        """
        n = x.shape[0]
        t = schedule.timesteps[i].expand(cond.shape[0]).to(x.device)
        if cfg_scale is None:
            output = self(x, t, cond)
        else:
            guided, unguided = self(torch.cat([x, x]), t, cond).chunk(2)
            output = unguided + cfg_scale * (guided - unguided)
        x0, eps = schedule.split_prediction(output, x, i, self.config.prediction)
        x0, eps = schedule.clip_x0(x0, eps, x, i, self.config.clip_x0)
        std = schedule.step_noise_std(i, sampler, eta) * temperature
        fresh = torch.randn((n, x.shape[1]), generator=generator, device=x.device) if std > 0 else None
        if sampler == "ddpm":
            return schedule.ddpm_step(x0, x, i, fresh, temperature)
        return schedule.ddim_step(x0, eps, i, fresh, eta, temperature)

    def sampling_schedule(self, steps: int) -> DiffusionSchedule:
        """The training schedule respaced to `steps` reverse steps (cached)."""
        if steps not in self._sampling_schedules:
            self._sampling_schedules[steps] = self.schedule.respaced(steps)
        return self._sampling_schedules[steps]

    # ---- input checks ----

    def _check_cond(self, cond: torch.Tensor, name: str) -> int:
        if cond.ndim != 2 or cond.shape[1] != self.config.cond_dim:
            raise UserError(f"diffusion head: {name} must be (N, {self.config.cond_dim}) (one backbone hidden "
                            f"state per token), got {tuple(cond.shape)}")
        return cond.shape[0]

    def _check_mask(self, mask: torch.Tensor, n: int) -> torch.Tensor:
        if mask.shape != (n,):
            raise UserError(f"diffusion loss: mask must be ({n},), one entry per token, got {tuple(mask.shape)}")
        if mask.dtype != torch.bool and not mask.is_floating_point():
            raise UserError(f"diffusion loss: mask must be bool or float weights, got {mask.dtype}")
        weight = mask.float()
        if bool((weight < 0).any()):
            raise UserError("diffusion loss: mask weights must be ≥ 0")
        return weight

    def _guidance(
        self, cfg_scale: float | torch.Tensor, uncond: torch.Tensor | None, n: int
    ) -> torch.Tensor | None:
        """The guidance scale as an (N, 1) tensor, or None when no guidance is asked for (every scale is 1)."""
        if isinstance(cfg_scale, torch.Tensor):
            if cfg_scale.shape not in ((), (n,)):
                raise UserError(f"diffusion sample: a cfg_scale tensor must be ({n},), one scale per token, "
                                f"got {tuple(cfg_scale.shape)}")
            if bool((cfg_scale == 1).all()):
                return None
        elif cfg_scale == 1.0:
            return None
        if uncond is None:
            raise UserError("diffusion sample: cfg_scale ≠ 1 needs `uncond`, the backbone's hidden states for "
                            "the unconditional prompt; pass it or set cfg_scale=1")
        self._check_cond(uncond, "uncond")
        if uncond.shape[0] != n:
            raise UserError(f"diffusion sample: uncond has {uncond.shape[0]} rows but cond has {n}")
        device = uncond.device
        return torch.as_tensor(cfg_scale, dtype=torch.float32, device=device).expand(n).reshape(n, 1)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"diffusion head: unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _check_sampling(sampler: str, steps: int, num_train_steps: int, temperature: float, eta: float) -> None:
    _check_choice("sampler", sampler, ("ddpm", "ddim"))
    if not 1 <= steps <= num_train_steps:
        raise UserError(f"diffusion head: sampling steps must be in 1..{num_train_steps}, got {steps}")
    if temperature < 0:
        raise UserError(f"diffusion head: temperature must be ≥ 0, got {temperature}")
    if eta < 0:
        raise UserError(f"diffusion head: ddim_eta must be ≥ 0, got {eta}")
