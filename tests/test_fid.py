"""Domain FID: known answers, the feature network's cache, user-supplied feature modules."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uniar.data.shapesworld import images
from uniar.errors import UserError
from uniar.eval import fid
from uniar.eval.fid import DEFAULT_RECIPE, FeatureRecipe, domain_fid, feature_network, fid_sw

# A few seconds of training: enough to test the plumbing and the orderings below, which hold
# even for a barely trained network. The default recipe is tested (slowly) at the end.
TINY = FeatureRecipe(train_images=256, steps=20, batch_size=32, lr=1e-2, width=8, cell_dim=8, eval_images=64)
N = 100


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fid_sw")


@pytest.fixture(scope="module")
def net(cache):
    return feature_network(recipe=TINY, cache=cache)


@pytest.fixture(scope="module")
def real():
    return images("test", 0, N)


@pytest.fixture(scope="module")
def real2():
    return images("val", 0, N)


def add_noise(x, sigma, seed=0):
    noise = np.random.default_rng(seed).normal(0, sigma, x.shape)
    return np.clip(x + noise, 0, 255).astype(np.uint8)


def box_blur(x, k):
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float()
    t = F.avg_pool2d(t, k, stride=1, padding=k // 2, count_include_pad=False)
    return t.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def test_set_against_itself_is_zero(net, real):
    assert abs(domain_fid(real, real, net)) < 1e-6


def test_same_distribution_is_small_next_to_noise_and_blank(net, real, real2):
    same = domain_fid(real, real2, net)
    assert same < 0.2 * domain_fid(real, np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8), net)
    assert same < 0.2 * domain_fid(real, np.zeros_like(real), net)


def test_worse_corruption_scores_worse(net, real, real2):
    scores = [domain_fid(real, add_noise(real2, s), net) for s in (0, 20, 60)]
    assert scores == sorted(scores), scores
    assert domain_fid(real, real2, net) < domain_fid(real, box_blur(real2, 7), net)


def test_user_feature_module_known_answer(real):
    class ChannelMeans(torch.nn.Module):
        def forward(self, x):
            return x.float().mean(dim=(2, 3))

    a = torch.from_numpy(real).permute(0, 3, 1, 2).contiguous()  # torch layout (N, 3, H, W)
    assert int(a.max()) <= 245
    # Shifting every pixel by 10 moves each channel mean by 10 and leaves the covariance alone:
    # FID = |mean shift|^2 = 3 * 10^2.
    assert domain_fid(a, a + 10, feature=ChannelMeans()) == pytest.approx(300.0, rel=1e-6)


def test_fid_sw_uses_real_split_images(net, real, real2):
    assert fid_sw(real2, split="test", feature=net) == pytest.approx(domain_fid(real, real2, net))


def test_feature_network_takes_any_size(net):
    for size in (48, 64, 96):
        x = torch.from_numpy(images("val", 0, 2, size)).permute(0, 3, 1, 2)
        assert net(x).shape == (2, net.num_features)


def test_bad_inputs_raise(net, real):
    with pytest.raises(UserError, match="at least 2"):
        domain_fid(real[:1], real, net)
    with pytest.raises(UserError, match="uint8"):
        domain_fid(real.astype(np.float32), real, net)
    with pytest.raises(UserError, match="uint8"):
        net(torch.zeros(1, 3, 64, 64))


# ----------------------------------------------------------------- the cache


def test_cache_is_reused(net, cache, real, monkeypatch):
    files = sorted(p.name for p in cache.iterdir())
    assert files == [f"feature-net-{TINY.hash()}.json", f"feature-net-{TINY.hash()}.safetensors"]
    info = json.loads((cache / files[0]).read_text())
    assert info["recipe"] == dataclasses.asdict(TINY) and info["recipe_hash"] == TINY.hash()

    def no_training(recipe):
        raise AssertionError("the cached network should have been loaded")

    monkeypatch.setattr(fid, "train_feature_network", no_training)
    again = feature_network(recipe=TINY, cache=cache, train_if_missing=False)
    x = torch.from_numpy(real[:8]).permute(0, 3, 1, 2)
    assert torch.equal(again(x), net(x))


def test_training_is_deterministic(net, real):
    retrained, _ = fid.train_feature_network(TINY)
    x = torch.from_numpy(real[:8]).permute(0, 3, 1, 2)
    assert torch.allclose(retrained(x), net(x), atol=1e-5)


def test_other_recipe_or_stale_json_rebuilds(net, cache, tmp_path):
    other = dataclasses.replace(TINY, seed=1)
    assert other.hash() != TINY.hash()
    with pytest.raises(UserError, match="no ShapesWorld feature network"):
        feature_network(recipe=other, cache=cache, train_if_missing=False)
    # A JSON that does not describe the recipe (edited, or from another version) is not trusted.
    for name in (f"feature-net-{TINY.hash()}.json", f"feature-net-{TINY.hash()}.safetensors"):
        (tmp_path / name).write_bytes((cache / name).read_bytes())
    stale = tmp_path / f"feature-net-{TINY.hash()}.json"
    stale.write_text(json.dumps({"recipe": {}, "recipe_hash": TINY.hash()}))
    with pytest.raises(UserError):
        feature_network(recipe=TINY, cache=tmp_path, train_if_missing=False)
    rebuilt = feature_network(recipe=TINY, cache=tmp_path)
    assert json.loads(stale.read_text())["recipe"] == dataclasses.asdict(TINY)
    assert rebuilt.num_features == net.num_features


def test_cache_folder_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIAR_CACHE", str(tmp_path))
    assert fid.cache_dir() == tmp_path / "fid_sw"


@pytest.mark.slow
def test_default_recipe_reads_scenes_and_orders_corruptions(tmp_path):
    """The default network reads held-out `val` images (novel pairs included) almost perfectly,
    and its FID grows with blur and noise."""
    net = feature_network(cache=tmp_path)
    info = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert info["recipe"] == dataclasses.asdict(DEFAULT_RECIPE)
    assert info["val"]["object_accuracy"] > 0.98
    real, real2 = images("test", 0, 500), images("val", 0, 500)
    blurred = [domain_fid(real, box_blur(real2, k), net) for k in (1, 3, 5)]
    noised = [domain_fid(real, add_noise(real2, s), net) for s in (0, 5, 20)]
    assert blurred == sorted(blurred) and noised == sorted(noised), (blurred, noised)
