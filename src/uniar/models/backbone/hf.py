"""Any causal LM from transformers (Llama/TinyLlama, Gemma-2, Qwen2, ...) behind the Backbone interface.

The model is loaded from a local folder only. `embed` is the model's own input embedding (Gemma's
sqrt(hidden) scale included, it lives inside its embedding module), `forward` runs the inner
decoder on `inputs_embeds` with explicit `position_ids`, a float additive mask (0 / -inf; a 4D bool
mask is silently ignored by eager attention, which Gemma-2 always uses) and a transformers
`DynamicCache`, and `logits` is its lm_head plus Gemma-2's final soft-capping.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from uniar.errors import UserError
from uniar.models.backbone.base import (
    Backbone,
    KVCache,
    attention_visibility,
    check_inputs,
    check_new_vocab_size,
    grown_parameter,
)

SUPPORTED_LAYER_TYPES = ("full_attention", "sliding_attention")
# Marks a config.json written by `hf_config_dict` into a uniar checkpoint: the folder holds only the
# architecture, the weights are in the checkpoint's model.safetensors.
CONFIG_ONLY_KEY = "uniar_config_only"


class HFKVCache(KVCache):
    """A transformers `DynamicCache` with the batch size and length limit of the interface.

    It is made without the model config on purpose: every layer keeps all its keys (no sliding
    window eviction), so one (B, S_total) mask fits every layer; sliding layers get their window
    through their mask instead.
    """

    def __init__(self, batch_size: int, max_len: int):
        self.batch_size = batch_size
        self.max_len = max_len
        self.reset()

    @property
    def length(self) -> int:
        return self.inner.get_seq_length()

    def reset(self) -> None:
        from transformers import DynamicCache

        self.inner = DynamicCache()

    def drop_last(self, n: int) -> None:
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot drop {n} of {self.length} cached slots")
        if n:
            self.inner.crop(-n)


class HFBackbone(Backbone):
    """Wraps a transformers `*ForCausalLM` model; build it with `HFBackbone.from_pretrained(folder)`."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm.train(self.training)  # from_pretrained returns eval mode; follow nn.Module's default
        text_cfg = lm.config.get_text_config()
        self.hidden_size = text_cfg.hidden_size
        layer_types = list(getattr(text_cfg, "layer_types", None) or ["full_attention"])
        unsupported = sorted(set(layer_types) - set(SUPPORTED_LAYER_TYPES))
        if unsupported:
            raise UserError(f"{type(lm).__name__} has layer types {unsupported} that the uniar backbone "
                            f"does not support (only {', '.join(SUPPORTED_LAYER_TYPES)})")
        self._sliding_window = getattr(text_cfg, "sliding_window", None)
        self._has_sliding = "sliding_attention" in layer_types and self._sliding_window is not None
        self._softcap = getattr(text_cfg, "final_logit_softcapping", None)
        # A tied head is stored once, under the embedding's name (safetensors refuses aliases).
        self.register_state_dict_post_hook(_drop_tied_head)
        self.register_load_state_dict_pre_hook(_restore_tied_head)

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype = torch.float32,
                        attn_implementation: str | None = None) -> HFBackbone:
        """Load a causal LM from a local folder (config.json + *.safetensors), never from the network.

        A folder whose config.json came from `hf_config_dict` (a uniar checkpoint's backbone_config/)
        gives the untrained architecture; its weights are then loaded from the checkpoint.
        """
        from transformers import AutoModelForCausalLM

        folder = Path(folder).expanduser()
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        config_only = _read_config_only(folder)
        if config_only is not None:
            return cls.from_config_dict(config_only, dtype=dtype, **kwargs)
        _check_folder(folder)
        try:
            lm, info = AutoModelForCausalLM.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=True, dtype=dtype,
                output_loading_info=True, **kwargs,
            )
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"cannot load a causal LM from {folder}: {err}. Check that the folder holds a "
                            "complete transformers checkpoint of a causal language model.") from err
        missing = [k for k in info.get("missing_keys", []) if not _is_tied_head(lm, k)]
        if missing:
            raise UserError(f"{folder} lacks weights for {len(missing)} tensors (e.g. {missing[:3]}); "
                            "they would be random. Re-download or re-save the model.")
        return cls(lm)

    @classmethod
    def from_config_dict(cls, config: dict, dtype: torch.dtype = torch.float32, **kwargs) -> HFBackbone:
        """An untrained model of the architecture in `config` (from `hf_config_dict`), e.g. to load a
        uniar checkpoint's weights into without the original folder."""
        from transformers import AutoConfig, AutoModelForCausalLM

        config = {k: v for k, v in config.items() if k != CONFIG_ONLY_KEY}
        hf_cfg = AutoConfig.for_model(config.pop("model_type"), **config)
        return cls(AutoModelForCausalLM.from_config(hf_cfg, dtype=dtype, **kwargs))

    def hf_config_dict(self) -> dict:
        """The transformers config (vocab size included, after extend_vocab) as JSON data, marked
        config-only: saved as `<dir>/config.json`, `from_pretrained(<dir>)` rebuilds the architecture."""
        return {**self.lm.config.to_dict(), CONFIG_ONLY_KEY: True}

    def _tied_keys(self) -> tuple[str, str] | None:
        """State-dict names (relative to this module) of the embedding and of a head that shares it."""
        emb, head = self.lm.get_input_embeddings(), self.lm.get_output_embeddings()
        if head is None or head.weight is not emb.weight:
            return None
        names = {id(m): n for n, m in self.named_modules(remove_duplicate=False)}
        return names[id(emb)] + ".weight", names[id(head)] + ".weight"

    @property
    def vocab_size(self) -> int:
        return self.lm.get_input_embeddings().weight.shape[0]

    @property
    def _decoder(self):
        return getattr(self.lm, self.lm.base_model_prefix)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def input_embedding_weight(self) -> torch.Tensor:
        return self.lm.get_input_embeddings().weight

    def forward(self, embeds, positions, key_padding_mask=None, cache=None, attn_mask=None):
        check_inputs(embeds, positions, self.hidden_size)
        b, t, _ = embeds.shape
        past = 0
        if cache is not None:
            cache.check_room(b, t)
            past = cache.length
        visible = attention_visibility(b, t, past, key_padding_mask, attn_mask, embeds.device)
        mask = _additive(visible, embeds.dtype)
        if self._has_sliding:
            # Same rule as transformers' sliding_window_overlay, on sequence slots.
            q_slot = torch.arange(past, past + t, device=embeds.device)
            k_slot = torch.arange(past + t, device=embeds.device)
            in_window = k_slot[None, :] > q_slot[:, None] - self._sliding_window
            mask = {"full_attention": mask, "sliding_attention": _additive(visible & in_window, embeds.dtype)}
        out = self._decoder(
            inputs_embeds=embeds,
            position_ids=positions,
            attention_mask=mask,
            past_key_values=cache.inner if cache is not None else None,
            use_cache=cache is not None,
        )
        return out.last_hidden_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm.get_output_embeddings()(hidden).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    def new_cache(self, batch_size, max_len, dtype=torch.float32, device="cpu") -> HFKVCache:
        # DynamicCache allocates as it goes, in the dtype/device of the keys it receives.
        return HFKVCache(batch_size, max_len)

    def extend_vocab(self, new_vocab_size: int, init: str = "mean") -> None:
        check_new_vocab_size(self.vocab_size, new_vocab_size)
        added = new_vocab_size - self.vocab_size
        if added == 0:
            return
        emb = self.lm.get_input_embeddings()
        head = self.lm.get_output_embeddings()
        tied = head.weight is emb.weight
        emb.weight = grown_parameter(emb.weight, added, init)
        emb.num_embeddings = new_vocab_size
        if tied:
            head.weight = emb.weight
        else:
            head.weight = grown_parameter(head.weight, added, init)
        if getattr(head, "bias", None) is not None:
            head.bias = grown_parameter(head.bias, added, init)
        head.out_features = new_vocab_size
        self.lm.config.get_text_config().vocab_size = new_vocab_size
        for module in (self.lm, self._decoder):
            if hasattr(module, "vocab_size"):
                module.vocab_size = new_vocab_size


def _read_config_only(folder: Path) -> dict | None:
    """The config of a uniar config-only folder, or None for anything else."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}; re-download or re-save the model") from err
    return config if isinstance(config, dict) and config.get(CONFIG_ONLY_KEY) else None


def _check_folder(folder: Path) -> None:
    fetch = ("download it on a machine with network access, e.g. "
             "`huggingface-cli download ORG/NAME --local-dir FOLDER`, and copy the folder here")
    if not folder.is_dir():
        raise UserError(f"pretrained model folder not found: {folder}; {fetch}")
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} has no config.json, so it is not a transformers model folder; {fetch}")
    if not any(folder.glob("*.safetensors")):
        if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
            raise UserError(f"{folder} holds only pickle weights (*.bin/*.pt), which uniar does not load; "
                            "convert them to safetensors (model.save_pretrained(..., safe_serialization=True))")
        raise UserError(f"{folder} has no *.safetensors weights; {fetch}")


def _drop_tied_head(module: HFBackbone, state_dict, prefix, local_metadata) -> None:
    keys = module._tied_keys()
    if keys:
        state_dict.pop(prefix + keys[1], None)


def _restore_tied_head(module: HFBackbone, state_dict, prefix, *args) -> None:
    keys = module._tied_keys()
    if keys and prefix + keys[0] in state_dict:
        state_dict.setdefault(prefix + keys[1], state_dict[prefix + keys[0]])


def _is_tied_head(lm, key: str) -> bool:
    """A missing lm_head weight is fine when the head shares the input embedding."""
    head = lm.get_output_embeddings()
    return key.startswith("lm_head") and head is not None and head.weight is lm.get_input_embeddings().weight


def _additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool (B,T,S) -> float (B,1,T,S): 0 where visible, -inf elsewhere."""
    zeros = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return zeros.masked_fill(~visible, float("-inf"))[:, None]

