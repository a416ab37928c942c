"""Image tokenizers: the interface, the built-in VQ and KL, their training, the diffusers adapters."""

import csv
import json

import numpy as np
import pytest
import torch

from uniar.data.images import to_model
from uniar.errors import CheckpointError, UserError
from uniar.tokenizers.image import load_image_tokenizer
from uniar.tokenizers.kl import KLConfig, KLTokenizer
from uniar.tokenizers.vq import EMAQuantizer, VQConfig, VQTokenizer

SMALL = dict(image_size=16, channels=[8, 16, 16], encoder_blocks=[0, 1, 1], decoder_blocks=[0, 1, 1])


def tiny_vq(seed=0):
    torch.manual_seed(seed)
    model = VQTokenizer(VQConfig(**SMALL, codebook_size=32, code_dim=4))
    images = torch.rand(64, 3, 16, 16) * 2 - 1
    model.initialise_codebook(images)  # as training does before quantising
    return model.eval()


def tiny_kl(seed=0):
    torch.manual_seed(seed)
    model = KLTokenizer(KLConfig(**SMALL, latent_channels=4)).eval()
    model.fit_normalization([torch.rand(16, 3, 16, 16) * 2 - 1 for _ in range(2)])
    return model


def random_images(n=3, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ---- interface ------------------------------------------------------------------------------

def test_default_builtins_give_64_tokens_for_64px_images():
    vq, kl = VQTokenizer(), KLTokenizer()
    assert (vq.kind, vq.grid, vq.num_tokens, vq.codebook_size) == ("discrete", (8, 8), 64, 512)
    assert (kl.kind, kl.grid, kl.num_tokens, kl.token_dim) == ("continuous", (8, 8), 64, 16)


def test_vq_shapes_and_dtypes():
    model = tiny_vq()
    ids = model.encode(random_images())
    assert ids.dtype == torch.long and ids.shape == (3, 16)
    assert 0 <= ids.min() and ids.max() < 32
    out = model.decode(ids)
    assert out.dtype == torch.float32 and out.shape == (3, 3, 16, 16)
    assert out.min() >= -1 and out.max() <= 1
    assert not out.requires_grad


def test_vq_encode_agrees_with_training_pass_and_fp32_search_under_autocast():
    model = tiny_vq()
    images = random_images()
    with torch.no_grad():
        train_ids = model(images)["ids"]
        z = model.quantizer.prepare(model.encoder(images).flatten(2).transpose(1, 2).reshape(-1, 4))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ids = model.quantizer.nearest(z)
    brute = torch.cdist(z.double(), model.quantizer.codebook.double()).argmin(1)
    assert torch.equal(ids, brute)
    assert torch.equal(model.encode(images), train_ids)


def test_kl_shapes_sampling_and_reconstruct():
    model = tiny_kl()
    images = random_images()
    tokens = model.encode(images)
    assert tokens.dtype == torch.float32 and tokens.shape == (3, 16, 4)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    s1, s2 = model.encode(images, sample=True, generator=g1), model.encode(images, sample=True, generator=g2)
    assert torch.equal(s1, s2) and not torch.equal(s1, tokens)
    # decode undoes the normalisation: decode(encode(x)) is the decoded posterior mean
    assert torch.allclose(model.decode(tokens), model.reconstruct(images), atol=1e-5)


@pytest.mark.parametrize("mode", ["per_dim", "global", "none"])
def test_kl_normalisation_round_trip(mode):
    model = tiny_kl()
    batches = [random_images(16, seed=s) for s in (10, 11)]
    model.fit_normalization(batches)
    model.normalize = mode
    images = torch.cat(batches)
    tokens = model.encode(images)
    raw = model.raw_latents(images).flatten(2).transpose(1, 2)
    if mode == "per_dim":  # zero mean, unit std per dimension on the images the stats came from
        assert torch.allclose(tokens.mean((0, 1)), torch.zeros(4), atol=1e-4)
        assert torch.allclose(tokens.std((0, 1), unbiased=False), torch.ones(4), atol=1e-3)
    elif mode == "global":
        assert abs(tokens.mean().item()) < 1e-4 and abs(tokens.std(unbiased=False).item() - 1) < 1e-3
    else:
        assert torch.equal(tokens, raw)
    back = model.normalizer.denormalize(tokens.transpose(1, 2).reshape(32, 4, 4, 4))
    assert torch.allclose(back.flatten(2).transpose(1, 2), raw, atol=1e-4)
    assert torch.allclose(model.decode(tokens), model.reconstruct(images), atol=1e-5)


def test_kl_without_statistics_says_how_to_get_them():
    model = KLTokenizer(KLConfig(**SMALL, latent_channels=4))
    with pytest.raises(UserError, match="fit_normalization"):
        model.encode(random_images())
    model.normalize = "none"
    assert model.encode(random_images()).shape == (3, 16, 4)
    with pytest.raises(UserError, match="per_dim"):
        model.normalize = "whiten"


@pytest.mark.parametrize("make", [tiny_vq, tiny_kl])
def test_bad_inputs_raise_clear_errors(make):
    model = make()
    with pytest.raises(UserError, match=r"shape \(B, 3, 16, 16\)"):
        model.encode(random_images(size=32))
    with pytest.raises(UserError, match="to_model"):
        model.encode((random_images() * 127.5 + 127.5).to(torch.uint8))
    with pytest.raises(UserError, match=r"\[-1, 1\]"):
        model.encode(random_images() * 127.5 + 127.5)
    with pytest.raises(UserError, match="torch tensor"):
        model.encode(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(UserError, match="shape"):
        model.decode(torch.zeros(2, 15, dtype=torch.long) if model.kind == "discrete" else torch.zeros(2, 16, 3))
    if model.kind == "discrete":
        with pytest.raises(UserError, match=r"\[0, 32\)"):
            model.decode(torch.full((1, 16), 32))
        with pytest.raises(UserError, match="integer ids"):
            model.decode(torch.zeros(1, 16))


@pytest.mark.parametrize("kernel, far_changes", [(3, True), (1, False)])
def test_encoder_token_kernel_sets_how_far_a_token_sees(kernel, far_changes):
    """A token's encoding moves when pixels two cells away change only if the encoder is non-local."""
    from uniar.tokenizers.convnet import ConvEncoder

    torch.manual_seed(0)
    enc = ConvEncoder([8, 16, 16, 16], [0, 0, 0, 2], 4, token_kernel=kernel).eval()
    for block in enc.layers:  # residual blocks start as the identity; give them a real effect
        if hasattr(block, "conv2"):
            torch.nn.init.normal_(block.conv2.weight, std=0.2)
    images = random_images(1, size=48)
    moved = images.clone()
    moved[:, :, 32:, 32:] = -1.0  # the bottom-right third goes black
    with torch.no_grad():
        a, b = enc(images), enc(moved)
    assert a.shape == (1, 4, 6, 6)
    # token (0, 0) covers pixels 0..7; with kernel 1 it sees 24 px at most, far from pixel 32
    assert (not torch.allclose(a[..., 0, 0], b[..., 0, 0], atol=1e-6)) == far_changes
    assert not torch.allclose(a[..., 5, 5], b[..., 5, 5])  # the changed corner always changes


def test_encoder_token_kernel_is_saved_and_old_folders_load_as_3(tmp_path):
    model = VQTokenizer(VQConfig(**SMALL, codebook_size=32, code_dim=4, encoder_token_kernel=1))
    model.save(tmp_path / "local")
    assert load_image_tokenizer(tmp_path / "local").cfg.encoder_token_kernel == 1
    config = json.loads((tmp_path / "local" / "config.json").read_text())
    del config["config"]["encoder_token_kernel"]  # as written before the field existed
    (tmp_path / "local" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not fit"):  # 1x1 weights, a 3x3 net
        load_image_tokenizer(tmp_path / "local")
    with pytest.raises(UserError, match="1 or 3"):
        KLTokenizer(KLConfig(**SMALL, latent_channels=4, encoder_token_kernel=5))


def test_bad_configs_are_user_errors():
    with pytest.raises(UserError, match="one entry per width"):
        VQConfig(channels=[8, 16], encoder_blocks=[1], decoder_blocks=[1, 1])
    with pytest.raises(UserError, match="divisible"):
        KLConfig(image_size=60)


# ---- saving and loading ---------------------------------------------------------------------

@pytest.mark.parametrize("make", [tiny_vq, tiny_kl])
def test_save_reload_gives_identical_outputs(make, tmp_path):
    model = make()
    model.save(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert config["type"] == model.type_name
    again = load_image_tokenizer(tmp_path / "tok")
    assert type(again) is type(model)
    images = random_images()
    tokens = model.encode(images)
    assert torch.equal(again.encode(images), tokens)
    assert torch.equal(again.decode(tokens), model.decode(tokens))


def test_loading_missing_or_broken_folders(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_image_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_image_tokenizer(tmp_path / "empty")
    tiny_vq().save(tmp_path / "tok")
    (tmp_path / "tok" / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_image_tokenizer(tmp_path / "tok")
    (tmp_path / "tok" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="not found"):
        load_image_tokenizer(tmp_path / "tok")
    tiny_kl().save(tmp_path / "kl")  # weights of a different model than the config says
    tiny_vq().save(tmp_path / "mixed")
    (tmp_path / "mixed" / "model.safetensors").write_bytes((tmp_path / "kl" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="do not fit"):
        load_image_tokenizer(tmp_path / "mixed")
    (tmp_path / "mixed" / "config.json").write_text('{"type": "mystery"}')
    with pytest.raises(CheckpointError, match="unknown image tokenizer type"):
        load_image_tokenizer(tmp_path / "mixed")


# ---- the EMA codebook -----------------------------------------------------------------------

def clusters(n_per, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
    return (centres[:, None] + 0.1 * torch.randn(4, n_per, 2, generator=g)).reshape(-1, 2)


def test_dead_codes_are_restarted_onto_badly_served_encodings():
    q = EMAQuantizer(codebook_size=8, code_dim=2, decay=0.9, dead_threshold=0.5)
    # One code sits on a cluster; the other seven are far from all data and never chosen.
    q.codebook.copy_(torch.tensor([[0.0, 0.0]] + [[100.0, 100.0]] * 7))
    q.ema_count.copy_(torch.tensor([1.0] + [0.0] * 7))
    q.ema_sum.copy_(q.codebook * q.ema_count[:, None])
    q.initialised.fill_(True)
    g = torch.Generator().manual_seed(0)
    z = clusters(50, seed=1)
    first = q.update(z, q.nearest(z), g)
    assert first["codes_used"] == 1 and first["restarted"] == 7
    assert q.codebook[1:].abs().max() < 10  # moved onto data
    for step in range(20):
        z = clusters(50, seed=2 + step)
        stats = q.update(z, q.nearest(z), g)
    assert stats["codes_used"] >= 4  # every cluster has a code of its own
    error = (z - q.lookup(q.nearest(z))).pow(2).sum(1).mean()
    assert error < 0.1
    assert stats["perplexity"] > 3.5


def test_ema_moves_codes_to_the_mean_of_their_encodings():
    q = EMAQuantizer(codebook_size=2, code_dim=2, decay=0.5, dead_threshold=0.0)
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    q.ema_sum.copy_(q.codebook)
    q.ema_count.fill_(1.0)
    z = torch.tensor([[1.0, 1.0], [3.0, 1.0], [9.0, 9.0]])
    for _ in range(30):
        q.update(z, q.nearest(z))
    assert torch.allclose(q.codebook, torch.tensor([[2.0, 1.0], [9.0, 9.0]]), atol=1e-3)


def test_kmeans_seeding_spreads_codes_over_clusters():
    q = EMAQuantizer(codebook_size=4, code_dim=2, decay=0.99, dead_threshold=0.03)
    q.initialise(clusters(20, seed=3), torch.Generator().manual_seed(0))
    assert len(set(q.nearest(clusters(20, seed=4)).tolist())) == 4


# ---- training -------------------------------------------------------------------------------

TRAIN_OVERRIDES = ["model.image_size=48", "model.channels=[8,16,16,16]", "model.encoder_blocks=[0,0,1,1]",
                   "model.decoder_blocks=[0,0,1,1]", "train.batch_size=8", "train.lr=0.003",
                   "train.warmup_steps=5", "train.eval_every=20", "train.eval_images=16",
                   "train.log_every=5", "train.stats_images=16"]


@pytest.mark.parametrize("kind", ["vq", "kl"])
def test_training_reduces_the_loss_and_saves_a_loadable_tokenizer(kind, tmp_path):
    from uniar.config import apply_overrides
    from uniar.tokenizers.train_image import default_config, train_image_tokenizer

    overrides = TRAIN_OVERRIDES + (["model.codebook_size=64", "model.code_dim=8", "train.vq_warmup=0.25"]
                                   if kind == "vq" else
                                   ["model.latent_channels=4"])
    cfg = apply_overrides(default_config(kind), overrides)
    summary = train_image_tokenizer(kind, cfg, tmp_path / kind, steps=40, seed=0, progress=False)
    assert summary["steps"] == 40
    with open(tmp_path / kind / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-3:]) < 0.6 * losses[0]
    assert "val_psnr" in rows[-1] and rows[-1]["val_psnr"]
    if kind == "vq":  # a plain autoencoder for the first 10 steps, then quantised
        assert not rows[0].get("codes_used") and rows[-1]["codes_used"]
        assert int(rows[-1]["val_codes_used"]) > 1 and float(rows[-1]["val_perplexity"]) > 1
    info = json.loads((tmp_path / kind / "training.json").read_text())
    assert info["steps"] == 40 and info["seed"] == 0 and info["final"]
    again = load_image_tokenizer(tmp_path / kind)
    from uniar.data.shapesworld import images
    batch = to_model(images("val", 0, 2, 48))
    assert torch.equal(again.encode(batch), summary["tokenizer"].encode(batch))


def test_learning_rate_schedule_and_budget():
    from uniar.tokenizers.train_image import Budget, TrainSettings, learning_rate

    s = TrainSettings(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(s, 0, 0.0) == pytest.approx(1e-4)
    assert learning_rate(s, 9, 0.0) == pytest.approx(1e-3)
    assert learning_rate(s, 500, 0.5) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert learning_rate(s, 1000, 1.0) == pytest.approx(1e-4)
    budget = Budget(steps=100, minutes=None, timing_steps=5)
    assert budget.progress(50) == 0.5 and budget.progress(100) == 1.0
    with pytest.raises(UserError, match="budget"):
        Budget(steps=None, minutes=None, timing_steps=5)


def test_time_budget_plans_steps_from_measured_step_time(monkeypatch):
    from uniar.tokenizers import train_image

    clock = [0.0]
    monkeypatch.setattr(train_image.time, "perf_counter", lambda: clock[0])
    budget = train_image.Budget(steps=None, minutes=1.0, timing_steps=10)
    step = 0
    while budget.progress(step) < 1.0:
        clock[0] += 0.5 if step < 40 else 0.25  # the machine gets faster after 40 steps
        budget.observe(step)
        step += 1
        if step == 13:  # 3 warm-up + 10 timed steps of 0.5 s: 60 s hold ~120 steps
            assert budget.planned == 13 + int((60 - 6.5) / 0.5)
    # re-planned upwards when the steps got faster, and the run used the whole minute
    assert budget.planned > 120 and abs(clock[0] - 60) <= 0.5


def test_cli_help_and_bad_override(capsys):
    from uniar.cli import main

    with pytest.raises(SystemExit):
        main(["train-tokenizer", "--help"])
    assert "key=value" in capsys.readouterr().out
    assert main(["train-tokenizer", "vq", "--out", "/tmp/unused", "--steps", "1", "model.nope=3"]) == 2
    assert "unknown key" in capsys.readouterr().err


# ---- diffusers adapters ---------------------------------------------------------------------

def _tiny_diffusers(cls, **extra):
    torch.manual_seed(0)
    return cls(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
               block_out_channels=(16, 16), layers_per_block=1, norm_num_groups=8, sample_size=16, **extra)


def test_diffusers_vq_adapter(tmp_path):
    from diffusers import VQModel

    vq = _tiny_diffusers(VQModel, latent_channels=4, num_vq_embeddings=32, vq_embed_dim=4)
    vq.save_pretrained(tmp_path / "movq")
    tok = load_image_tokenizer(tmp_path / "movq")
    assert (tok.kind, tok.grid, tok.num_tokens, tok.codebook_size) == ("discrete", (8, 8), 64, 32)
    assert torch.equal(tok.code_vectors(), vq.quantize.embedding.weight.detach())
    images = random_images()
    ids = tok.encode(images)
    assert ids.dtype == torch.long and ids.shape == (3, 64)
    out = tok.decode(ids)
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.float32
    with torch.no_grad():  # decoding our ids equals the model's own quantise-and-decode
        own = vq.decode(vq.encode(images).latents).sample.clamp(-1, 1)
    assert torch.allclose(out, own, atol=1e-5)
    assert torch.equal(tok.decode(ids), out)  # deterministic
    tok.save(tmp_path / "saved")
    again = load_image_tokenizer(tmp_path / "saved")
    assert torch.equal(again.encode(images), ids) and torch.equal(again.decode(ids), out)


def test_diffusers_kl_adapter(tmp_path):
    from diffusers import AutoencoderKL

    vae = _tiny_diffusers(AutoencoderKL, latent_channels=4)
    vae.save_pretrained(tmp_path / "vae")
    tok = load_image_tokenizer(tmp_path / "vae")
    assert (tok.kind, tok.grid, tok.token_dim, tok.normalize) == ("continuous", (8, 8), 4, "global")
    images = random_images()
    tokens = tok.encode(images)
    with torch.no_grad():
        mean = vae.encode(images).latent_dist.mean
        assert torch.allclose(tokens, (mean * vae.config.scaling_factor).flatten(2).transpose(1, 2), atol=1e-6)
        own = vae.decode(mean).sample.clamp(-1, 1)
    assert torch.allclose(tok.decode(tokens), own, atol=1e-4)
    with pytest.raises(UserError, match="fit_normalization"):
        tok.normalize = "per_dim"
        tok.encode(images)
    tok.fit_normalization([random_images(8, seed=s) for s in range(2)])
    per_dim = tok.encode(images)
    assert torch.allclose(tok.decode(per_dim), own, atol=1e-4)
    tok.save(tmp_path / "saved")
    again = load_image_tokenizer(tmp_path / "saved")
    assert again.normalize == "per_dim" and torch.equal(again.encode(images), per_dim)


def test_diffusers_adapter_errors(tmp_path):
    from diffusers import AutoencoderKL

    from uniar.tokenizers.diffusers_adapters import DiffusersKLTokenizer, DiffusersVQTokenizer

    with pytest.raises(CheckpointError, match="not found"):
        DiffusersVQTokenizer.from_pretrained(tmp_path / "missing")
    _tiny_diffusers(AutoencoderKL, latent_channels=4).save_pretrained(tmp_path / "vae")
    with pytest.raises(CheckpointError, match="not a diffusers VQModel"):
        DiffusersVQTokenizer.from_pretrained(tmp_path / "vae")
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="weights"):
        DiffusersKLTokenizer.from_pretrained(tmp_path / "vae")
