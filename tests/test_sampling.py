"""Sampling with a KV cache: cached = uncached, guidance 1 = none, seeds repeat, spans are respected."""

import numpy as np
import pytest
import torch

from helpers import text_tokenizer, tiny_ugen
from uniar.data.sequence import ImageData, SequenceBuilder, collate
from uniar.sample.decode import Decoder, SamplingConfig, filter_logits

N = 8


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = tiny_ugen(n_visual=16).eval()
    builder = SequenceBuilder(text_tokenizer(), model.vocab, gen_len=N, und_len=N, discrete=True, max_len=256)
    return model, builder


def test_cached_and_uncached_logits_agree(setup):
    model, builder = setup
    prompts = [builder.t2i("a large red circle at the top left"), builder.t2i("a small cyan cross at the center")]
    dec = Decoder(model, N)
    res = dec.run(prompts, "image", SamplingConfig(seed=1), pad_id=0, return_logits=True)
    for b, prompt in enumerate(prompts):
        ids = torch.tensor([prompt.tokens + res["tokens"][b]])
        with torch.no_grad():
            full = model.logits(model.hidden(model.embed(ids), torch.arange(ids.shape[1])[None], None))
        for step, logits in enumerate(res["logits"]):
            ref = full[0, len(prompt.tokens) - 1 + step]
            torch.testing.assert_close(logits[b], ref, atol=1e-4, rtol=1e-4)


def test_cached_decoding_feeds_image_positions_like_training():
    """image_pos_embed: the sampler adds each drawn token's image index as training does."""
    from helpers import tiny_backbone_config, vocab
    from uniar.models.backbone import build_backbone
    from uniar.models.ugen import UGen

    torch.manual_seed(0)
    v = vocab(16)
    model = UGen(build_backbone(tiny_backbone_config(), v.size), v, image_len=N).eval()
    builder = SequenceBuilder(text_tokenizer(), v, gen_len=N, und_len=N, discrete=True, max_len=256)
    src = ImageData(codes=np.arange(N) % 16)
    for prompt, done in [(builder.t2i("a small cyan cross at the center"),
                          lambda codes: builder.t2i("a small cyan cross at the center", ImageData(codes=codes))),
                         (builder.edit(src, "remove the red circle"),
                          lambda codes: builder.edit(src, "remove the red circle", ImageData(codes=codes)))]:
        res = Decoder(model, N).run([prompt], "image", SamplingConfig(seed=3), pad_id=0, return_logits=True)
        codes = np.array(res["tokens"][0][:N]) - v.visual_offset
        batch = collate([done(codes)], pad_id=0)  # the training row of what was drawn
        with torch.no_grad():
            full = model.logits(model.hidden(model.embed(batch.ids, batch), batch.positions, None))
        for step, logits in enumerate(res["logits"]):
            torch.testing.assert_close(logits[0], full[0, len(prompt.tokens) - 1 + step], atol=1e-4, rtol=1e-4)
        # and the embedding matters: without it the same ids give other logits
        plain = model.logits(model.hidden(model.backbone.embed(batch.ids), batch.positions, None))
        assert not torch.allclose(plain[0, len(prompt.tokens):], full[0, len(prompt.tokens):], atol=1e-3)


def test_image_mode_gives_exactly_one_image(setup):
    model, builder = setup
    res = Decoder(model, N).run([builder.t2i("x")], "image", SamplingConfig(seed=0), pad_id=0)
    toks = res["tokens"][0]
    v = model.vocab
    assert len(toks) == N + 1 and toks[-1] == v.sid("<eoi>")
    assert all(t >= v.visual_offset for t in toks[:N])


def test_guidance_scale_one_equals_no_guidance(setup):
    model, builder = setup
    cond = [builder.t2i("a large red circle at the top left")]
    unc = [builder.t2i(None)]
    dec = Decoder(model, N)
    plain = dec.run(cond, "image", SamplingConfig(seed=3, cfg_scale=1.0), pad_id=0, return_logits=True)
    guided = dec.run(cond, "image", SamplingConfig(seed=3, cfg_scale=1.0), uncond=unc, pad_id=0,
                     return_logits=True, force_guidance=True)
    assert plain["tokens"] == guided["tokens"]
    for a, b in zip(plain["logits"], guided["logits"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    strong = dec.run(cond, "image", SamplingConfig(seed=3, cfg_scale=5.0), uncond=unc, pad_id=0,
                     return_logits=True)
    assert not torch.allclose(strong["logits"][0], plain["logits"][0])


def test_sampling_is_reproducible_from_a_seed(setup):
    model, builder = setup
    prompts = [builder.t2i("a"), builder.t2i("b")]
    dec = Decoder(model, N)
    a = dec.run(prompts, "image", SamplingConfig(seed=7), pad_id=0)["tokens"]
    b = dec.run(prompts, "image", SamplingConfig(seed=7), pad_id=0)["tokens"]
    c = dec.run(prompts, "image", SamplingConfig(seed=8), pad_id=0)["tokens"]
    assert a == b and a != c


def test_text_mode_never_emits_visual_or_special_ids(setup):
    model, builder = setup
    img = ImageData(codes=np.arange(N) % 16)
    res = Decoder(model, N).run([builder.caption(img)], "text",
                                SamplingConfig(text_temperature=1.0, max_new_tokens=30, seed=0), pad_id=0)
    v = model.vocab
    specials = set(v.special.values()) - {v.sid("<eos>")}
    for t in res["tokens"][0]:
        assert t < v.visual_offset and t not in specials


def test_interleaved_follows_the_model_into_and_out_of_images(setup):
    model, builder = setup
    v = model.vocab
    bias = torch.zeros(v.size)
    bias[v.sid("<boi>")] = 50.0  # make the model open an image whenever it may
    res = Decoder(model, N, logit_bias=bias).run(
        [builder.interleaved(["a caption"], prompt=True)], "interleaved",
        SamplingConfig(seed=0, max_new_tokens=2 * (N + 2), text_temperature=1.0), pad_id=0)
    toks = res["tokens"][0]
    assert toks[0] == v.sid("<boi>")
    assert all(t >= v.visual_offset for t in toks[1:N + 1])
    assert toks[N + 1] == v.sid("<eoi>")
    assert toks[N + 2] == v.sid("<boi>")  # back in text mode, where <boi> is allowed again


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    kept = ~torch.isinf(filter_logits(logits, top_p=0.5))
    assert kept.tolist() == [[True, False, False, False]]


def test_prompt_first_prompts_decode_like_their_training_rows(setup):
    """model.prompt_first: an edit prompt and a VQA prompt are cuts of the training rows of what the
    sampler drew, so cached decoding sees exactly the logits a full forward of that row gives."""
    model, _ = setup
    v = model.vocab
    builder = SequenceBuilder(text_tokenizer(), v, gen_len=N, und_len=N, discrete=True, max_len=256,
                              prompt_first=True)
    src = ImageData(codes=np.arange(N) % 16)
    edit = builder.edit(src, "remove the red circle")
    image_first = SequenceBuilder(text_tokenizer(), v, gen_len=N, und_len=N, discrete=True,
                                  max_len=256).edit(src, "remove the red circle")
    assert sorted(edit.tokens) == sorted(image_first.tokens)
    assert edit.tokens.index(builder.boi) > image_first.tokens.index(builder.boi)  # instruction first
    res = Decoder(model, N).run([edit], "image", SamplingConfig(seed=3), pad_id=0, return_logits=True)
    row = builder.edit(src, "remove the red circle", ImageData(codes=np.array(res["tokens"][0][:N]) - v.visual_offset))
    vqa = builder.vqa(src, "what color is the circle?")
    res_vqa = Decoder(model, N).run([vqa], "text", SamplingConfig(seed=3, max_new_tokens=4), pad_id=0,
                                    return_logits=True)
    for prompt, out, full_row in [(edit, res, row), (vqa, res_vqa, None)]:
        ids = torch.tensor([full_row.tokens if full_row else prompt.tokens + out["tokens"][0]])
        with torch.no_grad():
            full = model.logits(model.hidden(model.embed(ids), torch.arange(ids.shape[1])[None], None))
        for step, logits in enumerate(out["logits"]):
            torch.testing.assert_close(logits[0], full[0, len(prompt.tokens) - 1 + step], atol=1e-4, rtol=1e-4)
