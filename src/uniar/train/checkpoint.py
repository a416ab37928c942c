"""Checkpoint folders: everything needed to sample, evaluate or resume, written atomically.

    CKPT/
      config.json             the TrainConfig of the run
      model.safetensors       weights (full, even when the run was sharded with FSDP2)
      vocab.json              the unified vocabulary
      text_tokenizer/         the text tokenizer files
      image_tokenizer/        a copy of the image tokenizer (config.json + model.safetensors)
      backbone_config/        for a transformers backbone: its config.json, to rebuild it offline
      optimizer.safetensors   optimizer tensors (AdamW moments, steps), keyed by parameter name
      training_state.json     step, scheduler, optimizer hyper-parameters, RNG and curriculum state

The folder is written under a temporary name and renamed into place, so a crash never leaves a
half-written checkpoint. Nothing is unpickled on load: tensors come from safetensors, the rest from
JSON.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from uniar.config import from_dict, to_dict
from uniar.errors import CheckpointError
from uniar.utils.io import load_safetensors, read_json, save_safetensors, write_json

REQUIRED = ("config.json", "model.safetensors", "vocab.json", "text_tokenizer", "image_tokenizer")


def rng_state() -> dict:
    return {
        "python": _jsonable(random.getstate()),
        "numpy": _jsonable(np.random.get_state()),
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict) -> None:
    random.setstate(_tupled(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def save_checkpoint(folder, *, cfg, model_state: dict, text_tok, image_tok, vocab, optim_state=None,
                    training_state: dict | None = None, backbone_hf_config: dict | None = None) -> Path:
    """Write a checkpoint folder atomically (replacing any folder of that name)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write_json(tmp / "config.json", to_dict(cfg))
        save_safetensors(tmp / "model.safetensors", model_state)
        write_json(tmp / "vocab.json", vocab.to_dict())
        text_tok.save(tmp / "text_tokenizer")
        image_tok.save(tmp / "image_tokenizer")
        if backbone_hf_config is not None:
            write_json(tmp / "backbone_config" / "config.json", backbone_hf_config)
        if optim_state is not None:
            tensors, groups = _flatten_optimizer(optim_state)
            save_safetensors(tmp / "optimizer.safetensors", tensors)
            training_state = dict(training_state or {}, param_groups=groups)
        if training_state is not None:
            write_json(tmp / "training_state.json", training_state)
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def check_checkpoint(folder) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    missing = [name for name in REQUIRED if not (folder / name).exists()]
    if missing:
        raise CheckpointError(
            f"{folder} is not a complete uniar checkpoint: missing {', '.join(missing)}. "
            "Use a folder written by `uniar train` (runs/<name>/checkpoints/step_N or final)."
        )
    return folder


def load_config(folder, cls):
    folder = check_checkpoint(folder)
    try:
        return from_dict(cls, read_json(folder / "config.json"))
    except (json.JSONDecodeError, OSError) as err:
        raise CheckpointError(f"cannot read {folder / 'config.json'}: {err}") from err


def load_training_state(folder) -> tuple[dict, dict | None]:
    """(training_state, optimizer state dict keyed by parameter name) of a checkpoint."""
    folder = Path(folder)
    path = folder / "training_state.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no training_state.json: it can be sampled but not resumed")
    state = read_json(path)
    optim = None
    if (folder / "optimizer.safetensors").is_file():
        optim = _unflatten_optimizer(load_safetensors(folder / "optimizer.safetensors"), state["param_groups"])
    return state, optim


def _flatten_optimizer(osd: dict) -> tuple[dict, list]:
    tensors = {}
    for name, st in osd["state"].items():
        for key, value in st.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{name}\x1f{key}"] = t
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in osd["param_groups"]]
    return tensors, groups


def _unflatten_optimizer(tensors: dict, groups: list) -> dict:
    state: dict = {}
    for flat, t in tensors.items():
        name, key = flat.split("\x1f")
        state.setdefault(name, {})[key] = t
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    return {"state": state, "param_groups": groups}


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, list)):
        return [_jsonable(o) for o in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


def _tupled(obj):
    if isinstance(obj, list):
        return tuple(_tupled(o) for o in obj)
    return obj
