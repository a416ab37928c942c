"""UniFluid: one decoder over text and continuous image tokens (arXiv 2503.13436; docs/unifluid.md).

    text tokens        -> the backbone's embedding; predicted by its softmax head (cross-entropy)
    GEN image tokens   -> Linear(token_dim -> hidden) of the normalised VAE latent; predicted by a
                          per-token diffusion head (MAR) conditioned on the hidden state one position
                          earlier
    UND image tokens   -> an understanding encoder + projector (models/encoders.py)

Loss = text CE + λ · diffusion loss (both summed here; the training loop divides each by its global
count, then weights them with `loss_weights()`).

Random order (Fluid/MAR): a GEN image may be written in any order of its tokens; span position j
holds the token at image position order[j]. Each input then carries a learned embedding of the
position of the token it must predict next (`next_image_pos`, also on `<boi>`), and each image
token carries one of its own position, so the model knows where the next token goes and where the
ones it has seen sit. In raster order these embeddings are still added (they are harmless, and one
model can then be sampled in either order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from uniar.data.sequence import GEN, UND, Batch
from uniar.errors import UserError
from uniar.models.diffusion import DiffusionHead, DiffusionHeadConfig
from uniar.models.encoders import BuiltinEncoderConfig, UnderstandingEncoder, merge_neighbours
from uniar.models.losses import LossParts, batch_turns, check_loss_norm, normaliser, target_weights
from uniar.models.vocab import Vocabulary

POS_EMBEDS = ("current_and_next", "next", "none")


@dataclass
class UniFluidConfig:
    """UniFluid-specific choices (the paper is silent on most; docs/unifluid.md says why each default)."""

    loss_lambda: float = 1.0  # λ: loss = CE + λ · diffusion
    # the diffusion head; token_dim and cond_dim are set from the image tokenizer and the backbone
    head: DiffusionHeadConfig = field(default_factory=DiffusionHeadConfig)
    und_encoder: Literal["builtin", "siglip", "vae"] = "builtin"
    # linear | mlp: a projector of the understanding encoder's own; gen (und_encoder vae only): an
    # image to be understood is read the way a generated one is, through the generation input
    # projection (and, with und_pos_embed, the current-position table), as UGen reads both roles
    # through one embedding table. The paper reads SigLIP features through a projector.
    und_projector: Literal["linear", "mlp", "gen"] = "mlp"
    builtin_encoder: BuiltinEncoderConfig = field(default_factory=BuiltinEncoderConfig)
    siglip_path: str = ""  # local SigLIP folder (und_encoder=siglip)
    siglip_trainable: bool = False  # fine-tune the SigLIP tower (frozen by default)
    # SigLIP's architecture as recorded when the model was built, so a checkpoint rebuilds it
    # without the original folder (filled in automatically; leave null)
    siglip_config: dict | None = None
    # learned image-position embeddings added to the inputs: of the next token to predict and of
    # the token itself (current_and_next), of the next only, or none (raster order only)
    image_pos_embed: Literal["current_and_next", "next", "none"] = "current_and_next"
    # a learned embedding of each understanding token's index in its image, added after the
    # projector. The vae encoder's tokens carry no position of their own (builtin and SigLIP add
    # theirs inside the encoder), so without it the model can only count from <boi> to know which
    # cell a token shows. false = none (the paper is silent).
    und_pos_embed: bool = False
    # with und_pos_embed: read tokens take their position embedding from the generated images'
    # next-position table instead of a table of their own, so the input that predicts target cell j
    # and the source image's token j carry the same vector, and copying a read image (editing) is
    # matching equal vectors rather than learning to pair two random tables. false = separate tables.
    und_pos_shared: bool = False
    # merge each k x k block of neighbouring understanding features into one token before the
    # projector (Qwen2-VL's 2x2 patch merger): at 48 px, k=2 makes one token per ShapesWorld cell
    # (9 instead of 36), so the object a colour and a shape name is one token to find. 1 = off (the
    # paper feeds SigLIP's patches as they are).
    und_merge: int = 1
    # training only: Gaussian noise of std sigma ~ U(0, input_noise), one sigma per sequence, added to
    # the GEN latents the backbone *reads* (the head's targets stay clean). Free-running sampling
    # feeds the model its own imperfect tokens; a model trained on clean ones learns to copy colour
    # and shape from the previous patch instead of reading the caption (teacher-forced t2i far above
    # free-running). 0 = off (MAR and UniFluid feed clean tokens).
    input_noise: float = 0.0
    # training only: each GEN input token the backbone reads is replaced by a learned mask embedding
    # with probability r ~ U(0, input_drop), one r per sequence (the head's targets stay clean). Unlike
    # noise, a dropped token carries no colour to copy, so the model must take it from the caption.
    # 0 = off (MAR and UniFluid feed clean tokens).
    input_drop: float = 0.0
    # one model token = a g x g group of the tokenizer's latents (MAR's 2x2 grouping of KL-8: SD-VAE
    # at 256 px gives 32x32 tokens of 4 dims, grouped 2x2: 256 tokens of 16 dims)
    token_group: int = 1

    def __post_init__(self):
        if self.und_merge < 1:
            raise UserError(f"model.unifluid.und_merge must be >= 1, got {self.und_merge}")
        if self.token_group < 1:
            raise UserError(f"model.unifluid.token_group must be >= 1, got {self.token_group}")
        if self.input_noise < 0:
            raise UserError(f"model.unifluid.input_noise must be >= 0, got {self.input_noise}")
        if not 0 <= self.input_drop < 1:
            raise UserError(f"model.unifluid.input_drop must be in [0, 1), got {self.input_drop}")
        if self.loss_lambda < 0:
            raise UserError(f"model.unifluid.loss_lambda must be >= 0, got {self.loss_lambda}")
        if self.image_pos_embed not in POS_EMBEDS:
            raise UserError(f"model.unifluid.image_pos_embed must be one of {', '.join(POS_EMBEDS)}")
        if self.und_pos_shared and not self.und_pos_embed:
            raise UserError("model.unifluid.und_pos_shared needs und_pos_embed: true (it shares that embedding)")
        if self.und_projector == "gen" and (self.und_encoder != "vae" or self.und_merge != 1 or self.und_pos_shared):
            raise UserError("model.unifluid.und_projector 'gen' reads the image's own tokens through the generation "
                            "input projection: it needs und_encoder: vae, und_merge: 1 and und_pos_shared: false")
        if self.und_pos_shared and self.image_pos_embed == "none":
            raise UserError("model.unifluid.und_pos_shared shares the next-position table, which "
                            "image_pos_embed: none does not build; use current_and_next or next")


class UniFluid(nn.Module):
    family = "unifluid"
    continuous = True

    def __init__(self, backbone: nn.Module, vocab: Vocabulary, cfg: UniFluidConfig, grid: tuple[int, int],
                 und_encoder: UnderstandingEncoder, loss_norm: str = "token"):
        super().__init__()
        self.loss_norm = check_loss_norm(loss_norm)
        if vocab.n_visual:
            raise UserError("UniFluid's vocabulary has no visual ids (its images are continuous)")
        if backbone.vocab_size < vocab.size:
            backbone.extend_vocab(vocab.size)
        self.backbone = backbone
        self.vocab = vocab
        self.cfg = cfg
        self.grid = tuple(grid)  # the image tokenizer's token grid
        g = cfg.token_group
        if grid[0] % g or grid[1] % g:
            raise UserError(f"token_group {g} does not divide the tokenizer's {grid[0]}x{grid[1]} token grid")
        gen_len = (grid[0] // g) * (grid[1] // g)
        self.gen_len = gen_len  # tokens per generated image (the sequence builder's gen_len)
        self.token_dim = cfg.head.token_dim
        hidden = backbone.hidden_size
        if cfg.head.cond_dim != hidden:
            raise UserError(f"diffusion head cond_dim {cfg.head.cond_dim} != backbone hidden size {hidden}")
        self.in_proj = nn.Linear(self.token_dim, hidden)
        self.cur_pos = nn.Embedding(gen_len, hidden) if cfg.image_pos_embed == "current_and_next" else None
        self.next_pos = nn.Embedding(gen_len, hidden) if cfg.image_pos_embed != "none" else None
        self.drop_embed = nn.Embedding(1, hidden) if cfg.input_drop > 0 else None  # the mask token
        self.head = DiffusionHead(cfg.head)
        self.und = und_encoder
        self.und_len = und_encoder.num_tokens
        self.und_pos = None
        if cfg.und_pos_embed and cfg.und_pos_shared:
            if self.und_len != gen_len:
                raise UserError(f"model.unifluid.und_pos_shared needs as many read tokens as generated ones "
                                f"({self.und_len} against {gen_len}); set und_pos_shared: false")
        elif cfg.und_pos_embed and not (cfg.und_projector == "gen" and self.cur_pos is not None):
            self.und_pos = nn.Embedding(self.und_len, hidden)
        self.img_mask = vocab.sid("<img_mask>")
        self._init_inputs()

    def compile_training(self) -> None:
        """torch.compile what training runs (`optim.compile`): the cache-free backbone forward and
        the diffusion head's denoiser in `loss`."""
        self.backbone.compile_stack()
        self.head.compile_net()

    def _init_inputs(self) -> None:
        # Image inputs start at the scale of the backbone's text embeddings (latents are unit-variance
        # per dim), so neither kind of input drowns the other in the residual stream.
        with torch.no_grad():
            scale = self.backbone.embedding_std()
            nn.init.normal_(self.in_proj.weight, std=scale / self.token_dim ** 0.5)
            nn.init.zeros_(self.in_proj.bias)
            for emb in (self.cur_pos, self.next_pos, self.und_pos):
                if emb is not None:
                    nn.init.normal_(emb.weight, std=scale)
            if self.drop_embed is not None:
                nn.init.normal_(self.drop_embed.weight, std=scale)

    def group_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokenizer tokens (..., h*w, D), raster order -> model tokens (..., h*w/g², g²·D), raster order."""
        return merge_neighbours(tokens, self.cfg.token_group, self.grid)

    def ungroup_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The inverse of group_tokens: model tokens -> tokenizer tokens (for decoding)."""
        g = self.cfg.token_group
        if g == 1:
            return tokens
        (h, w), d = self.grid, tokens.shape[-1] // (g * g)
        lead = tokens.shape[:-2]
        x = tokens.reshape(*lead, h // g, w // g, g, g, d).movedim(-3, -4)  # (..., h/g, g, w/g, g, d)
        return x.reshape(*lead, h * w, d)

    @property
    def reads_pixels(self) -> bool:
        """Whether images to be understood must carry pixels (the data path renders them if so)."""
        return self.und.reads == "pixels"

    # ---- inputs ------------------------------------------------------------------------------

    def embed(self, ids: torch.Tensor, batch: Batch | None = None) -> torch.Tensor:
        """Input embeddings of a batch: text ids, GEN latents, UND encoder features, position embeddings."""
        x = self.backbone.embed(ids)
        if batch is None:
            return x
        return self._embed(x, batch, self.gen_latents(batch))

    def _embed(self, x: torch.Tensor, batch: Batch, latents: torch.Tensor | None) -> torch.Tensor:
        und = batch.role == UND
        if bool(und.any()):
            x = self._put_und(x, batch, und)
        self._check_order(batch)
        return self.image_inputs(x, batch.role == GEN, latents, batch.image_pos, batch.next_image_pos,
                                 self._dropped_inputs(batch))

    def image_inputs(self, x: torch.Tensor, gen: torch.Tensor, latents: torch.Tensor | None,
                     image_pos: torch.Tensor, next_image_pos: torch.Tensor,
                     dropped: torch.Tensor | None = None) -> torch.Tensor:
        """Put projected latents at GEN positions and add the image-position embeddings.

        x (B,T,H) token embeddings; gen (B,T) bool; latents (B,T,D) (read only where gen) or None;
        image_pos / next_image_pos (B,T) long, -1 where absent; dropped (B,T) bool: GEN positions that
        read the mask embedding instead (training, cfg.input_drop). Training, prefill and every
        decoding step go through here, so they cannot drift apart.
        """
        if latents is not None and bool(gen.any()):
            x = torch.where(gen[..., None], self.in_proj(latents.to(self.in_proj.weight.dtype)).to(x.dtype), x)
            if dropped is not None:
                x = torch.where((dropped & gen)[..., None], self.drop_embed.weight[0].to(x.dtype), x)
        if self.cur_pos is not None and bool(gen.any()):
            x = x + (self.cur_pos(torch.where(gen, image_pos, 0)) * gen[..., None]).to(x.dtype)
        has_next = next_image_pos >= 0
        if self.next_pos is not None and bool(has_next.any()):
            x = x + (self.next_pos(next_image_pos.clamp(min=0)) * has_next[..., None]).to(x.dtype)
        return x

    def gen_latents(self, batch: Batch) -> torch.Tensor | None:
        """(B,T,D) latents of the GEN image token at each position (zeros elsewhere), or None."""
        gen = batch.role == GEN
        if not bool(gen.any()):
            return None
        index = batch.image_index[gen]
        used = sorted(set(index.tolist()))
        stacked = []
        for i in used:
            lat = batch.images[i].latents
            if lat is None:
                raise UserError(f"image {i} is to be generated but has no latents; a continuous model "
                                "needs ImageData.latents (the image tokenizer's encode output)")
            lat = torch.as_tensor(lat)
            want = (self.grid[0] * self.grid[1], self.token_dim // self.cfg.token_group ** 2)
            if lat.shape != want:
                raise UserError(f"image {i} has latents of shape {tuple(lat.shape)}; this model reads "
                                f"{want} tokenizer tokens per image")
            stacked.append(self.group_tokens(lat.float()))
        table = torch.stack(stacked).to(batch.ids.device, torch.float32)
        slot = torch.full((len(batch.images),), -1, dtype=torch.long, device=batch.ids.device)
        slot[torch.tensor(used, device=batch.ids.device)] = torch.arange(len(used), device=batch.ids.device)
        out = torch.zeros(*batch.ids.shape, self.token_dim, device=batch.ids.device)
        out[gen] = table[slot[index], batch.image_pos[gen]]
        return out

    def _put_und(self, x: torch.Tensor, batch: Batch, und: torch.Tensor) -> torch.Tensor:
        index = batch.image_index[und]
        used = sorted(set(index.tolist()))
        feats = self.und([batch.images[i] for i in used], x.device, prepare=self.group_tokens)  # (K, und_len, H)
        slot = torch.full((len(batch.images),), -1, dtype=torch.long, device=x.device)
        slot[torch.tensor(used, device=x.device)] = torch.arange(len(used), device=x.device)
        if self.cfg.und_projector == "gen":  # one input path for both roles of an image
            feats = self.in_proj(feats.to(self.in_proj.weight.dtype))
        x = x.clone()
        x[und] = feats[slot[index], batch.image_pos[und]].to(x.dtype)
        if self.cfg.und_projector == "gen" and self.cur_pos is not None:
            table = self.cur_pos if self.cfg.und_pos_embed else None
        else:
            table = self.next_pos if self.cfg.und_pos_shared else self.und_pos
        if table is not None:
            x[und] = x[und] + table(batch.image_pos[und]).to(x.dtype)
        return x

    def _check_order(self, batch: Batch) -> None:
        if self.next_pos is not None:
            return
        nxt, pos, gen = batch.next_image_pos, batch.image_pos, batch.role == GEN
        has = nxt >= 0
        raster = torch.where(gen, pos + 1, torch.zeros_like(pos))
        if bool((nxt[has] != raster[has]).any()):
            raise UserError("random image order needs the next-position embedding; set "
                            "model.unifluid.image_pos_embed to current_and_next or next, or data.order=raster")

    # ---- backbone and heads ---------------------------------------------------------------------

    def hidden(self, embeds, positions, mask, cache=None, attn_mask=None):
        return self.backbone(embeds, positions, mask, cache, attn_mask=attn_mask)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the text vocabulary (rows of the backbone beyond vocab.size are cut)."""
        return self.backbone.logits(hidden)[..., : self.vocab.size].float()

    @torch.no_grad()
    def sample_image_tokens(self, cond: torch.Tensor, generator: torch.Generator, *,
                            uncond: torch.Tensor | None = None, cfg_scale: float | torch.Tensor = 1.0,
                            temperature: float | None = None, steps: int | None = None) -> torch.Tensor:
        """Draw one continuous token (N, D) per conditioning hidden state (N, H) with the diffusion head."""
        return self.head.sample(cond.float(), generator, temperature=temperature, cfg_scale=cfg_scale,
                                uncond=None if uncond is None else uncond.float(), steps=steps)

    # ---- training ----------------------------------------------------------------------------

    def _targets(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T-1) bool each: next tokens trained by cross-entropy (text) and by diffusion (GEN)."""
        on = batch.targets[:, 1:] & batch.mask[:, 1:]
        gen = batch.role[:, 1:] == GEN
        return on & ~gen & (batch.role[:, 1:] != UND), on & gen

    def target_counts(self, batch: Batch, progressive=None) -> dict[str, int]:
        ce, diff = self._targets(batch)
        turns = batch_turns(batch, self.loss_norm)
        return {"ce": normaliser(ce, self.loss_norm, turns), "diffusion": normaliser(diff, self.loss_norm, turns)}

    def loss_weights(self) -> dict[str, float]:
        return {"ce": 1.0, "diffusion": self.cfg.loss_lambda}

    def forward(self, batch: Batch, progressive=None) -> LossParts:
        """Training forward = the loss (so DDP/FSDP wrappers see a forward call)."""
        return self.loss(batch, progressive)

    def loss(self, batch: Batch, progressive=None) -> LossParts:
        """Summed text cross-entropy and summed per-token diffusion loss, with per-task sums for logging.

        `progressive` (UGen's vocabulary curriculum) does not apply to continuous tokens and is ignored.
        """
        latents = self.gen_latents(batch)
        embeds = self._embed(self.backbone.embed(batch.ids), batch, self._noised_inputs(latents))
        # training batches are right-padded: the causal mask alone keeps real tokens off the padding
        hidden = self.hidden(embeds, batch.positions, None)
        ce_sel, diff_sel = self._targets(batch)
        turns = batch_turns(batch, self.loss_norm)
        B = batch.ids.shape[0]
        rows = torch.arange(B, device=batch.ids.device)[:, None]

        logits = self.logits(hidden[:, :-1][ce_sel])
        ce = F.cross_entropy(logits, batch.ids[:, 1:][ce_sel], reduction="none")
        parts = LossParts(components={"ce": (ce * target_weights(ce_sel, self.loss_norm, turns, batch.row_weight)[ce_sel]).sum()})
        ce_rows = torch.zeros(B, device=ce.device).index_add_(0, rows.expand_as(ce_sel)[ce_sel], ce.detach().float())
        parts.add_task_losses(batch.tasks, ce_rows, ce_sel.sum(1), prefix="ce_")

        diffusion = self._unused_anchor(self._generation_modules())
        if bool(diff_sel.any()):
            # the head at position t-1 predicts the GEN token at t
            cond, target = hidden[:, :-1][diff_sel], latents[:, 1:][diff_sel]
            weight = target_weights(diff_sel, self.loss_norm, turns, batch.row_weight)[diff_sel]
            task_of = [batch.tasks[r] for r in rows.expand_as(diff_sel)[diff_sel].tolist()]
            diffusion = 0.0
            for task in sorted(set(task_of)):
                pick = torch.tensor([t == task for t in task_of], device=cond.device)
                n = int(pick.sum())
                mean = self.head.loss(cond[pick], target[pick], mask=weight[pick])  # weighted mean
                diffusion = diffusion + mean * weight[pick].sum()
                parts.per_task_sum["diffusion_" + task] = float(mean.detach()) * n
                parts.per_task_count["diffusion_" + task] = n
        if not bool((batch.role == UND).any()):
            diffusion = diffusion + self._unused_anchor([self.und])
        parts.components["diffusion"] = diffusion
        return parts

    def _noised_inputs(self, latents: torch.Tensor | None) -> torch.Tensor | None:
        """The latents the backbone reads in training: clean, or with input noise (cfg.input_noise)."""
        if latents is None or not self.training or self.cfg.input_noise <= 0:
            return latents
        sigma = torch.rand(latents.shape[0], 1, 1, device=latents.device) * self.cfg.input_noise
        return latents + sigma * torch.randn_like(latents)

    def _dropped_inputs(self, batch: Batch) -> torch.Tensor | None:
        """(B,T) bool: GEN inputs replaced by the mask embedding in training (cfg.input_drop), or None."""
        if not self.training or self.drop_embed is None:
            return None
        rate = torch.rand(batch.ids.shape[0], 1, device=batch.ids.device) * self.cfg.input_drop
        return torch.rand(batch.ids.shape, device=batch.ids.device) < rate

    def _generation_modules(self) -> list[nn.Module]:
        return [m for m in (self.in_proj, self.cur_pos, self.next_pos, self.drop_embed, self.head) if m is not None]

    @staticmethod
    def _unused_anchor(modules: list[nn.Module]) -> torch.Tensor:
        """0 with a graph through every trainable parameter of `modules`, so DDP sees them used on
        a micro-batch without (say) images to generate."""
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        if not params:
            return torch.zeros(())
        return sum(p.sum() for p in params) * 0.0
