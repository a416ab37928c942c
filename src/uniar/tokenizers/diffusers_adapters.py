"""Pretrained image tokenizers from local diffusers folders, behind the `ImageTokenizer` interface.

- `DiffusersVQTokenizer` wraps a `VQModel` (the MoVQGAN format UGen uses): ids are the nearest
  codes of the pre-quantisation latents, raster order.
- `DiffusersKLTokenizer` wraps an `AutoencoderKL` (the SD-VAE UniFluid uses): tokens are the
  posterior mean (or a sample), normalised. `normalize="global"` uses the model's own
  `scaling_factor` (and `shift_factor`): z' = (z - shift) * scaling_factor; `per_dim` needs
  statistics, from the config's `latents_mean` / `latents_std` or measured on your images with
  `fit_normalization(batches)` (which replaces the global statistics with measured ones too);
  `none` passes raw latents.

Loading is local only (`local_files_only=True`; set HF_HUB_OFFLINE=1). Point at the folder that
holds the model's own `config.json` (for a full pipeline: its `vae/` or `movq/` subfolder).
`save(folder)` writes a uniar folder (`config.json` with "type", `model.safetensors` holding the
diffusers weights and the latent statistics), which `load_image_tokenizer` reads back.
"""

from __future__ import annotations

from pathlib import Path

import torch

from uniar.errors import CheckpointError, UserError
from uniar.tokenizers.image import (
    ImageTokenizer, grid_to_tokens, load_weights, read_config, tokens_to_grid, write_folder,
)
from uniar.tokenizers.kl import LatentNormalizer, check_mode, fit_normalization


def _image_size(model, image_size: int | None) -> int:
    if image_size is None:
        size = model.config.sample_size
        image_size = size[0] if isinstance(size, (list, tuple)) else size
    factor = 2 ** (len(model.config.block_out_channels) - 1)
    if image_size % factor:
        raise UserError(f"image_size {image_size} is not divisible by the model's down-sampling factor {factor}")
    return int(image_size)


def _from_pretrained(model_cls, folder: Path, dtype: torch.dtype):
    """`model_cls.from_pretrained(folder)`, local files only, with errors that say what to do."""
    cfg = read_config(folder)
    if cfg.get("_class_name") != model_cls.__name__:
        raise CheckpointError(
            f"{folder} holds a {cfg.get('_class_name') or cfg.get('type')!r}, not a diffusers {model_cls.__name__}"
        )
    try:
        return model_cls.from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"cannot load a diffusers {model_cls.__name__} from {folder}: {err}. The folder needs its "
            "config.json and weights (diffusion_pytorch_model.safetensors); only local files are read"
        ) from err


class _DiffusersTokenizer(ImageTokenizer):
    """What both adapters share: the wrapped model, the grid, saving and loading."""

    type_name = ""
    model_cls_name = ""

    def __init__(self, model, image_size: int | None = None):
        super().__init__()
        self.model = model.eval()
        self.image_size = _image_size(model, image_size)
        side = self.image_size // 2 ** (len(model.config.block_out_channels) - 1)
        self.grid = (side, side)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @classmethod
    def model_cls(cls):
        import diffusers

        return getattr(diffusers, cls.model_cls_name)

    def _extra_config(self) -> dict:
        return {}

    def save(self, folder: str | Path) -> None:
        config = {"type": self.type_name, "image_size": self.image_size, **self._extra_config(),
                  "diffusers_config": dict(self.model.config)}
        write_folder(folder, config, self.state_dict())

    @classmethod
    def from_pretrained(cls, folder: str | Path, image_size: int | None = None,
                        dtype: torch.dtype = torch.float32, **kwargs) -> "_DiffusersTokenizer":
        """Wrap the diffusers model saved in `folder` (its own config.json and weights)."""
        return cls(_from_pretrained(cls.model_cls(), Path(folder), dtype), image_size, **kwargs)

    @classmethod
    def from_folder(cls, folder: Path, config: dict) -> "_DiffusersTokenizer":
        """Either a plain diffusers folder or one written by `save` (see `load_image_tokenizer`)."""
        if "type" not in config:
            return cls.from_pretrained(folder)
        if "diffusers_config" not in config:
            raise CheckpointError(f"{folder}/config.json lacks 'diffusers_config'; re-save the tokenizer")
        model = cls.model_cls().from_config(config["diffusers_config"])
        extra = {k: config[k] for k in cls._saved_keys() if k in config}
        tokenizer = cls(model, config.get("image_size"), **extra)
        load_weights(tokenizer, folder)
        return tokenizer

    @classmethod
    def _saved_keys(cls) -> tuple[str, ...]:
        return ()


class DiffusersVQTokenizer(_DiffusersTokenizer):
    """A diffusers `VQModel` as a discrete tokenizer."""

    type_name = "diffusers_vq"
    model_cls_name = "VQModel"
    kind = "discrete"

    def __init__(self, model, image_size: int | None = None):
        super().__init__(model, image_size)
        self.codebook_size = int(model.config.num_vq_embeddings)
        self.code_dim = int(model.config.vq_embed_dim or model.config.latent_channels)

    def code_vectors(self) -> torch.Tensor:
        return self.model.quantize.embedding.weight.detach().float().clone()

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        latents = self.model.encode(images.to(self.dtype)).latents  # pre-quantisation
        _, _, (_, _, ids) = self.model.quantize(latents)
        return ids.reshape(images.shape[0], self.num_tokens).long()

    def _decode(self, ids: torch.Tensor) -> torch.Tensor:
        b = ids.shape[0]
        shape = (b, *self.grid, self.code_dim)
        flat = ids.reshape(-1).long()
        if self.model.config.lookup_from_codebook:  # this decode looks the codes up itself
            return self.model.decode(flat, force_not_quantize=True, shape=shape).sample
        quant = self.model.quantize.get_codebook_entry(flat, shape)
        return self.model.decode(quant, force_not_quantize=True).sample


class DiffusersKLTokenizer(_DiffusersTokenizer):
    """A diffusers `AutoencoderKL` as a continuous tokenizer with normalised tokens."""

    type_name = "diffusers_kl"
    model_cls_name = "AutoencoderKL"
    kind = "continuous"

    def __init__(self, model, image_size: int | None = None, normalize: str = "global"):
        super().__init__(model, image_size)
        check_mode(normalize)
        self.token_dim = int(model.config.latent_channels)
        self.normalizer = LatentNormalizer(self.token_dim, normalize)
        cfg = model.config
        self.normalizer.set_stats({"global_mean": torch.tensor([float(cfg.shift_factor or 0.0)]),
                                   "global_std": torch.tensor([1.0 / float(cfg.scaling_factor)])})
        if cfg.get("latents_mean") is not None and cfg.get("latents_std") is not None:
            self.normalizer.set_stats({"channel_mean": torch.tensor(cfg.latents_mean, dtype=torch.float32),
                                       "channel_std": torch.tensor(cfg.latents_std, dtype=torch.float32)})

    @property
    def normalize(self) -> str:
        return self.normalizer.mode

    @normalize.setter
    def normalize(self, mode: str) -> None:
        check_mode(mode)
        self.normalizer.mode = mode

    def _extra_config(self) -> dict:
        return {"normalize": self.normalizer.mode}

    @classmethod
    def _saved_keys(cls) -> tuple[str, ...]:
        return ("normalize",)

    def raw_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Un-normalised posterior means (B, C, h, w), fp32."""
        return self.model.encode(images.to(self.dtype)).latent_dist.mean.float()

    def _encode(self, images: torch.Tensor, sample: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        dist = self.model.encode(images.to(self.dtype)).latent_dist
        z = (dist.sample(generator=generator) if sample else dist.mean).float()
        return grid_to_tokens(self.normalizer.normalize(z))

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        z = self.normalizer.denormalize(tokens_to_grid(tokens.float(), self.grid))
        return self.model.decode(z.to(self.dtype)).sample

    def fit_normalization(self, batches) -> dict[str, torch.Tensor]:
        """Measure per-channel and global latent statistics on your images (see kl.fit_normalization)."""
        return fit_normalization(self, batches)
