"""The backbone: built-in decoder and transformers adapter behave the same through one interface."""

import math

import pytest
import torch

from uniar.errors import UserError
from uniar.models.backbone import BackboneConfig, Decoder, DecoderConfig, build_backbone, get_preset, preset_names
from uniar.models.backbone.presets import PRESETS

ATOL = 1e-5


def small_decoder(tie=False, vocab=97, seed=0, **kw):
    cfg = DecoderConfig(vocab_size=vocab, hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=128,
                        max_seq_len=64, tie_embeddings=tie, **kw)
    return Decoder(cfg, seed=seed).eval()


def full_logits(bb, ids, positions=None, key_padding_mask=None):
    if positions is None:
        positions = torch.arange(ids.shape[1]).expand_as(ids)
    return bb.logits(bb(bb.embed(ids), positions, key_padding_mask))


def stepwise_logits(bb, ids, positions, key_padding_mask, prefill):
    """Prefill `prefill` tokens into a cache, then feed the rest one token at a time."""
    b, t = ids.shape
    cache = bb.new_cache(b, t + 2, torch.float32, "cpu")
    out = []
    for start, end in [(0, prefill)] + [(i, i + 1) for i in range(prefill, t)]:
        mask = None if key_padding_mask is None else key_padding_mask[:, :end]
        hidden = bb(bb.embed(ids[:, start:end]), positions[:, start:end], mask, cache)
        out.append(bb.logits(hidden))
    assert cache.length == t
    return torch.cat(out, dim=1)


def left_padded(rows, pad_id=0):
    """Stack rows of different lengths, padding on the left; positions start at 0 on real tokens."""
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), pad_id)
    mask = torch.zeros(len(rows), t, dtype=torch.bool)
    pos = torch.zeros(len(rows), t, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, t - len(r):] = r
        mask[i, t - len(r):] = True
        pos[i, t - len(r):] = torch.arange(len(r))
    return ids, pos, mask


def check_cached_equals_uncached(bb, vocab):
    ids = torch.randint(0, vocab, (2, 11), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(11).expand(2, 11)
    with torch.no_grad():
        ref = full_logits(bb, ids)
        got = stepwise_logits(bb, ids, pos, None, prefill=6)
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


def check_drop_last(bb, vocab):
    """Tokens read into the cache and dropped again leave no trace on what follows."""
    ids = torch.randint(0, vocab, (2, 11), generator=torch.Generator().manual_seed(3))
    pos = torch.arange(11).expand(2, 11)
    cache = bb.new_cache(2, 16, torch.float32, "cpu")
    with torch.no_grad():
        ref = full_logits(bb, ids)
        bb(bb.embed(ids[:, :6]), pos[:, :6], None, cache)
        bb(bb.embed(ids[:, :3].flip(1)), pos[:, 6:9], None, cache)  # read, then forgotten
        cache.drop_last(3)
        assert cache.length == 6
        got = bb.logits(bb(bb.embed(ids[:, 6:]), pos[:, 6:], None, cache))
    torch.testing.assert_close(got, ref[:, 6:], atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="drop"):
        cache.drop_last(12)


def check_left_padding(bb, vocab):
    gen = torch.Generator().manual_seed(2)
    rows = [torch.randint(0, vocab, (n,), generator=gen) for n in (9, 5, 7)]
    ids, pos, mask = left_padded(rows)
    with torch.no_grad():
        batched = full_logits(bb, ids, pos, mask)
        stepped = stepwise_logits(bb, ids, pos, mask, prefill=4)  # prefill holds pads and real tokens
        for i, r in enumerate(rows):
            single = full_logits(bb, r[None])[0]
            n = len(r)
            torch.testing.assert_close(batched[i, -n:], single, atol=ATOL, rtol=0)
            torch.testing.assert_close(stepped[i, -n:], single, atol=ATOL, rtol=0)
        assert torch.isfinite(batched).all() and torch.isfinite(stepped).all()


# ---------------------------------------------------------------- built-in decoder

@pytest.mark.parametrize("tie", [False, True])
def test_builtin_cached_decoding_equals_full_forward(tie):
    check_cached_equals_uncached(small_decoder(tie=tie), 97)
    check_drop_last(small_decoder(tie=tie), 97)


def test_partial_rope_caches_like_full_and_leaves_the_other_dims_unrotated():
    from uniar.models.backbone.builtin import Rotary, apply_rope

    bb = small_decoder(rope_fraction=0.25)  # 4 of 16 head dims rotated
    assert bb.config.rope_dim == 4
    check_cached_equals_uncached(bb, 97)
    check_left_padding(small_decoder(rope_fraction=0.5), 97)
    x = torch.randn(1, 2, 5, 16)
    cos, sin = Rotary(4, 10000.0)(torch.arange(5)[None] + 3)
    y = apply_rope(x, cos, sin)
    assert torch.equal(y[..., 4:], x[..., 4:]) and not torch.allclose(y[..., :4], x[..., :4])
    # a shift of every position leaves the scores unchanged (RoPE is relative), rotated dims included
    cos0, sin0 = Rotary(4, 10000.0)(torch.arange(5)[None])
    q0, q3 = apply_rope(x, cos0, sin0), y
    torch.testing.assert_close(q3 @ q3.transpose(-1, -2), q0 @ q0.transpose(-1, -2), atol=1e-5, rtol=0)
    for bad in (0.0, 1.5):
        with pytest.raises(UserError, match="rope_fraction"):
            small_decoder(rope_fraction=bad)
    with pytest.raises(UserError, match="even"):  # 0.05 of 16 dims is 1
        small_decoder(rope_fraction=0.05)


def test_builtin_left_padded_rows_equal_unpadded_rows():
    check_left_padding(small_decoder(), 97)


def test_builtin_gqa_shapes_and_equivalence_to_repeated_heads():
    gqa = small_decoder()
    attn = gqa.blocks[0].attn
    assert attn.wq.weight.shape == (64, 64) and attn.wk.weight.shape == (32, 64) and attn.wv.weight.shape == (32, 64)
    cache = gqa.new_cache(3, 10, torch.float32, "cpu")
    assert cache.keys[0].shape == (3, 2, 10, 16) and len(cache.keys) == 2

    # The same weights with every kv head copied for its group of query heads: plain multi-head.
    mha = Decoder(DecoderConfig(**{**vars(gqa.config), "n_kv_heads": 4})).eval()
    state = gqa.state_dict()
    for key in list(state):
        if key.endswith(("attn.wk.weight", "attn.wv.weight")):
            state[key] = state[key].view(2, 16, 64).repeat_interleave(2, dim=0).reshape(64, 64)
    mha.load_state_dict(state)
    ids = torch.randint(0, 97, (3, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = full_logits(gqa, ids)
        torch.testing.assert_close(full_logits(mha, ids), out, atol=ATOL, rtol=0)
    assert out.shape == (3, 8, 97) and out.dtype == torch.float32


def test_builtin_overfits_one_batch():
    model = small_decoder(vocab=50).train()
    ids = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(15).expand(4, 15)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(100):
        logits = model.logits(model(model.embed(ids[:, :-1]), pos))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), ids[:, 1:].reshape(-1))
        if step == 0:
            first = loss.item()
            assert abs(first - math.log(50)) < 0.3  # init gives a near-uniform prediction
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1, (first, loss.item())


@pytest.mark.parametrize("tie", [False, True])
def test_builtin_extend_vocab_keeps_old_logits(tie):
    model = small_decoder(tie=tie)
    ids = torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = full_logits(model, ids)
        model.extend_vocab(120)
        after = full_logits(model, ids)
    assert model.vocab_size == 120 and model.config.vocab_size == 120 and after.shape[-1] == 120
    assert torch.equal(after[..., :97], before)
    # New rows start at the mean of the old rows.
    torch.testing.assert_close(model.tok_embed.weight[110], model.tok_embed.weight[:97].mean(0))
    assert (model.head is None) == tie
    model.extend_vocab(120)  # same size: nothing to do
    with pytest.raises(UserError, match="shrink"):
        model.extend_vocab(100)
    with pytest.raises(UserError, match="unknown vocabulary init"):
        model.extend_vocab(130, init="zeros")


def test_builtin_attn_mask_hook_allows_a_bidirectional_prefix():
    model = small_decoder()
    ids = torch.randint(0, 97, (1, 6), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(6)[None]
    causal = torch.ones(6, 6).tril().bool()[None]
    prefix = causal.clone()
    prefix[:, :3, :3] = True  # the first three tokens see each other
    with torch.no_grad():
        plain = model(model.embed(ids), pos)
        as_causal = model(model.embed(ids), pos, attn_mask=causal)
        with_prefix = model(model.embed(ids), pos, attn_mask=prefix)
    torch.testing.assert_close(as_causal, plain, atol=ATOL, rtol=0)
    assert not torch.allclose(with_prefix[:, 0], plain[:, 0])  # token 0 now sees tokens 1 and 2


def test_builtin_bf16_autocast_is_close_to_fp32():
    model = small_decoder()
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = full_logits(model, ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = full_logits(model, ids)
            cached = stepwise_logits(model, ids, torch.arange(10).expand(2, 10), None, prefill=5)
    assert low.dtype == torch.float32
    assert (low - ref).abs().max() < 0.05 * ref.abs().max()
    assert (cached - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("cpu_fp32", [True, False])
def test_builtin_cpu_attention_precision_switch_keeps_logits_and_gradients(cpu_fp32, monkeypatch):
    """Under CPU autocast attention runs in fp32 (faster there); the bf16 kernel must agree with it."""
    from uniar.models.backbone.builtin import Attention

    model = small_decoder()
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(0))
    ref = full_logits(model, ids).detach()
    monkeypatch.setattr(Attention, "cpu_fp32", cpu_fp32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = full_logits(model, ids)
    low.sum().backward()
    assert (low.detach() - ref).abs().max() < 0.05 * ref.abs().max()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_builtin_same_seed_same_weights_and_residual_init_scaled():
    a, b, c = small_decoder(seed=3), small_decoder(seed=3), small_decoder(seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.tok_embed.weight, c.tok_embed.weight)
    std_q = a.blocks[0].attn.wq.weight.std().item()
    std_o = a.blocks[0].attn.wo.weight.std().item()
    assert abs(std_q - 0.02) < 0.002 and abs(std_o - 0.02 / math.sqrt(4)) < 0.002


def test_builtin_rejects_bad_sizes_and_overflow():
    with pytest.raises(UserError, match="divisible"):
        DecoderConfig(vocab_size=10, hidden_size=60, n_heads=8)
    with pytest.raises(UserError, match="multiple of n_kv_heads"):
        DecoderConfig(vocab_size=10, hidden_size=64, n_heads=8, n_kv_heads=3)
    model = small_decoder()
    cache = model.new_cache(1, 4, torch.float32, "cpu")
    ids = torch.zeros(1, 5, dtype=torch.long)
    with pytest.raises(UserError, match="exceed the cache size"):
        model(model.embed(ids), torch.arange(5)[None], cache=cache)
    with pytest.raises(UserError, match="batch size"):
        model(model.embed(ids[:, :2].expand(2, 2)), torch.zeros(2, 2, dtype=torch.long), cache=cache)
    with pytest.raises(UserError, match="max_seq_len"):
        model.new_cache(1, 65, torch.float32, "cpu")


def test_presets_and_build_backbone():
    assert preset_names() == ["tiny", "small", "base"]
    for name in PRESETS:
        assert get_preset(name, vocab_size=1000).vocab_size == 1000
    tiny = get_preset("tiny", 1000)
    assert (tiny.hidden_size, tiny.n_layers, tiny.n_heads, tiny.n_kv_heads) == (256, 4, 8, 4)
    with pytest.raises(UserError, match="tiny, small, base"):
        get_preset("huge", 1000)
    with pytest.raises(UserError, match="unknown decoder field"):
        get_preset("tiny", 1000, n_layer=3)

    model = build_backbone(BackboneConfig(preset="tiny", n_layers=1, tie_embeddings=True), vocab_size=300)
    assert isinstance(model, Decoder) and model.config.n_layers == 1 and model.vocab_size == 300
    with pytest.raises(UserError, match="vocab_size"):
        build_backbone(BackboneConfig())
    with pytest.raises(UserError, match="needs `path`"):
        build_backbone(BackboneConfig(kind="hf"))


# ---------------------------------------------------------------- transformers adapter

HF_VOCAB = 300
HF_COMMON = dict(vocab_size=HF_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def _hf_configs():
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    return {
        "llama": LlamaConfig(**HF_COMMON),  # untied head
        # A short sliding window so the sliding layers really differ from the full ones here.
        "gemma2": Gemma2Config(**HF_COMMON, head_dim=16, sliding_window=4),  # tied, soft-capped, scaled embedding
        "qwen2": Qwen2Config(**HF_COMMON, tie_word_embeddings=True),
    }


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    """name -> (folder with the saved model, the original in-memory model)."""
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    out = {}
    for name, cfg in _hf_configs().items():
        torch.manual_seed(0)
        lm = AutoModelForCausalLM.from_config(cfg).eval()
        folder = tmp_path_factory.mktemp(name)
        lm.save_pretrained(folder)
        out[name] = (folder, lm)
    return out


def load_hf(folder):
    return build_backbone(BackboneConfig(kind="hf", path=str(folder))).eval()


@pytest.mark.parametrize("name", ["llama", "gemma2", "qwen2"])
def test_hf_adapter_reproduces_model_before_and_after_extend_vocab(hf_models, name):
    folder, original = hf_models[name]
    bb = load_hf(folder)
    ids = torch.randint(0, HF_VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = original(input_ids=ids).logits
        torch.testing.assert_close(full_logits(bb, ids), ref, atol=ATOL, rtol=0)
        bb.extend_vocab(HF_VOCAB + 40)
        after = full_logits(bb, ids)
    assert bb.vocab_size == HF_VOCAB + 40 and after.shape[-1] == HF_VOCAB + 40
    assert bb.hf_config_dict()["vocab_size"] == HF_VOCAB + 40
    torch.testing.assert_close(after[..., :HF_VOCAB], ref, atol=ATOL, rtol=0)
    emb = bb.lm.get_input_embeddings().weight
    torch.testing.assert_close(emb[-1], emb[:HF_VOCAB].mean(0))
    head = bb.lm.get_output_embeddings().weight
    assert (head is emb) == (name != "llama")  # tied heads stay tied


@pytest.mark.parametrize("name", ["llama", "gemma2", "qwen2"])
def test_hf_adapter_cache_and_left_padding(hf_models, name):
    bb = load_hf(hf_models[name][0])
    check_cached_equals_uncached(bb, HF_VOCAB)
    check_left_padding(bb, HF_VOCAB)
    check_drop_last(bb, HF_VOCAB)


@pytest.mark.parametrize("name", ["llama", "gemma2"])
def test_hf_checkpoint_round_trip_through_safetensors_and_config_only_folder(hf_models, name, tmp_path):
    from uniar.utils.io import load_safetensors, save_safetensors, write_json

    bb = load_hf(hf_models[name][0])
    bb.extend_vocab(HF_VOCAB + 5)
    state = bb.state_dict()
    # A tied head is stored once (safetensors refuses aliased tensors); an untied one is kept.
    assert ("lm.lm_head.weight" in state) == (name == "llama")
    save_safetensors(tmp_path / "model.safetensors", state)
    write_json(tmp_path / "backbone_config" / "config.json", bb.hf_config_dict())

    rebuilt = load_hf(tmp_path / "backbone_config")  # architecture only: weights come from the checkpoint
    rebuilt.load_state_dict(load_safetensors(tmp_path / "model.safetensors"))
    assert rebuilt.vocab_size == HF_VOCAB + 5
    head, emb = rebuilt.lm.get_output_embeddings().weight, rebuilt.lm.get_input_embeddings().weight
    assert (head is emb) == (name != "llama")
    ids = torch.randint(0, HF_VOCAB + 5, (1, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(full_logits(rebuilt, ids), full_logits(bb, ids), atol=0, rtol=0)


def test_hf_missing_or_incomplete_folder_gives_clear_errors(tmp_path, hf_models):
    with pytest.raises(UserError, match="not found.*huggingface-cli download"):
        load_hf(tmp_path / "no-such-model")
    with pytest.raises(UserError, match="no config.json"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text((hf_models["llama"][0] / "config.json").read_text())
    with pytest.raises(UserError, match="no \\*.safetensors"):
        load_hf(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(UserError, match="pickle"):
        load_hf(tmp_path)
