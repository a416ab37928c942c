"""UniFluid: loss wiring, random order, continuous sampling, encoders, training and the presets."""

import numpy as np
import pytest
import torch

from helpers import text_tokenizer, tiny_backbone_config, tiny_unifluid_train_config
from uniar.data.sequence import GEN, UND, ImageData, SequenceBuilder, collate
from uniar.errors import UserError
from uniar.models.diffusion import DiffusionHeadConfig
from uniar.models.losses import check_loss_norm
from uniar.models.encoders import BuiltinEncoderConfig, build_und_encoder, merge_neighbours
from uniar.models.unifluid import UniFluid, UniFluidConfig
from uniar.models.vocab import Vocabulary
from uniar.sample.decode import Decoder, SamplingConfig

GRID, D, S = (2, 4), 4, 32  # 8 generated tokens of 4 dims; 32 px images for the built-in encoder
N = GRID[0] * GRID[1]


def tiny_model(seed: int = 0, und: str = "builtin", **cfg) -> UniFluid:
    from uniar.models.backbone import build_backbone

    torch.manual_seed(seed)
    vocab = Vocabulary.from_tokenizer(text_tokenizer(), 0)
    backbone = build_backbone(tiny_backbone_config(seed=seed), vocab.size)
    g = cfg.get("token_group", 1)
    head = DiffusionHeadConfig(token_dim=D * g * g, cond_dim=64, width=32, depth=2, sample_steps=6)
    config = UniFluidConfig(head=head, und_encoder=und, **cfg)
    encoder = build_und_encoder(und, hidden_size=64, projector=cfg.get("und_projector", "mlp"), image_size=S,
                                gen_len=N // (g * g),
                                token_dim=D * g * g, builtin=BuiltinEncoderConfig([8, 16, 16]),
                                merge=cfg.get("und_merge", 1))
    return UniFluid(backbone, vocab, config, GRID, encoder)


def builder_for(model) -> SequenceBuilder:
    return SequenceBuilder(text_tokenizer(), model.vocab, gen_len=model.gen_len, und_len=model.und_len,
                           discrete=False, max_len=256)


def image(seed: int) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    return ImageData(latents=torch.randn(N, D, generator=g), pixels=torch.rand(3, S, S, generator=g) * 2 - 1)


def randomize_head(model, seed=0):
    """The head's output layers start at zero; random weights make every input matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))


def mixed_batch(model):
    b = builder_for(model)
    seqs = [b.t2i("a red circle", image(1)), b.caption(image(2), "a small cross"),
            b.vqa(image(3), "what color?", "red"), b.t2i(None, image(4), order=np.random.default_rng(0).permutation(N)),
            b.text("plain text here")]
    return collate(seqs, pad_id=0)


# ---- the loss -----------------------------------------------------------------------------------


def test_loss_components_counts_and_values():
    model = tiny_model()
    randomize_head(model)
    batch = mixed_batch(model)
    counts = model.target_counts(batch)
    gen_targets = (batch.role == GEN) & batch.targets
    assert counts["diffusion"] == int(gen_targets.sum()) == 2 * N
    text_targets = batch.targets & batch.mask & (batch.role == 0)
    assert counts["ce"] == int(text_targets[:, 1:].sum())

    torch.manual_seed(5)
    parts = model.loss(batch)
    assert set(parts.components) == {"ce", "diffusion"}
    # recompute both components by hand from the same hidden states
    latents = model.gen_latents(batch)
    with torch.no_grad():
        hidden = model.hidden(model.embed(batch.ids, batch), batch.positions, None)
        sel = text_targets[:, 1:]
        ce = torch.nn.functional.cross_entropy(model.logits(hidden[:, :-1][sel]), batch.ids[:, 1:][sel],
                                               reduction="sum")
        torch.manual_seed(5)
        gsel = gen_targets[:, 1:]
        diff = model.head.loss(hidden[:, :-1][gsel], latents[:, 1:][gsel]) * int(gsel.sum())
    torch.testing.assert_close(parts.components["ce"].detach(), ce, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(parts.components["diffusion"].detach(), diff, rtol=1e-5, atol=1e-5)
    # the diffusion targets are the GEN latents at their image positions
    b = 3  # the random-order row
    span = (batch.role[b] == GEN).nonzero().flatten()
    order = batch.image_pos[b, span]
    torch.testing.assert_close(latents[b, span], batch.images[batch.image_index[b, span[0]]].latents[order])
    assert {"ce_caption", "ce_vqa", "ce_text", "diffusion_t2i"} <= set(parts.per_task_sum)


def test_sequence_loss_norm_weighs_every_row_once():
    """loss_norm=sequence: each component is the mean over rows of each row's mean target loss."""
    model = tiny_model()
    randomize_head(model)
    batch = mixed_batch(model)
    seq = tiny_model()
    seq.load_state_dict(model.state_dict())
    seq.loss_norm = "sequence"
    counts = seq.target_counts(batch)
    text_targets = (batch.targets & batch.mask & (batch.role == 0))[:, 1:]
    gen_targets = ((batch.role == GEN) & batch.targets)[:, 1:]
    assert counts == {"ce": int((text_targets.sum(1) > 0).sum()), "diffusion": 2}

    torch.manual_seed(5)
    parts = seq.loss(batch)
    with torch.no_grad():
        hidden = model.hidden(model.embed(batch.ids, batch), batch.positions, None)
        ce = torch.nn.functional.cross_entropy(model.logits(hidden[:, :-1][text_targets]),
                                               batch.ids[:, 1:][text_targets], reduction="none")
        rows = torch.arange(batch.ids.shape[0])[:, None].expand_as(text_targets)[text_targets]
        row_means = [ce[rows == r].mean() for r in rows.unique()]
        # both GEN rows hold N targets each, so the row weights are equal and the mean is unchanged
        torch.manual_seed(5)
        diff = model.head.loss(hidden[:, :-1][gen_targets], model.gen_latents(batch)[:, 1:][gen_targets])
    torch.testing.assert_close(parts.components["ce"].detach(), torch.stack(row_means).sum(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts.components["diffusion"].detach(), diff * 2, rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="loss_norm must be one of token, sequence, turn"):
        check_loss_norm("row")


def test_lambda_scales_the_diffusion_gradient_only():
    model = tiny_model()
    randomize_head(model)
    batch = mixed_batch(model)
    counts = model.target_counts(batch)

    def head_grad(lam):
        model.cfg.loss_lambda = lam
        model.zero_grad()
        torch.manual_seed(0)
        parts = model.loss(batch)
        w = model.loss_weights()
        sum(w[n] * parts.components[n] / counts[n] for n in w).backward()
        return model.head.final.linear.weight.grad.clone(), model.backbone.tok_embed.weight.grad.clone()

    assert model.loss_weights() == {"ce": 1.0, "diffusion": model.cfg.loss_lambda}
    h1, e1 = head_grad(1.0)
    h3, e3 = head_grad(3.0)
    h0, e0 = head_grad(0.0)
    torch.testing.assert_close(h3, 3 * h1)
    assert float(h0.abs().max()) == 0.0  # the head learns only from the diffusion loss
    assert not torch.allclose(e3, e1)  # the backbone hears both


def test_gradients_reach_projection_head_encoder_and_backbone():
    model = tiny_model()
    batch = mixed_batch(model)
    parts = model.loss(batch)
    (parts.components["ce"] + parts.components["diffusion"]).backward()
    for name, p in [("in_proj", model.in_proj.weight), ("cur_pos", model.cur_pos.weight),
                    ("next_pos", model.next_pos.weight), ("head out", model.head.final.linear.weight),
                    ("encoder", model.und.encoder.down[0].weight), ("projector", model.und.projector[0].weight)]:
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    # the diffusion loss alone moves the backbone through the conditioning hidden states
    randomize_head(model)
    model.zero_grad()
    model.loss(batch).components["diffusion"].backward()
    assert float(model.backbone.blocks[0].attn.wq.weight.grad.abs().sum()) > 0


def test_tiny_unifluid_overfits_a_small_batch():
    model = tiny_model()
    b = builder_for(model)
    batch = collate([b.t2i(f"prompt {i}", image(10 + i)) for i in range(4)], pad_id=0)
    n = model.target_counts(batch)["diffusion"]

    def diffusion_loss():
        torch.manual_seed(123)  # the same noise and timesteps before and after
        with torch.no_grad():
            return float(model.loss(batch).components["diffusion"]) / n

    before = diffusion_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(120):
        parts = model.loss(batch)
        loss = parts.components["diffusion"] / n + parts.components["ce"] / model.target_counts(batch)["ce"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = diffusion_loss()
    assert before > 0.8 and after < 0.3 * before, (before, after)


def test_random_order_conditions_step_j_on_the_token_at_order_j():
    model = tiny_model()
    b = builder_for(model)
    order = [5, 2, 7, 0, 3, 1, 6, 4]
    img = image(7)
    batch = collate([b.t2i("a red circle", img, order=order)], pad_id=0)
    span = (batch.role[0] == GEN).nonzero().flatten()
    start = int(span[0])
    assert batch.next_image_pos[0, start - 1:start + N - 1].tolist() == order  # <boi> points at order[0]
    assert batch.image_pos[0, span].tolist() == order
    latents = model.gen_latents(batch)
    torch.testing.assert_close(latents[0, span], img.latents[order])  # target of step j = latent order[j]

    def conds():
        with torch.no_grad():
            h = model.hidden(model.embed(batch.ids, batch), batch.positions, None)
        return h[0, start - 1:start + N - 1]  # the hidden state that conditions step j

    ref = conds()
    j = 4
    with torch.no_grad():
        model.next_pos.weight[order[j]] += 1.0  # the embedding of "the next token goes to order[j]"
    moved = conds()
    assert torch.allclose(moved[:j], ref[:j], atol=1e-6)  # earlier steps are not told about it
    assert not torch.allclose(moved[j], ref[j], atol=1e-3)  # step j is


def test_random_order_without_position_embeddings_is_refused():
    model = tiny_model(image_pos_embed="none")
    b = builder_for(model)
    raster = collate([b.t2i("x", image(0))], pad_id=0)
    model.loss(raster)  # raster order works without them
    with pytest.raises(UserError, match="next-position embedding"):
        model.loss(collate([b.t2i("x", image(0), order=list(reversed(range(N))))], pad_id=0))


def test_und_image_without_pixels_is_a_clear_error():
    model = tiny_model()
    b = builder_for(model)
    batch = collate([b.caption(ImageData(latents=torch.zeros(N, D)), "a caption")], pad_id=0)
    with pytest.raises(UserError, match="pixels"):
        model.loss(batch)


def test_vae_understanding_encoder_reads_the_latents():
    model = tiny_model(und="vae")
    assert model.und_len == N and not model.reads_pixels
    b = builder_for(model)
    batch = collate([b.caption(ImageData(latents=torch.randn(N, D)), "a caption")], pad_id=0)
    model.loss(batch).components["ce"].backward()
    assert float(model.und.projector[0].weight.grad.abs().sum()) > 0


def test_und_position_embedding_tells_the_model_where_each_read_token_sits():
    lat = torch.randn(N, D)
    b = builder_for(tiny_model(und="vae"))
    rows = [b.caption(ImageData(latents=lat), "a caption"),
            b.caption(ImageData(latents=lat.flip(0)), "a caption")]  # the same tokens, reversed
    for on in (False, True):
        model = tiny_model(und="vae", und_pos_embed=on)
        assert (model.und_pos is not None) == on
        with torch.no_grad():
            x = [model.embed(collate([r], pad_id=0).ids, collate([r], pad_id=0)) for r in rows]
        und = collate([rows[0]], pad_id=0).role[0] == UND
        same = torch.allclose(x[0][0, und].sort(0).values, x[1][0, und].sort(0).values, atol=1e-6)
        assert same != on  # without it a permuted image reads as the same set of inputs
    model.loss(collate(rows, pad_id=0)).components["ce"].backward()
    assert float(model.und_pos.weight.grad.abs().sum()) > 0


def test_turn_loss_norm_counts_each_vqa_answer_and_each_image_once():
    model = tiny_model()
    b = builder_for(model)
    lat = torch.randn(N, D)
    rows = [b.vqa(ImageData(latents=lat), "what color?", "red", follow_ups=[("what shape?", "circle")]),
            b.t2i("a prompt", ImageData(latents=lat))]
    batch = collate(rows, pad_id=0)
    model.loss_norm = "turn"
    # ce: two answers + the t2i row's <eoi> <eos>; diffusion: one image
    assert model.target_counts(batch) == {"ce": 3, "diffusion": 1}
    model.loss_norm = "sequence"
    assert model.target_counts(batch) == {"ce": 2, "diffusion": 1}


def test_shared_und_positions_are_the_next_position_table():
    lat = torch.randn(N, D)
    model = tiny_model(und="vae", und_pos_embed=True, und_pos_shared=True)
    assert model.und_pos is None and model.next_pos is not None
    row = builder_for(model).caption(ImageData(latents=lat), "a caption")
    batch = collate([row], pad_id=0)
    und = batch.role[0] == UND
    with torch.no_grad():
        x = model.embed(batch.ids, batch)[0, und]
        feats = model.und([ImageData(latents=lat)], x.device, prepare=model.group_tokens)[0]
    # read token j carries the embedding the input predicting generated token j carries
    torch.testing.assert_close(x - feats[batch.image_pos[0, und]], model.next_pos.weight[batch.image_pos[0, und]])
    model.loss(batch).components["ce"].backward()  # a caption alone trains the shared table
    assert float(model.next_pos.weight.grad.abs().sum()) > 0
    with pytest.raises(UserError, match="und_pos_embed"):
        UniFluidConfig(und_pos_shared=True)
    with pytest.raises(UserError, match="next-position"):
        UniFluidConfig(und_pos_embed=True, und_pos_shared=True, image_pos_embed="none")


def test_gen_projector_reads_an_image_as_a_generated_one_is_read():
    lat = torch.randn(N, D)
    model = tiny_model(und="vae", und_pos_embed=True, und_projector="gen")
    assert model.und_pos is None and not list(model.und.parameters())  # no input path of its own
    b = builder_for(model)
    read = collate([b.caption(ImageData(latents=lat), "a caption")], pad_id=0)
    drawn = collate([b.t2i("a caption", ImageData(latents=lat))], pad_id=0)
    und, gen = read.role[0] == UND, drawn.role[0] == GEN
    with torch.no_grad():
        x_read = model.embed(read.ids, read)[0, und]
        x_gen = model.embed(drawn.ids, drawn)[0, gen]
    # token j read = token j generated, less the generated one's pointer to the next position
    nxt = drawn.next_image_pos[0, gen]
    next_pos = model.next_pos.weight[nxt.clamp(min=0)] * (nxt >= 0)[:, None]  # the last token points nowhere
    torch.testing.assert_close(x_read, x_gen - next_pos, rtol=1e-5, atol=1e-5)
    model.loss(read).components["ce"].backward()  # a caption alone trains the shared projection
    assert float(model.in_proj.weight.grad.abs().sum()) > 0
    with pytest.raises(UserError, match="und_encoder: vae"):
        UniFluidConfig(und_encoder="builtin", und_projector="gen")


def test_token_grouping_round_trips_and_groups_neighbours():
    model = tiny_model(token_group=2)
    assert model.gen_len == 2 and model.token_dim == 4 * D
    tokens = torch.arange(N * D, dtype=torch.float32).reshape(1, N, D)  # a 2x4 grid of tokenizer tokens
    grouped = model.group_tokens(tokens)
    assert grouped.shape == (1, 2, 4 * D)
    # group 0 = grid cells (0,0), (0,1), (1,0), (1,1) = raster tokens 0, 1, 4, 5
    assert grouped[0, 0].reshape(4, D)[:, 0].tolist() == [0.0, D, 4.0 * D, 5.0 * D]
    torch.testing.assert_close(model.ungroup_tokens(grouped), tokens)
    b = builder_for(model)
    model.loss(collate([b.t2i("x", ImageData(latents=tokens[0]))], pad_id=0))  # reads tokenizer tokens


def test_patch_merger_concatenates_each_block_of_neighbours():
    feats = torch.arange(16, dtype=torch.float32).reshape(1, 16, 1)  # a 4x4 grid, one feature each
    merged = merge_neighbours(feats, 2)
    assert merged.shape == (1, 4, 4)
    assert merged[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    assert merge_neighbours(feats, 1) is feats


def test_und_merge_reads_one_token_per_block_and_refuses_what_does_not_tile():
    plain, merged = tiny_model(), tiny_model(und_merge=2)
    assert merged.und_len * 4 == plain.und_len  # the builtin encoder's square grid, 2x2 blocks
    assert merged.und.projector[0].in_features == 4 * plain.und.projector[0].in_features
    b = builder_for(merged)
    batch = collate([b.caption(image(2), "a small cross"), b.vqa(image(3), "what color?", "red")], pad_id=0)
    assert int((batch.role == UND).sum()) == 2 * merged.und_len
    merged.loss(batch).components["ce"].backward()
    assert float(merged.und.projector[0].weight.grad.abs().sum()) > 0
    with pytest.raises(UserError, match="und_merge"):
        tiny_model(und="vae", und_merge=2)  # the test tokenizer's 2x4 grid is not square
    with pytest.raises(UserError, match="und_merge"):
        UniFluidConfig(und_merge=0)


# ---- sampling -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sampler_setup():
    model = tiny_model(seed=1)
    randomize_head(model, seed=1)
    return model.eval(), builder_for(model)


def prompts_for(b):
    src = image(3)
    conds = [b.t2i("a large red circle"), b.edit(src, "make it blue")]
    unconds = [b.t2i(None), b.edit(src, None)]
    return conds, unconds, src


@pytest.mark.parametrize("order", ["raster", "random"])
def test_cached_hidden_states_equal_a_full_forward(sampler_setup, order):
    model, b = sampler_setup
    conds, unconds, src = prompts_for(b)
    res = Decoder(model, N).run(conds, "image", SamplingConfig(seed=2, cfg_scale=2.0, image_order=order),
                                uncond=unconds, return_hidden=True)
    assert [len(t) for t in res["tokens"]] == [N + 1, N + 1]
    assert res["tokens"][0][-1] == model.vocab.sid("<eoi>")
    for row, prompt in enumerate(conds):
        latents, used = res["images"][row][0], res["orders"][row][0]
        assert sorted(used) == list(range(N)) and (used == list(range(N))) == (order == "raster")
        full = (b.t2i("a large red circle", ImageData(latents=latents), order=used) if row == 0
                else b.edit(src, "make it blue", ImageData(latents=latents), order=used))
        batch = collate([full], pad_id=0)
        with torch.no_grad():
            hidden = model.hidden(model.embed(batch.ids, batch), batch.positions, None)
        for step, h in enumerate(res["hidden"]):
            torch.testing.assert_close(h[row], hidden[0, len(prompt) - 1 + step], atol=1e-4, rtol=1e-4)


def test_guidance_scale_one_equals_no_guidance(sampler_setup):
    model, b = sampler_setup
    conds, unconds, _ = prompts_for(b)
    dec = Decoder(model, N)
    plain = dec.run(conds, "image", SamplingConfig(seed=3))
    forced = dec.run(conds, "image", SamplingConfig(seed=3), uncond=unconds, force_guidance=True)
    for a, c in zip(plain["images"], forced["images"]):
        torch.testing.assert_close(a[0], c[0], atol=1e-4, rtol=1e-4)
    strong = dec.run(conds, "image", SamplingConfig(seed=3, cfg_scale=4.0), uncond=unconds)
    linear = dec.run(conds, "image", SamplingConfig(seed=3, cfg_scale=4.0, cfg_schedule="linear"), uncond=unconds)
    assert not torch.allclose(strong["images"][0][0], plain["images"][0][0], atol=1e-3)
    assert not torch.allclose(linear["images"][0][0], strong["images"][0][0], atol=1e-3)


def test_sampling_is_reproducible_from_a_seed(sampler_setup):
    model, b = sampler_setup
    conds, _, _ = prompts_for(b)
    dec = Decoder(model, N)
    s = SamplingConfig(seed=7, image_order="random")
    a, c = dec.run(conds, "image", s), dec.run(conds, "image", s)
    other = dec.run(conds, "image", SamplingConfig(seed=8, image_order="random"))
    assert a["orders"] == c["orders"] and torch.equal(a["images"][0][0], c["images"][0][0])
    assert a["orders"] != other["orders"] and not torch.equal(a["images"][0][0], other["images"][0][0])
    with pytest.raises(UserError, match="image_order"):
        SamplingConfig(image_order="spiral")


def test_interleaved_enters_a_continuous_image_and_leaves_it(sampler_setup, monkeypatch):
    model, b = sampler_setup
    v = model.vocab
    bias = torch.zeros(v.size)
    bias[v.sid("<boi>")] = 50.0  # make the model open an image whenever it may
    logits = model.logits
    monkeypatch.setattr(model, "logits", lambda h: logits(h) + bias.to(h.device))
    res = Decoder(model, N).run([b.interleaved(["a caption"], prompt=True)], "interleaved",
                                SamplingConfig(seed=0, max_new_tokens=N + 3, image_order="random"))
    toks = res["tokens"][0]
    assert toks[0] == v.sid("<boi>") and toks[1:N + 1] == [v.sid("<img_mask>")] * N
    assert toks[N + 1] == v.sid("<eoi>") and len(res["images"][0]) == 1


# ---- encoders -----------------------------------------------------------------------------------


def save_tiny_siglip(folder, image_size=32, patch=8):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             image_size=image_size, patch_size=patch)
    SiglipVisionModel(cfg).save_pretrained(folder)
    return folder


def test_siglip_encoder_from_a_local_folder(tmp_path):
    folder = save_tiny_siglip(tmp_path / "siglip")
    enc = build_und_encoder("siglip", hidden_size=64, projector="linear", image_size=64, gen_len=N, token_dim=D,
                            siglip_path=str(folder))
    assert enc.num_tokens == 16 and enc.reads == "pixels"
    assert not any(p.requires_grad for p in enc.encoder.parameters())
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1  # resized to the tower's 32 px
    feats = enc([ImageData(pixels=p) for p in pixels], torch.device("cpu"))
    assert feats.shape == (2, 16, 64)
    feats.sum().backward()
    assert enc.projector.weight.grad is not None
    enc.train()
    assert not enc.encoder.model.training  # a frozen tower stays in eval mode
    # a checkpoint rebuilds the tower from its recorded config, without the folder
    rebuilt = build_und_encoder("siglip", hidden_size=64, projector="linear", image_size=64, gen_len=N,
                                token_dim=D, siglip_path=str(tmp_path / "gone"),
                                siglip_config=enc.encoder.config_dict())
    rebuilt.load_state_dict(enc.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt([ImageData(pixels=p) for p in pixels], torch.device("cpu")), feats)
    with pytest.raises(UserError, match="SigLIP folder not found"):
        build_und_encoder("siglip", hidden_size=64, projector="linear", image_size=64, gen_len=N, token_dim=D,
                          siglip_path=str(tmp_path / "missing"))


# ---- training and the presets ---------------------------------------------------------------------



def test_trainer_checkpoint_and_pipeline_tasks(tmp_path, tiny_kl, capsys):
    from uniar.sample.pipeline import Pipeline
    from uniar.train.loop import Trainer, read_metrics

    cfg = tiny_unifluid_train_config(tmp_path / "run", tiny_kl, steps=2)
    cfg.data.order = "random"
    trainer = Trainer(cfg, progress=False)
    assert trainer.sampler.und_pixels  # the built-in encoder reads pixels, so the data renders them
    trainer.run()
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 2 and float(rows[-1]["loss_diffusion"]) > 0
    live = Pipeline(trainer.model, trainer.text_tok, trainer.image_tok, trainer.builder, cfg)
    loaded = Pipeline.from_checkpoint(tmp_path / "run" / "checkpoints" / "final")
    s = SamplingConfig(seed=1, cfg_scale=2.0, cfg_schedule="linear")
    prompts = ["a large red circle at the top left", "a small blue cross at the center"]
    images = loaded.t2i(prompts, s)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(live.t2i(prompts, s), images)
    assert loaded.edit(images, ["make it green", "move it left"], s).shape == (2, 64, 64, 3)
    captions = loaded.caption(images, SamplingConfig(max_new_tokens=5))
    assert len(captions) == 2 and captions == live.caption(images, SamplingConfig(max_new_tokens=5))
    assert len(loaded.vqa(images, ["what color is it?"] * 2, SamplingConfig(max_new_tokens=5))) == 2
    # several tokens per step (the model was trained in random order)
    grouped = loaded.t2i(prompts, SamplingConfig(**{**s.describe(), "image_steps": 3}))
    assert grouped.shape == (2, 64, 64, 3)

    # every command-line verb on the UniFluid checkpoint
    from PIL import Image

    from uniar.cli import main

    ckpt = str(tmp_path / "run" / "checkpoints" / "final")
    assert main(["generate", ckpt, "--prompt", prompts[0], "--out", str(tmp_path / "gen"), "--cfg", "2",
                 "--image-steps", "3", "--max-new-tokens", "4"]) == 0
    assert list((tmp_path / "gen").glob("*.png"))
    Image.fromarray(images[0]).save(tmp_path / "img.png")
    assert main(["edit", ckpt, str(tmp_path / "img.png"), "make it green", "--out", str(tmp_path / "edited.png"),
                 "--diffusion-steps", "2", "--order", "raster"]) == 0
    assert (tmp_path / "edited.png").is_file()
    assert main(["caption", ckpt, str(tmp_path / "img.png"), "--max-new-tokens", "4"]) == 0
    assert main(["ask", ckpt, str(tmp_path / "img.png"), "what color is it?", "--max-new-tokens", "4"]) == 0
    assert main(["generate", ckpt, "--prompt", prompts[0], "--out", str(tmp_path / "gen2"), "--order", "raster",
                 "--image-steps", "3"]) != 0
    assert "random order" in capsys.readouterr().err


def test_resumed_run_matches_uninterrupted_run(tmp_path, tiny_kl):
    """The diffusion head's noise and timesteps come from the saved RNG state, so resuming is exact."""
    from uniar.train.loop import Trainer, read_metrics

    Trainer(tiny_unifluid_train_config(tmp_path / "full", tiny_kl, steps=4, checkpoint_every=2),
            progress=False).run()
    resumed = Trainer(tiny_unifluid_train_config(tmp_path / "resumed", tiny_kl, steps=4),
                      resume=str(tmp_path / "full" / "checkpoints" / "step_2"), progress=False)
    resumed.run()
    full = [float(r["loss"]) for r in read_metrics(tmp_path / "full")]
    again = [float(r["loss"]) for r in read_metrics(tmp_path / "resumed")]
    np.testing.assert_allclose(again, full[2:], rtol=1e-5)


def test_training_data_gives_und_images_their_pixels(tiny_kl):
    from uniar.data.image_pool import build_pool
    from uniar.data.images import to_model
    from uniar.data.shapesworld import get_example
    from uniar.data.shapesworld.render import render
    from uniar.data.tasks import DataConfig, TaskSampler
    from uniar.tokenizers.image import load_image_tokenizer

    model = tiny_model()
    tok = load_image_tokenizer(tiny_kl)
    pool = build_pool(tok, "train", 4, 64, 3, progress=False, use_cache=False)
    builder = SequenceBuilder(text_tokenizer(), model.vocab, gen_len=tok.num_tokens, und_len=model.und_len,
                              discrete=False, max_len=256)
    sampler = TaskSampler(DataConfig(), builder, pool, None, und_pixels=True)
    seq = sampler.make("caption", np.random.default_rng(0))
    img = seq.images[0]
    assert img.latents.shape == (tok.num_tokens, tok.token_dim)
    index = next(i for i in range(4) if torch.equal(pool.source[i].float(), img.latents))
    want = to_model(render(get_example("train", index, 3).scene, 64)[None])[0]
    torch.testing.assert_close(img.pixels, want)
    assert sampler.make("t2i", np.random.default_rng(0)).images[0].pixels is None  # GEN images need none


def test_tiny_preset_loads_and_builds():
    from uniar.config import load_config
    from uniar.configs import resolve
    from uniar.train.config import TrainConfig

    cfg = load_config(TrainConfig, resolve("unifluid-tiny"))
    assert cfg.model.family == "unifluid" and cfg.model.unifluid.und_encoder == "vae"
    assert cfg.data.order == "raster" and cfg.data.image_size == 48 and cfg.model.loss_norm == "sequence"
    # text, generation first, the mixture, the lookup stage (a restart), the mixture again
    assert [s.name for s in cfg.stages] == ["A", "B1", "B2", "L", "M"]
    assert [i for i, s in enumerate(cfg.stages) if s.restart_lr is not None and s.reset_moments] == [3]
    assert abs(sum(s.fraction for s in cfg.stages) - 1.0) < 1e-9
    cfg.validate()


def test_gemma2_preset_code_path(tmp_path):
    """The full-size preset with tiny random stand-ins: Gemma-2, an AutoencoderKL and SigLIP."""
    import shutil

    from diffusers import AutoencoderKL
    from transformers import AutoModelForCausalLM, Gemma2Config

    from uniar.config import load_config
    from uniar.configs import resolve
    from uniar.sample.pipeline import Pipeline
    from uniar.train.config import TrainConfig
    from uniar.train.loop import Trainer

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(Gemma2Config(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, sliding_window=16,
    )).save_pretrained(tmp_path / "gemma")
    AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, latent_channels=4,
                  sample_size=64).save_pretrained(tmp_path / "vae")
    save_tiny_siglip(tmp_path / "siglip")
    overrides = [f"model.backbone.path={tmp_path / 'gemma'}", f"model.image_tokenizer={tmp_path / 'vae'}",
                 f"model.unifluid.siglip_path={tmp_path / 'siglip'}", "model.text_tokenizer=bpe:512",
                 "model.unifluid.head.width=32", "model.unifluid.head.depth=1",
                 "model.unifluid.head.sample_steps=3", "data.image_size=64", "data.pool_size=16",
                 "optim.batch_size=4", "optim.warmup_steps=1", "steps=2", "checkpoint_every=0",
                 "eval.every=0", "log_every=1", f"out_dir={tmp_path / 'run'}"]
    cfg = load_config(TrainConfig, resolve("unifluid-gemma2-2b"), overrides)
    assert cfg.model.backbone.kind == "hf" and cfg.model.unifluid.und_encoder == "siglip"
    trainer = Trainer(cfg, progress=False)
    assert trainer.model.gen_len == 16 and trainer.model.token_dim == 16  # 8x8 latents grouped 2x2
    trainer.run()
    shutil.rmtree(tmp_path / "siglip")  # the checkpoint must not need the original folders
    shutil.rmtree(tmp_path / "gemma")
    pipe = Pipeline.from_checkpoint(tmp_path / "run" / "checkpoints" / "final")
    image = pipe.t2i(["a large red circle"], SamplingConfig(seed=0, cfg_scale=2.0))
    assert image.shape == (1, 64, 64, 3)
    assert len(pipe.caption(image, SamplingConfig(max_new_tokens=3))) == 1


def test_input_noise_perturbs_only_what_the_backbone_reads_in_training():
    model = tiny_model(seed=3, input_noise=0.5)
    randomize_head(model, seed=3)
    batch = mixed_batch(model)
    latents = model.gen_latents(batch)
    model.train()
    torch.manual_seed(0)
    noised = model._noised_inputs(latents)
    gen = batch.role == GEN
    assert not torch.allclose(noised[gen], latents[gen])
    model.eval()
    assert model._noised_inputs(latents) is latents  # sampling and evaluation read clean tokens
    # the head's targets stay clean: with no diffusion-head noise difference, the loss changes only
    # through the backbone's inputs
    clean = tiny_model(seed=3)
    randomize_head(clean, seed=3)
    clean.train()
    model.train()
    torch.manual_seed(1)
    a = clean.loss(batch).components["ce"]
    torch.manual_seed(1)
    b = model.loss(batch).components["ce"]
    assert not torch.allclose(a, b)  # text after the image reads the noised tokens
    with pytest.raises(UserError, match="input_noise"):
        tiny_model(input_noise=-1.0)


def test_input_drop_masks_only_training_inputs_and_the_rate_is_per_sequence():
    model = tiny_model(seed=3, input_drop=0.9)
    batch = mixed_batch(model)
    gen = batch.role == GEN
    model.train()
    torch.manual_seed(0)
    dropped = model._dropped_inputs(batch)
    assert dropped.shape == batch.ids.shape and bool((dropped & gen).any())
    torch.manual_seed(0)  # the same draw as above
    embeds = model._embed(model.backbone.embed(batch.ids), batch, model.gen_latents(batch))
    plain = model.image_inputs(model.backbone.embed(batch.ids), gen, model.gen_latents(batch),
                               batch.image_pos, batch.next_image_pos)
    hit, kept = dropped & gen, ~(dropped & gen) & (batch.role != UND)
    assert torch.allclose(embeds[kept], plain[kept])  # text and kept image tokens are untouched
    assert not torch.allclose(embeds[hit], plain[hit])
    # a dropped token reads the mask embedding (plus its position embeddings), not its latent
    pos_only = model.image_inputs(torch.zeros_like(plain), gen, None, batch.image_pos, batch.next_image_pos)
    assert torch.allclose(embeds[hit], (model.drop_embed.weight[0] + pos_only[hit]), atol=1e-5)
    model.eval()
    assert model._dropped_inputs(batch) is None  # sampling and evaluation read every token
    # the mask embedding learns through the loss
    model.train()
    torch.manual_seed(0)
    sum(model.loss(batch).components.values()).backward()
    assert model.drop_embed.weight.grad.abs().sum() > 0
    with pytest.raises(UserError, match="input_drop"):
        tiny_model(input_drop=1.0)


# ---- several tokens per step (sample/groups.py) ---------------------------------------------------


def test_mar_schedule_draws_few_tokens_first_and_every_token_once():
    from uniar.sample.groups import mar_schedule

    sizes = mar_schedule(64, 8)
    assert sum(sizes) == 64 and len(sizes) == 8 and min(sizes) >= 1
    assert sizes[0] < sizes[-1]  # the cosine schedule: few tokens while little is known
    assert mar_schedule(16, 16) == [1] * 16 and mar_schedule(16, 1) == [16]
    with pytest.raises(UserError, match="image_steps"):
        mar_schedule(16, 17)


def test_one_token_per_step_in_groups_equals_the_plain_sampler(sampler_setup):
    model, b = sampler_setup
    conds, unconds, _ = prompts_for(b)
    dec = Decoder(model, N)
    for s in (SamplingConfig(seed=5, image_order="random"),
              SamplingConfig(seed=5, image_order="random", cfg_scale=3.0, cfg_schedule="linear")):
        plain = dec.run(conds, "image", s, uncond=unconds)
        grouped = dec.run(conds, "image", SamplingConfig(**{**s.describe(), "image_steps": N}), uncond=unconds)
        assert grouped["orders"] == plain["orders"] and grouped["tokens"] == plain["tokens"]
        for a, c in zip(plain["images"], grouped["images"]):
            torch.testing.assert_close(a[0], c[0], atol=1e-4, rtol=1e-4)


def test_each_token_of_a_group_is_conditioned_on_the_committed_prefix_only(sampler_setup):
    from uniar.sample.groups import mar_schedule

    model, b = sampler_setup
    conds, unconds, src = prompts_for(b)
    steps = 5
    res = Decoder(model, N).run(conds, "image", SamplingConfig(seed=2, cfg_scale=2.0, image_order="random",
                                                               image_steps=steps),
                                uncond=unconds, return_hidden=True)
    assert len(res["hidden"]) == N and [len(t) for t in res["tokens"]] == [N + 1, N + 1]
    starts = np.cumsum([0] + mar_schedule(N, steps))[:-1]
    for row, prompt in enumerate(conds):
        latents, used = res["images"][row][0], res["orders"][row][0]
        full = (b.t2i("a large red circle", ImageData(latents=latents), order=used) if row == 0
                else b.edit(src, "make it blue", ImageData(latents=latents), order=used))
        for drawn in range(N):
            known = int(starts[starts <= drawn].max())  # tokens committed before this token's group
            batch = collate([full], pad_id=0)
            end = len(prompt) + known  # the sequence up to the last committed input ...
            batch = _truncate(batch, end)
            batch.next_image_pos[0, -1] = used[drawn]  # ... told which token comes next
            with torch.no_grad():
                hidden = model.hidden(model.embed(batch.ids, batch), batch.positions, None)
            torch.testing.assert_close(res["hidden"][drawn][row], hidden[0, -1], atol=1e-4, rtol=1e-4)


def _truncate(batch, end):
    """The batch's first `end` columns."""
    return type(batch)(**{k: v[:, :end].clone() if torch.is_tensor(v) else v for k, v in batch.__dict__.items()})


def test_image_steps_refuse_what_they_cannot_do(sampler_setup):
    model, b = sampler_setup
    conds, _, _ = prompts_for(b)
    dec = Decoder(model, N)
    with pytest.raises(UserError, match="random order"):
        dec.run(conds, "image", SamplingConfig(image_order="raster", image_steps=4))
    with pytest.raises(UserError, match="interleaved"):
        dec.run([b.interleaved(["a caption"], prompt=True)], "interleaved", SamplingConfig(image_steps=4))
    with pytest.raises(UserError, match="image_steps"):
        SamplingConfig(image_steps=-1)
