"""Teacher-forced t2i: fed the model's own free-running image, it must predict that image back."""

from types import SimpleNamespace

import torch

from helpers import text_tokenizer, tiny_ugen
from test_unifluid import N as UNI_N
from test_unifluid import builder_for, randomize_head, tiny_model
from uniar.data.sequence import ImageData, SequenceBuilder
from uniar.eval.teacher_forced import teacher_forced_tokens
from uniar.sample.decode import Decoder, SamplingConfig

PROMPTS = ["a large red circle at the top left", "a small cyan cross at the center"]


def pipe_for(model, builder, n_tokens):
    return SimpleNamespace(model=model, builder=builder, text_tok=SimpleNamespace(pad_id=0),
                           image_tok=SimpleNamespace(num_tokens=n_tokens), decoder=Decoder(model, n_tokens))


def test_discrete_greedy_teacher_forcing_reproduces_the_greedy_image():
    torch.manual_seed(0)
    n = 8
    model = tiny_ugen(n_visual=16).eval()
    builder = SequenceBuilder(text_tokenizer(), model.vocab, gen_len=n, und_len=n, discrete=True, max_len=256)
    greedy = SamplingConfig(image_temperature=0.0, seed=0)
    res = Decoder(model, n).run([builder.t2i(p) for p in PROMPTS], "image", greedy, pad_id=0)
    codes = [[t - model.vocab.visual_offset for t in toks[:n]] for toks in res["tokens"]]
    images = [ImageData(codes=torch.tensor(c).numpy()) for c in codes]
    tf = teacher_forced_tokens(pipe_for(model, builder, n), PROMPTS, images, greedy)
    assert tf.tolist() == codes
    # a different image as the truth changes what is predicted after its first token
    other = [ImageData(codes=((torch.tensor(c) + 1) % 16).numpy()) for c in codes]
    assert teacher_forced_tokens(pipe_for(model, builder, n), PROMPTS, other, greedy).tolist() != codes


def test_continuous_teacher_forcing_conditions_each_token_like_the_sampler(monkeypatch):
    model = tiny_model(seed=1)
    randomize_head(model, seed=1)
    model.eval()
    builder = builder_for(model)
    # a deterministic "head": the token is read off the conditioning state, so equal tokens mean
    # equal conditioning in the sampler and in teacher forcing
    monkeypatch.setattr(model, "sample_image_tokens",
                        lambda cond, gen, **kw: torch.tanh(cond[:, : model.token_dim].float()))
    s = SamplingConfig(seed=0)
    res = Decoder(model, UNI_N).run([builder.t2i(p) for p in PROMPTS], "image", s, pad_id=0)
    drawn = torch.stack([row[0] for row in res["images"]])
    tf = teacher_forced_tokens(pipe_for(model, builder, UNI_N), PROMPTS,
                               [ImageData(latents=z) for z in drawn], s)
    torch.testing.assert_close(tf, drawn, atol=1e-4, rtol=1e-4)
