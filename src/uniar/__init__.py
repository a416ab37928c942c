"""uniar: unified autoregressive multimodal models (UGen, UniFluid) in PyTorch."""

__version__ = "0.1.0"
