"""The per-token diffusion head: schedule maths, masked loss, sampler contracts, and that it learns."""

import dataclasses

import pytest
import torch

from uniar.config import from_dict
from uniar.errors import UserError
from uniar.models.diffusion import DiffusionHead, DiffusionHeadConfig, DiffusionSchedule, spaced_timesteps
from uniar.utils.io import load_safetensors, save_safetensors


def small_head(**overrides) -> DiffusionHead:
    torch.manual_seed(0)
    fields = dict(token_dim=3, cond_dim=5, width=16, depth=2, sample_steps=10) | overrides
    return DiffusionHead(DiffusionHeadConfig(**fields))


def randomize(head: DiffusionHead, seed: int = 0) -> DiffusionHead:
    """Give the zero-initialised layers random weights so that outputs depend on every input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return head


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- schedule ----


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_runs_from_clean_to_pure_noise(kind):
    s = DiffusionSchedule.create(kind, 1000)
    ab = s.alpha_bars
    assert len(s) == 1000 and ab.dtype == torch.float64
    assert bool((ab[1:] < ab[:-1]).all())
    assert ab[0] > 0.9998 and ab[-1] < 1e-4
    assert bool((s.betas <= 0.999).all())


def test_cosine_beta_is_clipped_at_the_last_step():
    assert DiffusionSchedule.create("cosine").betas[-1].item() == pytest.approx(0.999)


@pytest.mark.parametrize("count", [1, 2, 7, 50, 1000])
def test_respacing_keeps_alpha_bar_at_the_chosen_timesteps(count):
    s = DiffusionSchedule.create("cosine", 1000)
    r = s.respaced(count)
    kept = r.timesteps
    assert len(r) == count and len(set(kept.tolist())) == count
    assert kept[-1] == 999 and (count == 1 or kept[0] == 0)
    torch.testing.assert_close(r.alpha_bars, s.alpha_bars[kept], rtol=1e-12, atol=0)


def test_spacing_rejects_more_steps_than_training_steps():
    with pytest.raises(UserError, match="1..1000"):
        spaced_timesteps(1000, 1001)
    with pytest.raises(UserError):
        spaced_timesteps(1000, 0)


def test_unknown_schedule_and_prediction_are_clear_errors():
    with pytest.raises(UserError, match="cosine, linear"):
        DiffusionSchedule.create("sigmoid")
    s = DiffusionSchedule.create("cosine", 10)
    with pytest.raises(UserError, match="eps, v"):
        s.target(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), "x0")


def _noised(s, n=64, d=4, seed=0):
    g = seeded(seed)
    x0 = torch.randn(n, d, generator=g, dtype=torch.float64)
    eps = torch.randn(n, d, generator=g, dtype=torch.float64)
    t = torch.randint(0, len(s), (n,), generator=g)
    return x0, eps, t, s.q_sample(x0, t, eps)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_split_prediction_inverts_the_training_target(prediction):
    s = DiffusionSchedule.create("cosine", 1000)
    x0, eps, t, x_t = _noised(s)
    t = t.clamp(max=900)  # eps -> x0 divides by sqrt(ab), ~5e-5 near T; keep float64 round-off small
    x_t = s.q_sample(x0, t, eps)
    got_x0, got_eps = s.split_prediction(s.target(x0, eps, t, prediction), x_t, t, prediction)
    torch.testing.assert_close(got_x0, x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(got_eps, eps, rtol=0, atol=1e-9)


def test_v_target_matches_its_definition():
    s = DiffusionSchedule.create("linear", 1000)
    x0, eps, t, _ = _noised(s)
    ab = s.alpha_bars[t][:, None]
    torch.testing.assert_close(s.target(x0, eps, t, "v"), ab.sqrt() * eps - (1 - ab).sqrt() * x0)


def test_clipping_recomputes_eps_so_the_pair_still_explains_x_t():
    s = DiffusionSchedule.create("cosine", 1000)
    x_t = torch.randn(8, 3, generator=seeded(1), dtype=torch.float64)
    eps = torch.randn(8, 3, generator=seeded(2), dtype=torch.float64)
    i = 990
    x0 = (x_t - (1 - s.alpha_bars[i]).sqrt() * eps) / s.alpha_bars[i].sqrt()  # huge: t is near T
    clipped, new_eps = s.clip_x0(x0, eps, x_t, i, 8.0)
    assert clipped.abs().max() <= 8.0 and x0.abs().max() > 8.0
    torch.testing.assert_close(s.alpha_bars[i].sqrt() * clipped + (1 - s.alpha_bars[i]).sqrt() * new_eps, x_t)
    assert s.clip_x0(x0, eps, x_t, i, None) == (x0, eps)


@pytest.mark.parametrize("i", [0, 1, 5, 9])
def test_ddim_with_eta_one_is_the_ddpm_step(i):
    s = DiffusionSchedule.create("cosine", 1000).respaced(10)
    g = seeded(3)
    x_t, x0, noise = (torch.randn(16, 4, generator=g, dtype=torch.float64) for _ in range(3))
    eps = s.eps_from_x0(x_t, x0, i)
    for temperature in (1.0, 0.7):
        ddpm = s.ddpm_step(x0, x_t, i, noise, temperature)
        torch.testing.assert_close(s.ddim_step(x0, eps, i, noise, eta=1.0, temperature=temperature), ddpm)
    assert s.step_noise_std(i, "ddpm", 0.0) == pytest.approx(s.step_noise_std(i, "ddim", 1.0))
    assert (s.step_noise_std(i, "ddpm", 0.0) == 0) == (i == 0)  # the last step adds no noise


# ---- head: shape, init, loss ----


def test_default_head_size_matches_mar_width_256():
    head = DiffusionHead(DiffusionHeadConfig(token_dim=16, cond_dim=256))
    assert sum(p.numel() for p in head.parameters()) == 1_324_304


def test_new_head_predicts_zero():
    head = small_head()
    out = head(torch.randn(7, 3), torch.randint(0, 1000, (7,)), torch.randn(7, 5))
    assert out.shape == (7, 3) and bool((out == 0).all())


def test_masked_tokens_get_no_gradient_and_do_not_change_the_loss():
    head = randomize(small_head())
    cond = torch.randn(6, 5, requires_grad=True)
    target = torch.randn(6, 3)
    mask = torch.tensor([True, False, True, True, False, True])
    loss = head.loss(cond, target, mask, generator=seeded(4))
    loss.backward()
    assert bool((cond.grad[~mask] == 0).all()) and bool((cond.grad[mask].abs().sum(-1) > 0).all())
    only_kept = head.loss(cond[mask], target[mask], generator=seeded(4))
    assert loss.item() == pytest.approx(only_kept.item(), rel=1e-6)


def test_float_mask_weights_tokens_and_all_zero_mask_gives_zero():
    head = randomize(small_head(timesteps_per_token=1))
    cond, target = torch.randn(2, 5), torch.randn(2, 3)
    per_token = [head.loss(cond[k : k + 1], target[k : k + 1], generator=seeded(5)).item() for k in range(2)]
    # With a weight of 0 the second token is dropped before any draw, so token 0 sees the same (t, noise).
    weighted = head.loss(cond, target, torch.tensor([1.0, 0.0]), generator=seeded(5))
    assert weighted.item() == pytest.approx(per_token[0])
    zero = head.loss(cond, target, torch.zeros(2), generator=seeded(5))
    assert zero.item() == 0.0 and zero.requires_grad


def test_loss_runs_in_fp32_under_bf16_autocast():
    head = randomize(small_head())
    cond, target = torch.randn(9, 5), torch.randn(9, 3)
    plain = head.loss(cond, target, generator=seeded(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = head.loss(cond.bfloat16(), target, generator=seeded(6))
    assert auto.dtype == torch.float32
    assert auto.item() == pytest.approx(head.loss(cond.bfloat16().float(), target, generator=seeded(6)).item())
    assert plain.dtype == torch.float32


def test_untrained_eps_loss_is_the_noise_variance():
    head = small_head(token_dim=8, cond_dim=4)
    loss = head.loss(torch.randn(512, 4), torch.randn(512, 8), generator=seeded(7))
    assert loss.item() == pytest.approx(1.0, abs=0.05)


def test_bad_inputs_raise_clear_errors():
    head = small_head()
    with pytest.raises(UserError, match=r"\(N, 5\)"):
        head.loss(torch.randn(4, 6), torch.randn(4, 3))
    with pytest.raises(UserError, match="target"):
        head.loss(torch.randn(4, 5), torch.randn(4, 2))
    with pytest.raises(UserError, match="mask"):
        head.loss(torch.randn(4, 5), torch.randn(4, 3), torch.ones(3, dtype=torch.bool))
    with pytest.raises(UserError, match="mask"):
        head.loss(torch.randn(4, 5), torch.randn(4, 3), torch.ones(4, dtype=torch.long))
    with pytest.raises(UserError, match="uncond"):
        head.sample(torch.randn(4, 5), seeded(0), cfg_scale=2.0)
    with pytest.raises(UserError, match="rows"):
        head.sample(torch.randn(4, 5), seeded(0), cfg_scale=2.0, uncond=torch.randn(3, 5))
    with pytest.raises(UserError, match="one scale per token"):
        head.sample(torch.randn(4, 5), seeded(0), cfg_scale=torch.ones(3), uncond=torch.randn(4, 5))
    with pytest.raises(UserError, match="sampling steps"):
        head.sample(torch.randn(4, 5), seeded(0), steps=0)
    with pytest.raises(UserError, match="sampler"):
        head.sample(torch.randn(4, 5), seeded(0), sampler="euler")
    with pytest.raises(UserError, match="temperature"):
        head.sample(torch.randn(4, 5), seeded(0), temperature=-1.0)


@pytest.mark.parametrize(
    "bad",
    [dict(width=0), dict(prediction="x0"), dict(schedule="sigmoid"), dict(sample_steps=2000), dict(clip_x0=0.0)],
)
def test_bad_config_is_a_clear_error(bad):
    with pytest.raises(UserError, match="diffusion head"):
        DiffusionHeadConfig(**bad)


def test_config_loads_from_a_dict_like_yaml():
    cfg = from_dict(DiffusionHeadConfig, {"token_dim": 32, "prediction": "v", "clip_x0": None})
    assert (cfg.token_dim, cfg.prediction, cfg.clip_x0) == (32, "v", None)
    assert from_dict(DiffusionHeadConfig, dataclasses.asdict(cfg)) == cfg


# ---- sampling contracts ----


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_repeats_from_a_seed(sampler):
    head = randomize(small_head(ddim_eta=0.5))
    cond = torch.randn(12, 5)
    a = head.sample(cond, seeded(8), sampler=sampler)
    b = head.sample(cond, seeded(8), sampler=sampler)
    c = head.sample(cond, seeded(9), sampler=sampler)
    assert a.shape == (12, 3) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cfg_scale_one_is_exactly_no_guidance():
    head = randomize(small_head())
    cond, uncond = torch.randn(10, 5), torch.randn(10, 5)
    plain = head.sample(cond, seeded(10))
    assert torch.equal(head.sample(cond, seeded(10), cfg_scale=1.0, uncond=uncond), plain)
    assert torch.equal(head.sample(cond, seeded(10), cfg_scale=torch.ones(10), uncond=uncond), plain)
    assert not torch.equal(head.sample(cond, seeded(10), cfg_scale=3.0, uncond=uncond), plain)


def test_guidance_branches_share_the_noise():
    # With uncond = cond both branches see the same x_t, so any scale gives the unguided sample.
    head = randomize(small_head())
    cond = torch.randn(10, 5)
    plain = head.sample(cond, seeded(11))
    guided = head.sample(cond, seeded(11), cfg_scale=4.0, uncond=cond)
    torch.testing.assert_close(guided, plain, rtol=1e-4, atol=1e-4)


def test_per_token_cfg_scale_applies_each_tokens_own_scale():
    head = randomize(small_head())
    cond, uncond = torch.randn(6, 5), torch.randn(6, 5)
    scales = torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    noise = torch.randn(6, 3, generator=seeded(12))
    kw = dict(uncond=uncond, temperature=0.0, noise=noise)
    per_token = head.sample(cond, seeded(0), cfg_scale=scales, **kw)
    for k in (1, 4):
        alone = head.sample(cond, seeded(0), cfg_scale=scales[k].item(), **kw)
        torch.testing.assert_close(per_token[k], alone[k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_guiding_the_output_is_guiding_eps(prediction):
    s = DiffusionSchedule.create("cosine", 1000)
    g = seeded(13)
    x_t, out_c, out_u = (torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    scale, i = 2.5, 700
    _, eps_c = s.split_prediction(out_c, x_t, i, prediction)
    _, eps_u = s.split_prediction(out_u, x_t, i, prediction)
    _, eps_g = s.split_prediction(out_u + scale * (out_c - out_u), x_t, i, prediction)
    torch.testing.assert_close(eps_g, eps_u + scale * (eps_c - eps_u))


def test_ddim_at_temperature_zero_is_deterministic_given_the_initial_noise():
    head = randomize(small_head(sampler="ddim", ddim_eta=1.0))
    cond, noise = torch.randn(8, 5), torch.randn(8, 3, generator=seeded(14))
    g1, g2 = seeded(1), seeded(2)
    cold = head.sample(cond, g1, temperature=0.0, noise=noise)
    assert torch.equal(cold, head.sample(cond, g2, temperature=0.0, noise=noise))
    assert torch.equal(g1.get_state(), seeded(1).get_state())  # no draw was made
    assert not torch.equal(head.sample(cond, g1, noise=noise), head.sample(cond, g2, noise=noise))


def test_samples_are_identical_after_a_safetensors_round_trip(tmp_path):
    head = randomize(small_head(prediction="v"))
    save_safetensors(tmp_path / "head.safetensors", head.state_dict())
    again = small_head(prediction="v")
    again.load_state_dict(load_safetensors(tmp_path / "head.safetensors"))
    cond = torch.randn(5, 5)
    assert torch.equal(head.sample(cond, seeded(15)), again.sample(cond, seeded(15)))


# ---- it learns a conditional distribution ----

MEANS = torch.tensor([[-2.0, 1.0], [2.0, -1.0]])
SPREAD = 0.3


@pytest.fixture(scope="module", params=["eps", "v"])
def trained(request):
    """A tiny head trained on 2-D tokens from one of two Gaussians, chosen by a condition id."""
    torch.manual_seed(0)
    # The clip sits just beyond the data (|x| < 3); ±8 is meant for unit-std latents.
    head = DiffusionHead(DiffusionHeadConfig(
        token_dim=2, cond_dim=8, width=64, depth=2, prediction=request.param, sample_steps=25, clip_x0=4.0))
    ids_to_cond = torch.randn(2, 8, generator=seeded(1))
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=0.0)
    g = seeded(2)
    for _ in range(200):
        ids = torch.randint(0, 2, (128,), generator=g)
        tokens = MEANS[ids] + SPREAD * torch.randn(128, 2, generator=g)
        loss = head.loss(ids_to_cond[ids], tokens, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head, ids_to_cond


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_trained_head_samples_near_the_conditions_mean(trained, sampler):
    head, ids_to_cond = trained
    for c in range(2):
        out = head.sample(ids_to_cond[c].expand(200, 8), seeded(3), sampler=sampler)
        nearest = (out[:, None] - MEANS[None]).norm(dim=-1).argmin(dim=1)
        assert (nearest == c).float().mean() > 0.9
        assert (out.median(dim=0).values - MEANS[c]).abs().max() < 0.3
        assert bool((out.std(dim=0) > 0.1).all())  # a distribution, not a collapse onto the mean
        if sampler == "ddpm":  # ancestral sampling also gets the spread about right (DDIM on eps is wider)
            assert bool((out.std(dim=0) < 1.5 * SPREAD).all())
