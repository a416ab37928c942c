"""Several continuous image tokens per step (MAR's schedule) for a random-order causal model.

MAR draws an image in a few steps: each step predicts a group of masked tokens at once, few at
first and more as the image fills in (a cosine schedule). A causal decoder trained in random order
can do the same. Every input carries the position of the token that follows it (the next-position
embedding), so the hidden state of the last input, re-read with next position q, is the model's
condition for the token at q given everything drawn so far: one forward pass reads the last input
once per token of the group, each copy told its own target and seeing only the committed prefix and
itself. Tokens of one group are drawn independently given that prefix, as in MAR.

The group's tokens are then committed to the KV cache in their drawn order, each input with the
next position of the token after it: exactly the sequence a random-order model is trained on. The
query copies are dropped from the cache. Drawing one token per step (`steps` = the image length)
gives the plain sampler's result.

Raster-trained models never saw an input skip ahead, so groups are for `data.order: random`.
"""

from __future__ import annotations

import math

import torch

from uniar.errors import UserError


def mar_schedule(length: int, steps: int) -> list[int]:
    """Tokens drawn at each of `steps` steps: MAR's cosine masking schedule, at least one per step.

    After step i, floor(length * cos(pi/2 * (i+1)/steps)) tokens are still to be drawn.
    """
    if not 1 <= steps <= length:
        raise UserError(f"image_steps must be between 1 and the image's {length} tokens, got {steps}")
    sizes, known = [], 0
    for i in range(steps):
        left = math.floor(length * math.cos(math.pi / 2 * (i + 1) / steps))
        left = max(min(left, length - known - 1), steps - i - 1)
        sizes.append(length - left - known)
        known = length - left
    return sizes


def group_mask(past: int, n_commit: int, n_query: int, rows: int, device) -> torch.Tensor:
    """(rows, n_commit + n_query, past + n_commit + n_query) bool: commit inputs are causal; each query
    sees the past, every commit input and itself, but not the other queries."""
    new = n_commit + n_query
    mask = torch.zeros(new, past + new, dtype=torch.bool, device=device)
    mask[:, :past] = True
    mask[:, past:past + n_commit] = torch.ones(new, n_commit, dtype=torch.bool, device=device).tril()
    idx = torch.arange(new, device=device)
    mask[idx, past + idx] = True
    return mask.expand(rows, -1, -1)


@torch.no_grad()
def draw_image_in_groups(decoder, batch, B: int, guided: bool, cfg, images, head_gen: torch.Generator,
                         autocast, return_hidden: bool = False) -> dict:
    """Decode one image per row of a prompt batch ending in `<boi>`, in `cfg.image_steps` steps.

    `batch` is the collated (doubled when guided) prompt batch; `images` has each row's random order
    already drawn. Returns the Decoder's result dict: tokens, images, orders (and "hidden": per drawn
    token, in draw order, the (B, H) conditions of the diffusion head).
    """
    model, L = decoder.model, decoder.image_len
    if not images.random:
        raise UserError("image_steps draws several tokens per step, which needs a model trained in random "
                        "order (data.order=random); a raster model only ever saw the next token")
    sizes = mar_schedule(L, cfg.image_steps)
    dev = batch.ids.device
    n_rows, T = batch.ids.shape
    cache = model.backbone.new_cache(n_rows, T + L + max(sizes), torch.bfloat16 if cfg.bf16 else torch.float32, dev)
    order = images.order.to(dev)
    if guided:
        order = torch.cat([order, order])

    with autocast:
        # the prompt but its last input (<boi>): that one is re-read with each target of the first group
        model.hidden(model.embed(batch.ids, batch)[:, :-1], batch.positions[:, :-1], batch.mask[:, :-1], cache)
    keys = batch.mask[:, :-1]
    no_image = torch.full((n_rows, 1), -1, dtype=torch.long, device=dev)
    pending = dict(base=model.backbone.embed(batch.ids[:, -1:]), gen=torch.zeros(n_rows, 1, dtype=torch.bool, device=dev),
                   latents=None, pos=no_image, position=batch.positions[:, -1:])
    commit = None  # (embeds, positions) of the inputs to write before the next queries
    img_mask = model.backbone.embed(torch.full((n_rows, 1), decoder.img_mask, device=dev))
    hidden_out, count = [], 0
    for size in sizes:
        targets = order[:, count:count + size]  # image positions drawn at this step
        queries = model.image_inputs(pending["base"].expand(-1, size, -1), pending["gen"].expand(-1, size),
                                     None if pending["latents"] is None else pending["latents"].expand(-1, size, -1),
                                     pending["pos"].expand(-1, size), targets)
        n_commit = 0 if commit is None else commit[0].shape[1]
        embeds = queries if commit is None else torch.cat([commit[0], queries], 1)
        positions = pending["position"].expand(-1, size)
        if commit is not None:
            positions = torch.cat([commit[1], positions], 1)
        keys_now = torch.cat([keys, torch.ones(n_rows, n_commit + size, dtype=torch.bool, device=dev)], 1)
        attn = group_mask(cache.length, n_commit, size, n_rows, dev)
        with autocast:
            hidden = model.hidden(embeds, positions, keys_now, cache, attn_mask=attn)
        cache.drop_last(size)  # the queries are not part of the sequence
        keys = keys_now[:, : keys.shape[1] + n_commit]
        cond = hidden[:, n_commit:].float()  # (n_rows, size, H)
        if return_hidden:
            hidden_out += [cond[:B, j].cpu() for j in range(size)]
        drawn = _draw(decoder, cond, B, guided, cfg, head_gen, count, size)  # (B, size, D)
        rows = torch.arange(B, device=images.latents.device)[:, None]
        images.latents[rows, targets[:B].to(images.latents.device)] = drawn.to(images.latents.device)

        # commit: the pending input told its first target, then each drawn token but the last, told the
        # next one; the last drawn token becomes the new pending input
        lat = torch.cat([drawn, drawn]) if guided else drawn
        first = model.image_inputs(pending["base"], pending["gen"], pending["latents"], pending["pos"], targets[:, :1])
        rest = model.image_inputs(img_mask.expand(-1, size - 1, -1), torch.ones(n_rows, size - 1, dtype=torch.bool, device=dev),
                                  lat[:, :-1], targets[:, :-1], targets[:, 1:])
        start = pending["position"]
        commit = (torch.cat([first, rest], 1), start + torch.arange(size, device=dev))
        pending = dict(base=img_mask, gen=torch.ones(n_rows, 1, dtype=torch.bool, device=dev), latents=lat[:, -1:],
                       pos=targets[:, -1:], position=start + size)
        count += size

    images.finish(torch.ones(B, dtype=torch.bool))
    tokens = [[decoder.img_mask] * L + [decoder.eoi] for _ in range(B)]
    result = {"tokens": tokens, "images": images.finished, "orders": images.orders}
    if return_hidden:
        result["hidden"] = hidden_out
    return result


def _draw(decoder, cond: torch.Tensor, B: int, guided: bool, cfg, head_gen, count: int, size: int) -> torch.Tensor:
    """(B, size, D) tokens from the diffusion head for one group's conditions (n_rows, size, H)."""
    H = cond.shape[-1]
    scale: float | torch.Tensor = cfg.cfg_scale if guided else 1.0
    if guided and cfg.cfg_schedule == "linear":  # as the plain sampler: by how many tokens are known
        step_scale = 1 + (cfg.cfg_scale - 1) * (count + torch.arange(size, device=cond.device) + 1).float() / decoder.image_len
        scale = step_scale.repeat(B)
    tokens = decoder.model.sample_image_tokens(
        cond[:B].reshape(B * size, H), head_gen, uncond=cond[B:].reshape(B * size, H) if guided else None,
        cfg_scale=scale, temperature=cfg.image_temperature, steps=cfg.diffusion_steps or None)
    return tokens.reshape(B, size, -1)
