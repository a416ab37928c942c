"""Teacher-forced text-to-image (`uniar eval --tasks tf_t2i`, scores `tf_t2i_*`): what the model predicts for each image token when fed the true ones.

Free-running sampling compounds errors: one bad token sends the rest of the image astray. Here
every image token is drawn from the model's prediction given the caption and the *true* earlier
tokens (one forward pass over the real t2i sequence), then the image is decoded and parsed like a
sampled one. A model that scores well here but not free-running has learned the conditional
distributions but drifts at sampling time; one that scores badly here has not learned them yet
(research/feasibility-continuous.md used this to tell the two apart).

Discrete models (UGen) pick each visual id from the logits restricted to visual ids, with the
sampling config's image temperature / top-k / top-p; continuous ones (UniFluid) draw each token
with the diffusion head at the image temperature. No guidance: the point is the conditional model.
"""

from __future__ import annotations

import numpy as np
import torch

from uniar.data.sequence import GEN, collate
from uniar.sample.decode import SamplingConfig, pick


@torch.no_grad()
def teacher_forced_tokens(pipe, prompts: list[str], images: list, sampling: SamplingConfig,
                          batch_size: int = 64) -> torch.Tensor:
    """Each image (ImageData) re-drawn from the model's teacher-forced predictions, in raster order:
    (N, L) visual codes for a discrete model, (N, L, D) latents for a continuous one."""
    model = pipe.model
    continuous = getattr(model, "continuous", False)
    gen = torch.Generator().manual_seed(sampling.seed)
    out = []
    for i in range(0, len(prompts), batch_size):
        rows = [pipe.builder.t2i(p, im) for p, im in zip(prompts[i:i + batch_size], images[i:i + batch_size])]
        batch = collate(rows, pad_id=pipe.text_tok.pad_id, side="right")
        hidden = model.hidden(model.embed(batch.ids, batch), batch.positions, None)
        # the hidden state at t-1 predicts the image token at t
        at = (batch.role[:, 1:] == GEN) & batch.mask[:, 1:]
        cond = hidden[:, :-1][at]
        where = batch.image_pos[:, 1:][at]  # each predicted token's place in its image
        row = torch.arange(len(rows))[:, None].expand_as(at)[at]
        if continuous:
            drawn = model.sample_image_tokens(cond, gen, temperature=sampling.image_temperature,
                                              steps=sampling.diffusion_steps or None)
            table = torch.zeros(len(rows), model.gen_len, drawn.shape[-1])
            table[row, where] = drawn.float()
        else:
            v = model.vocab
            logits = model.logits(cond)[:, v.visual_offset:]
            bias = pipe.decoder.visual_bias()
            if bias is not None:
                logits = logits + bias
            codes = pick(logits, sampling.image_temperature, sampling.image_top_k, sampling.image_top_p, gen)
            table = torch.zeros(len(rows), pipe.image_tok.num_tokens, dtype=torch.long)
            table[row, where] = codes
        out.append(table)
    return torch.cat(out)


def teacher_forced_images(pipe, prompts: list[str], images: np.ndarray, sampling: SamplingConfig) -> np.ndarray:
    """uint8 (N, S, S, 3): each uint8 image re-drawn from the model's teacher-forced predictions."""
    tokens = teacher_forced_tokens(pipe, prompts, [pipe.encode_image(im) for im in images], sampling)
    if getattr(pipe.model, "continuous", False):
        return pipe.decode_latents(list(tokens))
    return pipe.decode_codes(tokens.tolist())
