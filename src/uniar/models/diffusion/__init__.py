"""Per-token diffusion for continuous image tokens: the Gaussian schedule and the MAR-style head."""

from uniar.models.diffusion.head import DiffusionHead, DiffusionHeadConfig
from uniar.models.diffusion.schedule import DiffusionSchedule, cosine_betas, linear_betas, spaced_timesteps

__all__ = [
    "DiffusionHead",
    "DiffusionHeadConfig",
    "DiffusionSchedule",
    "cosine_betas",
    "linear_betas",
    "spaced_timesteps",
]
