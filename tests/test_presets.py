"""Named presets load, and the full-size UGen preset's code path runs on tiny random stand-ins."""

import numpy as np
import pytest

from uniar.config import load_config
from uniar.configs import preset_names, resolve
from uniar.errors import UserError
from uniar.train.config import TrainConfig


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads(name):
    cfg = load_config(TrainConfig, resolve(name))
    cfg.validate()
    assert cfg.model.family in ("ugen", "unifluid")


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(UserError, match="presets:"):
        resolve("ugen-huge")


def _tiny_llama(folder, vocab_size):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    LlamaForCausalLM(cfg).save_pretrained(folder)


def _tiny_movq(folder):
    import torch
    from diffusers import VQModel

    torch.manual_seed(0)
    VQModel(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, sample_size=64,
            latent_channels=4, num_vq_embeddings=32, vq_embed_dim=4).save_pretrained(folder)


def test_ugen_tinyllama_code_path_with_tiny_stand_ins(tmp_path):
    """TinyLlama (a Llama causal LM + a tokenizer.json folder) and MoVQGAN (a diffusers VQModel):
    train two steps from the preset, checkpoint, reload, draw and caption."""
    from helpers import text_tokenizer
    from uniar.sample.decode import SamplingConfig
    from uniar.sample.pipeline import Pipeline
    from uniar.train.loop import Trainer

    llama = tmp_path / "tinyllama"
    tok = text_tokenizer()
    tok.save(llama)
    (llama / "uniar_tokenizer.json").unlink()  # a plain pretrained tokenizer.json folder
    _tiny_llama(llama, vocab_size=tok.vocab_size)
    _tiny_movq(tmp_path / "movq")
    cfg = load_config(TrainConfig, resolve("ugen-tinyllama"), [
        f"model.backbone.path={llama}", "model.backbone.dtype=float32", f"model.text_tokenizer={llama}",
        f"model.image_tokenizer={tmp_path / 'movq'}", "data.image_size=64", "data.pool_size=16",
        "data.text_window=32", "optim.batch_size=4", "optim.grad_accum=2", "optim.warmup_steps=1",
        "optim.bf16=false", "steps=3", "progressive_vocab.k=1", "checkpoint_every=0", "eval.every=0",
        "log_every=1", f"out_dir={tmp_path / 'run'}"])
    trainer = Trainer(cfg, progress=False)
    assert trainer.model.backbone.vocab_size == tok.vocab_size + 32
    trainer.run()
    pipe = Pipeline.from_checkpoint(tmp_path / "run" / "checkpoints" / "final")
    images = pipe.t2i(["a large red circle at the top left"], SamplingConfig(seed=0, cfg_scale=2.0))
    assert images.shape == (1, 64, 64, 3) and images.dtype == np.uint8
    assert isinstance(pipe.caption(images)[0], str)
