"""Gaussian diffusion schedule for per-token diffusion: noising, targets, respacing, reverse steps.

Notation (Ho et al. 2020; Nichol & Dhariwal 2021): x_t = sqrt(ab_t)·x0 + sqrt(1 − ab_t)·eps, where
ab_t = ᾱ_t = prod_{s<=t} (1 − β_s) and t counts 0..T−1. A model predicts either eps or the velocity
v = sqrt(ab)·eps − sqrt(1 − ab)·x0 (Salimans & Ho 2022); `split_prediction` turns either into the
pair (x0, eps) that the reverse steps use, computing each from the model output directly so that
neither is derived from the other through a division by a tiny number.

A schedule holds float64 tables on the CPU. It is not an nn.Module on purpose: `model.to(bf16)`
must never round the tables, whose last entries (ab ≈ 1e-9 for cosine) need the precision.
"""

from __future__ import annotations

import math

import torch

from uniar.errors import UserError

SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("eps", "v")


def cosine_betas(num_steps: int, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: ab(s) = cos²((s + offset)/(1 + offset)·π/2), β clipped."""

    def alpha_bar(s: float) -> float:
        return math.cos((s + offset) / (1 + offset) * math.pi / 2) ** 2

    steps = range(num_steps)
    betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta) for i in steps]
    return torch.tensor(betas, dtype=torch.float64)


def linear_betas(num_steps: int) -> torch.Tensor:
    """Ho et al.'s linear schedule (1e-4 to 0.02 at T=1000), rescaled for other T (Improved DDPM)."""
    scale = 1000 / num_steps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64)


def spaced_timesteps(num_steps: int, count: int) -> list[int]:
    """`count` timesteps evenly spread over 0..num_steps−1, both ends included (Improved-DDPM spacing).

    A single step uses the last timestep, so sampling still starts from pure noise.
    """
    if not 1 <= count <= num_steps:
        raise UserError(f"sampling steps must be in 1..{num_steps} (the training steps), got {count}")
    if count == 1:
        return [num_steps - 1]
    stride = (num_steps - 1) / (count - 1)
    return [round(i * stride) for i in range(count)]


class DiffusionSchedule:
    """A discrete Gaussian diffusion over `len(alpha_bars)` steps.

    Built from its ᾱ table (`create` makes one from β). `timesteps[i]` is the training timestep that
    step i stands for: the identity for a training schedule, a subset for a respaced one. The model is
    always given `timesteps[i]`.
    """

    def __init__(self, alpha_bars: torch.Tensor, timesteps: torch.Tensor | None = None):
        alpha_bars = alpha_bars.to(torch.float64)
        if alpha_bars.ndim != 1 or len(alpha_bars) == 0 or not bool((alpha_bars > 0).all()):
            raise UserError("a diffusion schedule needs a non-empty 1-D tensor of positive alpha_bars")
        if not bool((alpha_bars[1:] < alpha_bars[:-1]).all()) or alpha_bars[0] >= 1:
            raise UserError("a diffusion schedule's alpha_bars must decrease strictly from below 1")
        # ab is kept as given and β derived from it, so respacing leaves ab bit-identical (ab_T ≈ 2e-9
        # would lose digits through 1 − β).
        self.alpha_bars = alpha_bars
        self.alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
        self.betas = 1 - alpha_bars / self.alpha_bars_prev
        self.timesteps = torch.arange(len(alpha_bars)) if timesteps is None else timesteps.long()
        # Posterior q(x_{t-1} | x_t, x0) = N(c_x0·x0 + c_xt·x_t, var): the DDPM reverse step
        # with Ho et al.'s "fixed small" variance.
        betas, ab, ab_prev = self.betas, alpha_bars, self.alpha_bars_prev
        self.posterior_var = betas * (1 - ab_prev) / (1 - ab)
        self.posterior_c_x0 = betas * ab_prev.sqrt() / (1 - ab)
        self.posterior_c_xt = (1 - ab_prev) * (ab / ab_prev).sqrt() / (1 - ab)

    @classmethod
    def create(cls, kind: str = "cosine", num_steps: int = 1000) -> DiffusionSchedule:
        """A training schedule: `kind` is "cosine" or "linear"."""
        if kind not in SCHEDULES:
            raise UserError(f"unknown noise schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
        if num_steps < 1:
            raise UserError(f"the number of diffusion steps must be positive, got {num_steps}")
        betas = cosine_betas(num_steps) if kind == "cosine" else linear_betas(num_steps)
        return cls(torch.cumprod(1 - betas, dim=0))

    def __len__(self) -> int:
        return len(self.betas)

    def respaced(self, count: int) -> DiffusionSchedule:
        """Improved-DDPM respacing: keep `count` timesteps and recompute β so that ab is unchanged there."""
        kept = spaced_timesteps(len(self), count)
        return DiffusionSchedule(self.alpha_bars[kept], self.timesteps[kept])

    # ---- training ----

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise clean tokens x0 (N, D) to step t (N,): sqrt(ab)·x0 + sqrt(1 − ab)·noise."""
        ab = self._at(self.alpha_bars, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, prediction: str) -> torch.Tensor:
        """The training target at step t: eps itself, or v = sqrt(ab)·eps − sqrt(1 − ab)·x0."""
        if _check_prediction(prediction) == "eps":
            return noise
        ab = self._at(self.alpha_bars, t, x0)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    # ---- conversions ----

    def split_prediction(
        self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int, prediction: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (x0, eps) pair implied by a model output at step t; both are exact inverses of `target`."""
        ab = self._at(self.alpha_bars, t, x_t)
        if _check_prediction(prediction) == "eps":
            return (x_t - (1 - ab).sqrt() * output) / ab.sqrt(), output
        return ab.sqrt() * x_t - (1 - ab).sqrt() * output, (1 - ab).sqrt() * x_t + ab.sqrt() * output

    def eps_from_x0(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The noise that takes x0 to x_t at step t."""
        ab = self._at(self.alpha_bars, t, x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def clip_x0(
        self, x0: torch.Tensor, eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int, limit: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip x0 to ±limit and recompute eps where it was clipped, so (x0, eps) still explain x_t.

        Near t = T an eps model's x0 = (x_t − sqrt(1 − ab)·eps)/sqrt(ab) divides by ~5e-5 and blows
        up; clipping alone would leave eps inconsistent with the clipped x0 (feasibility-continuous.md).
        """
        if limit is None:
            return x0, eps
        clipped = x0.clamp(-limit, limit)
        eps = torch.where(clipped != x0, self.eps_from_x0(x_t, clipped, t), eps)
        return clipped, eps

    # ---- reverse steps (i indexes this schedule; all tokens share it) ----

    def ddpm_step(
        self, x0: torch.Tensor, x_t: torch.Tensor, i: int, noise: torch.Tensor | None, temperature: float = 1.0
    ) -> torch.Tensor:
        """Ancestral step to i−1: posterior mean + temperature·sqrt(posterior variance)·noise."""
        mean = self.posterior_c_x0[i].item() * x0 + self.posterior_c_xt[i].item() * x_t
        return _add_noise(mean, self.posterior_var[i].item() ** 0.5 * temperature, noise)

    def ddim_step(
        self, x0: torch.Tensor, eps: torch.Tensor, i: int, noise: torch.Tensor | None,
        eta: float = 0.0, temperature: float = 1.0,
    ) -> torch.Tensor:
        """DDIM step to i−1 (Song et al. eq. 12); eta = 1 is the DDPM ancestral step, eta = 0 the ODE."""
        ab_prev = self.alpha_bars_prev[i].item()
        sigma = self._ddim_sigma(i, eta)
        mean = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
        return _add_noise(mean, sigma * temperature, noise)

    def step_noise_std(self, i: int, sampler: str, eta: float) -> float:
        """The standard deviation of the fresh noise a reverse step at i adds (before temperature)."""
        return self.posterior_var[i].item() ** 0.5 if sampler == "ddpm" else self._ddim_sigma(i, eta)

    def _ddim_sigma(self, i: int, eta: float) -> float:
        ab, ab_prev = self.alpha_bars[i].item(), self.alpha_bars_prev[i].item()
        return eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))

    @staticmethod
    def _at(table: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """table[t] shaped to broadcast over `like` (N, ...), in like's dtype and device."""
        if isinstance(t, int):
            return torch.tensor(table[t].item(), dtype=like.dtype, device=like.device)
        values = table.to(t.device)[t].to(like.dtype)
        return values.view(-1, *([1] * (like.ndim - 1)))


def _check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise UserError(f"unknown prediction target {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
    return prediction


def _add_noise(mean: torch.Tensor, std: float, noise: torch.Tensor | None) -> torch.Tensor:
    if std == 0.0:
        return mean
    if noise is None:
        raise ValueError("this reverse step adds noise (std > 0) but no noise tensor was given")
    return mean + std * noise
