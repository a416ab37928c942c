"""Autoregressive decoding with a KV cache: prefill the prompt, then one token per step.

The sampler owns the loop (LlamaGen's generate.py is the tone). Each step it decides, per row,
which part of the vocabulary may come next: inside an image span only visual ids (and exactly
`image_len` of them, then `<eoi>`), outside only text ids. Classifier-free guidance runs the
conditional and unconditional prompts as one doubled batch and mixes their logits.

A continuous model (UniFluid, `model.continuous`) fills its image spans differently: the hidden
state conditions the model's diffusion head, which draws the token (guided inside the head, from
the cond / uncond halves of the doubled batch); the token goes back in through the model's own
`image_inputs` (input projection + image-position embeddings), and its place in the sequence holds
`<img_mask>`. Its images may be drawn in raster or random order (a permutation per image from the
seeded generator); the finished images come back as latents in raster order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uniar.data.sequence import Sequence, collate
from uniar.errors import UserError
from uniar.sample.groups import draw_image_in_groups

TEXT_MODE, IMAGE_MODE = 0, 1
IMAGE_ORDERS = ("", "raster", "random")
CFG_SCHEDULES = ("constant", "linear")


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
    # continuous images only (UniFluid); image_temperature is the diffusion head's temperature
    image_order: str = ""  # raster | random; "" = as trained (the Pipeline knows; a bare Decoder takes raster)
    cfg_schedule: str = "constant"  # constant, or linear from 1 to cfg_scale over an image's tokens (MAR)
    diffusion_steps: int = 0  # reverse diffusion steps per token; 0 = the head's configured default
    # continuous, random order: draw an image in this many steps, several tokens per step on MAR's
    # cosine schedule (sample/groups.py); 0 = one token per step
    image_steps: int = 0

    def __post_init__(self):
        if self.image_order not in IMAGE_ORDERS:
            raise UserError(f"image_order must be raster, random or empty (as trained), got {self.image_order!r}")
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise UserError(f"cfg_schedule must be one of {', '.join(CFG_SCHEDULES)}, got {self.cfg_schedule!r}")
        if self.diffusion_steps < 0:
            raise UserError(f"diffusion_steps must be >= 0 (0 = the head's default), got {self.diffusion_steps}")
        if self.image_steps < 0:
            raise UserError(f"image_steps must be >= 0 (0 = one token per step), got {self.image_steps}")

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


class ContinuousImages:
    """Per-row state of continuous image spans while decoding: the current image's token order, the
    tokens drawn so far (at their image positions), and each row's finished images and orders."""

    def __init__(self, rows: int, length: int, dim: int, order: str, generator: torch.Generator, device):
        self.length, self.random, self.generator = length, order == "random", generator
        self.order = torch.arange(length).repeat(rows, 1)
        self.latents = torch.zeros(rows, length, dim, device=device)
        self.finished: list[list[torch.Tensor]] = [[] for _ in range(rows)]
        self.orders: list[list[list[int]]] = [[] for _ in range(rows)]

    def start(self, rows: torch.Tensor) -> None:
        """A new image begins on each row of the bool mask `rows`: draw its order (random: a permutation)."""
        for b in rows.nonzero().flatten().tolist():
            self.order[b] = (torch.randperm(self.length, generator=self.generator) if self.random
                             else torch.arange(self.length))
            self.latents[b] = 0

    def position(self, count: torch.Tensor) -> torch.Tensor:
        """(B,) image position of each row's token number `count`, or -1 past the image's end."""
        pos = self.order.gather(1, count.clamp(0, self.length - 1)[:, None])[:, 0]
        return torch.where(count < self.length, pos, -1)

    def put(self, rows: torch.Tensor, count: torch.Tensor, values: torch.Tensor) -> None:
        idx = rows.nonzero().flatten()
        self.latents[idx.to(self.latents.device), self.position(count)[idx].to(self.latents.device)] = values.float()

    def finish(self, rows: torch.Tensor) -> None:
        for b in rows.nonzero().flatten().tolist():
            self.finished[b].append(self.latents[b].cpu().clone())
            self.orders[b].append(self.order[b].tolist())


class Decoder:
    """Decodes continuations of prompts for a unified model: discrete (UGen) or continuous (UniFluid)."""

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
        self.continuous = getattr(model, "continuous", False)  # image tokens from a diffusion head
        self.img_mask = v.sid("<img_mask>")

    def visual_bias(self) -> torch.Tensor | None:
        """The logit bias on the visual ids (None = none), or a clear error if it leaves none to draw."""
        if self.logit_bias is None:
            return None
        visual = self.logit_bias[self.vocab.visual_offset:]
        if torch.isinf(visual).all():
            raise UserError("no visual id is active yet in this checkpoint (progressive vocabulary schedule), "
                            "so it cannot draw images; use a later checkpoint")
        return visual

    @torch.no_grad()
    def run(self, prompts: list[Sequence], mode: str, cfg: SamplingConfig,
            uncond: list[Sequence] | None = None, pad_id: int = 0,
            return_logits: bool = False, force_guidance: bool = False, return_hidden: bool = False) -> dict:
        """Continue each prompt.

        mode: "text" (stop at <eos>), "image" (the prompt ends with <boi>: exactly image_len visual
        ids), or "interleaved" (text, entering and leaving image spans as the model chooses).
        Returns {"tokens": list of generated id lists, "logits": per-step logits if asked}; a
        continuous model adds "images" (per row, the finished images' latents (N, D) in raster order)
        and "orders" (per row, each image's token order); return_hidden adds "hidden", the last
        hidden state of the conditional rows at every step.
        `uncond` prompts are used when cfg_scale != 1 (or force_guidance, for testing the mixing).
        """
        if mode not in ("text", "image", "interleaved"):
            raise ValueError(f"mode must be text, image or interleaved, got {mode!r}")
        if mode != "text":
            self.visual_bias()
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
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16)
        images = head_gen = None
        if self.continuous:
            images = ContinuousImages(B, self.image_len, self.model.token_dim, cfg.image_order or "raster",
                                      gen, dev)
            head_gen = torch.Generator(device=dev).manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
            if mode == "image":  # the prompt ends with <boi>, which is told where the first token goes
                images.start(torch.ones(B, dtype=torch.bool))
                first = images.position(torch.zeros(B, dtype=torch.long))
                batch.next_image_pos[:, -1] = (torch.cat([first, first]) if guided else first).to(dev)
                if cfg.image_steps:
                    return draw_image_in_groups(self, batch, B, guided, cfg, images, head_gen, autocast,
                                                return_hidden=return_hidden)
        if cfg.image_steps and mode != "text":  # text needs no image steps; an image here would ignore them
            raise UserError("image_steps draws a continuous image (UniFluid) on its own (t2i, edit); "
                            "it does not apply to discrete images or interleaved output")
        cache = backbone.new_cache(n_rows, T + max_new, dtype, dev)

        mask = batch.mask
        positions = batch.positions
        with autocast:
            hidden = self.model.hidden(self.model.embed(batch.ids, batch), positions, mask, cache)
        last = hidden[:, -1]
        next_pos = positions[:, -1] + 1

        in_image = torch.full((B,), mode == "image", dtype=torch.bool)
        image_count = torch.zeros(B, dtype=torch.long)
        done = torch.zeros(B, dtype=torch.bool)
        out = [[] for _ in range(B)]
        all_logits, all_hidden = [], []
        for _ in range(max_new):
            if return_hidden:
                all_hidden.append(last[:B].float().cpu())
            full = in_image & (image_count >= self.image_len)
            img_rows, txt_rows = in_image & ~full, ~in_image
            # a continuous model needs no logits while every row draws an image token
            if not self.continuous or return_logits or bool(txt_rows.any()):
                step_logits = self.model.logits(last).float().cpu()
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
            tok = torch.empty(B, dtype=torch.long)
            if img_rows.any():
                if self.continuous:
                    images.put(img_rows, image_count, self._draw_tokens(last, img_rows, image_count, B, guided,
                                                                        cfg, head_gen))
                    tok[img_rows] = self.img_mask
                else:
                    tok[img_rows] = pick(step_logits[img_rows], cfg.image_temperature, cfg.image_top_k,
                                         cfg.image_top_p, gen)
            if txt_rows.any():
                tok[txt_rows] = pick(step_logits[txt_rows], cfg.text_temperature, cfg.text_top_k,
                                     cfg.text_top_p, gen)
            tok[full] = self.eoi  # an image is exactly image_len tokens long
            if self.continuous and full.any():
                images.finish(full)
            drawn, drawn_count = img_rows, image_count.clone()
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
            if self.continuous and entering.any():
                images.start(entering)
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
                if self.continuous:
                    embeds = self.model.embed(feed)
                    embeds = self._image_inputs(embeds, images, drawn, drawn_count, entering, guided)
                else:  # a drawn visual id sits at its index in the image (UGen's image_pos_embed)
                    pos = torch.where(drawn, drawn_count, -1)
                    pos = (torch.cat([pos, pos]) if guided else pos).to(dev)[:, None]
                    embeds = self.model.embed(feed, image_pos=pos)
                hidden = self.model.hidden(embeds, next_pos[:, None], mask, cache)
            last = hidden[:, -1]
            next_pos = next_pos + 1
        result = {"tokens": out}
        if return_logits:
            result["logits"] = all_logits
        if return_hidden:
            result["hidden"] = all_hidden
        if self.continuous:
            result["images"], result["orders"] = images.finished, images.orders
        return result

    def _draw_tokens(self, last, rows, count, B, guided, cfg: SamplingConfig, generator) -> torch.Tensor:
        """Continuous tokens for `rows` from the diffusion head, guided in the head when asked."""
        idx = rows.nonzero().flatten().to(last.device)
        scale = cfg.cfg_scale if guided else 1.0
        if guided and cfg.cfg_schedule == "linear":  # MAR: guidance grows as more of the image is known
            scale = 1 + (cfg.cfg_scale - 1) * (count[rows] + 1).float().to(last.device) / self.image_len
        return self.model.sample_image_tokens(last[:B][idx], generator, uncond=last[B:][idx] if guided else None,
                                              cfg_scale=scale, temperature=cfg.image_temperature,
                                              steps=cfg.diffusion_steps or None)

    def _image_inputs(self, embeds, images: ContinuousImages, drawn, count, entering, guided) -> torch.Tensor:
        """The continuous part of the next inputs: each drawn token at its image position, and the
        position of the token each row must draw next (also after a `<boi>` it just emitted)."""
        pos = torch.where(drawn, images.position(count), -1)
        nxt = torch.where(drawn, images.position(count + 1), -1)
        nxt = torch.where(entering, images.position(torch.zeros_like(count)), nxt)
        rows = torch.arange(len(pos), device=images.latents.device)
        latents = images.latents[rows, pos.clamp(min=0).to(rows.device)]
        if guided:
            drawn, pos, nxt, latents = (torch.cat([t, t]) for t in (drawn, pos, nxt, latents))
        dev = embeds.device
        return self.model.image_inputs(embeds, drawn.to(dev)[:, None], latents.to(dev)[:, None],
                                       pos.to(dev)[:, None], nxt.to(dev)[:, None])
