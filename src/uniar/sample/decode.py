"""Autoregressive decoding with a KV cache: prefill the prompt, then one token per step.

The sampler owns the loop (LlamaGen's generate.py is the tone). Each step it decides, per row,
which part of the vocabulary may come next: inside an image span only visual ids (and exactly
`image_len` of them, then `<eoi>`), outside only text ids. Classifier-free guidance runs the
conditional and unconditional prompts as one doubled batch and mixes their logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uniar.data.sequence import Sequence, collate

TEXT_MODE, IMAGE_MODE = 0, 1


@dataclass
class SamplingConfig:
    """How to pick each token. temperature 0 = greedy. Images and text have separate settings."""

    text_temperature: float = 0.0
    text_top_k: int = 0
    text_top_p: float = 1.0
    image_temperature: float = 1.0
    image_top_k: int = 0
    image_top_p: float = 1.0
    cfg_scale: float = 1.0  # classifier-free guidance for images (1 = off)
    max_new_tokens: int = 64  # text tokens (image spans add their own length)
    seed: int = 0
    bf16: bool = False  # bf16 autocast for the backbone (faster on CPU; fp32 by default)

    def describe(self) -> dict:
        return dict(self.__dict__)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the top-k logits and the smallest set with cumulative probability >= top_p."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        cum = probs.cumsum(-1)
        drop = cum - probs > top_p  # tokens whose preceding mass already exceeds top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


def pick(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
         generator: torch.Generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    logits = filter_logits(logits / temperature, top_k, top_p)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class Decoder:
    """Decodes continuations of prompts for a discrete unified model (UGen)."""

    def __init__(self, model, image_len: int, logit_bias: torch.Tensor | None = None):
        self.model = model
        self.vocab = model.vocab
        self.image_len = image_len
        v = self.vocab
        self.boi, self.eoi, self.eos = v.sid("<boi>"), v.sid("<eoi>"), v.sid("<eos>")
        V = v.size
        text_ok = torch.zeros(V, dtype=torch.bool)
        text_ok[: v.text_size] = True
        for name, i in v.special.items():  # no special token may appear inside text ...
            text_ok[i] = False
        text_ok[self.eos] = True  # ... except the end of the sequence
        self.text_allowed = text_ok
        image_ok = torch.zeros(V, dtype=torch.bool)
        image_ok[v.visual_offset:] = True
        self.image_allowed = image_ok
        self.logit_bias = logit_bias  # e.g. -inf on visual ids still inactive in a progressive run

    @torch.no_grad()
    def run(self, prompts: list[Sequence], mode: str, cfg: SamplingConfig,
            uncond: list[Sequence] | None = None, pad_id: int = 0,
            return_logits: bool = False, force_guidance: bool = False) -> dict:
        """Continue each prompt.

        mode: "text" (stop at <eos>), "image" (the prompt ends with <boi>: exactly image_len visual
        ids), or "interleaved" (text, entering and leaving image spans as the model chooses).
        Returns {"tokens": list of generated id lists, "logits": per-step logits if asked}.
        `uncond` prompts are used when cfg_scale != 1 (or force_guidance, for testing the mixing).
        """
        if mode not in ("text", "image", "interleaved"):
            raise ValueError(f"mode must be text, image or interleaved, got {mode!r}")
        B = len(prompts)
        guided = uncond is not None and (cfg.cfg_scale != 1.0 or force_guidance)
        seqs = list(prompts) + (list(uncond) if guided else [])
        batch = collate(seqs, pad_id=pad_id, side="left")
        dev = next(self.model.parameters()).device
        batch = batch.to(dev)
        n_rows, T = batch.ids.shape
        max_new = self.image_len + 1 if mode == "image" else cfg.max_new_tokens
        if mode == "interleaved":
            max_new = cfg.max_new_tokens
        dtype = torch.bfloat16 if cfg.bf16 else torch.float32
        backbone = self.model.backbone
        cache = backbone.new_cache(n_rows, T + max_new, dtype, dev)
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16)

        mask = batch.mask
        positions = batch.positions
        with autocast:
            hidden = self.model.hidden(self.model.embed(batch.ids, batch), positions, mask, cache)
        logits = self.model.logits(hidden[:, -1])
        next_pos = positions[:, -1] + 1

        in_image = torch.full((B,), mode == "image", dtype=torch.bool)
        image_count = torch.zeros(B, dtype=torch.long)
        done = torch.zeros(B, dtype=torch.bool)
        out = [[] for _ in range(B)]
        all_logits = []
        for _ in range(max_new):
            step_logits = logits.float().cpu()
            if guided:
                cond, unc = step_logits[:B], step_logits[B:]
                mixed = unc + cfg.cfg_scale * (cond - unc)
                # guidance applies to image tokens; text tokens follow the conditional logits
                step_logits = torch.where(in_image[:, None], mixed, cond)
            if self.logit_bias is not None:
                step_logits = step_logits + self.logit_bias.cpu()
            if return_logits:
                all_logits.append(step_logits.clone())
            allowed = torch.where(in_image[:, None], self.image_allowed, self.text_allowed)
            if mode == "interleaved":
                allowed = allowed.clone()
                allowed[~in_image, self.boi] = True
            step_logits = step_logits.masked_fill(~allowed, float("-inf"))
            full = in_image & (image_count >= self.image_len)
            tok = torch.empty(B, dtype=torch.long)
            img_rows, txt_rows = in_image & ~full, ~in_image
            if img_rows.any():
                tok[img_rows] = pick(step_logits[img_rows], cfg.image_temperature, cfg.image_top_k,
                                     cfg.image_top_p, gen)
            if txt_rows.any():
                tok[txt_rows] = pick(step_logits[txt_rows], cfg.text_temperature, cfg.text_top_k,
                                     cfg.text_top_p, gen)
            tok[full] = self.eoi  # an image is exactly image_len tokens long
            tok[done] = pad_id
            for b in range(B):
                if not done[b]:
                    out[b].append(int(tok[b]))
            # update the per-row state machine
            image_count = torch.where(in_image & ~full, image_count + 1, image_count)
            leaving = full
            entering = (~in_image) & (tok == self.boi)
            in_image = (in_image & ~leaving) | entering
            image_count = torch.where(entering | leaving, torch.zeros_like(image_count), image_count)
            if mode == "image":
                done = done | leaving
            else:
                done = done | ((tok == self.eos) & ~leaving)
            if bool(done.all()):
                break
            feed = tok.clone()
            feed[done] = pad_id
            if guided:
                feed = torch.cat([feed, feed])
            feed = feed.to(dev)[:, None]
            mask = torch.cat([mask, torch.ones(n_rows, 1, dtype=torch.bool, device=dev)], dim=1)
            with autocast:
                hidden = self.model.hidden(self.model.embed(feed), next_pos[:, None], mask, cache)
            logits = self.model.logits(hidden[:, -1])
            next_pos = next_pos + 1
        result = {"tokens": out}
        if return_logits:
            result["logits"] = all_logits
        return result
