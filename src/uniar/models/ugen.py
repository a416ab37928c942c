"""UGen: one decoder over text ids and VQ visual ids, one softmax head (arXiv 2503.21193).

The backbone (built-in or a transformers causal LM) sees one vocabulary: text ids, special tokens
and one visual id per VQ code (uniar.models.vocab). Training is next-token cross-entropy on the
targets the sequence builder marks; progressive vocabulary learning masks inactive visual ids in the
inputs, the targets and the softmax (uniar.train.progressive_vocab).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from uniar.data.sequence import GEN, UND, Batch
from uniar.errors import UserError
from uniar.models.losses import LossParts, batch_turns, check_loss_norm, normaliser, target_weights
from uniar.models.vocab import Vocabulary


# What a target's softmax normalises over (ModelConfig.softmax): the whole vocabulary, or the ids the
# sampler may emit at that position (visual ids inside an image span, text ids outside).
SOFTMAXES = ("full", "per_modality")


class UGen(nn.Module):
    family = "ugen"

    def __init__(self, backbone: nn.Module, vocab: Vocabulary, loss_norm: str = "token",
                 softmax: str = "full", image_len: int = 0):
        """image_len > 0: a learned embedding of each image token's index in its image (0..image_len-1)
        is added to its input (ModelConfig.image_pos_embed); 0: none, as the paper."""
        super().__init__()
        self.loss_norm = check_loss_norm(loss_norm)
        if softmax not in SOFTMAXES:
            raise UserError(f"model.softmax must be one of {SOFTMAXES}, got {softmax!r}")
        self.softmax = softmax
        if backbone.vocab_size < vocab.size:
            backbone.extend_vocab(vocab.size)
        self.backbone = backbone
        self.vocab = vocab
        self.image_pos = None
        if image_len:
            self.image_pos = nn.Embedding(image_len, backbone.hidden_size)
            nn.init.normal_(self.image_pos.weight, std=backbone.embedding_std())

    def compile_training(self) -> None:
        """torch.compile the cache-free backbone forward that training runs (`optim.compile`)."""
        self.backbone.compile_stack()

    # ---- shared pieces (the sampler uses these too) ------------------------------------------------

    def embed(self, ids: torch.Tensor, batch: Batch | None = None,
              image_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings; with image-position embeddings, each image token's index in its image
        comes from `batch.image_pos`, or from `image_pos` ((B,T) long, -1 off images) when decoding."""
        x = self.backbone.embed(ids)
        if self.image_pos is None:
            return x
        pos = batch.image_pos if batch is not None else image_pos
        if pos is None:
            raise ValueError("this UGen adds image-position embeddings: embed() needs a batch or image_pos")
        pos = pos.to(ids.device)
        on = pos >= 0
        return x + (self.image_pos(pos.clamp(min=0)) * on[..., None]).to(x.dtype)

    def hidden(self, embeds, positions, mask, cache=None):
        return self.backbone(embeds, positions, mask, cache)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the unified vocabulary (rows of the backbone beyond vocab.size are cut)."""
        return self.backbone.logits(hidden)[..., : self.vocab.size].float()

    # ---- training ----------------------------------------------------------------------------

    def _targets(self, batch: Batch, progressive) -> torch.Tensor:
        """(B, T-1) bool: which next tokens are trained (after progressive target masking)."""
        targets_on = batch.targets
        if progressive is not None:
            targets_on = progressive.apply_targets(batch.ids, batch.targets, self.vocab.visual_offset)
        return targets_on[:, 1:] & batch.mask[:, 1:]

    def modality_mask(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """-inf on the ids of the other modality: text ids for a visual target, visual ids otherwise.

        The sampler emits only visual ids inside an image span and only text ids outside one, so
        these logits are the distribution it draws each target from.
        """
        visual_id = torch.arange(logits.shape[-1], device=logits.device) >= self.vocab.visual_offset
        other = (target >= self.vocab.visual_offset)[:, None] != visual_id[None, :]
        return logits.masked_fill(other, float("-inf"))

    def target_counts(self, batch: Batch, progressive=None) -> dict[str, int]:
        """What each loss component's sum over `batch` is divided by (targets, or rows: loss_norm)."""
        sel = self._targets(batch, progressive)
        return {"ce": normaliser(sel, self.loss_norm, batch_turns(batch, self.loss_norm))}

    def loss_weights(self) -> dict[str, float]:
        return {"ce": 1.0}

    def forward(self, batch: Batch, progressive=None) -> LossParts:
        """Training forward = the loss (so DDP/FSDP wrappers see a forward call)."""
        return self.loss(batch, progressive)

    def loss(self, batch: Batch, progressive=None) -> LossParts:
        """Summed (weighted: loss_norm) cross-entropy over the batch's targets, per-task sums for logging."""
        ids = batch.ids
        off = self.vocab.visual_offset
        inputs, bias = ids, None
        if progressive is not None:
            inputs = progressive.apply_inputs(ids, off, self.vocab.sid("<img_mask>"))
            bias = progressive.logit_bias(self.vocab.size, off, ids.device)

        # training batches are right-padded: the causal mask alone keeps real tokens off the padding
        hidden = self.hidden(self.embed(inputs, batch), batch.positions, None)
        # token t is predicted from position t-1; only compute logits where there is a target
        sel = self._targets(batch, progressive)
        logits = self.logits(hidden[:, :-1][sel])
        if bias is not None:
            logits = logits + bias
        target = ids[:, 1:][sel]
        if self.softmax == "per_modality":
            logits = self.modality_mask(logits, target)
        ce = F.cross_entropy(logits, target, reduction="none")

        rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(sel)[sel]
        row_sums = torch.zeros(ids.shape[0], device=ids.device).index_add_(0, rows, ce.detach().float())
        weight = target_weights(sel, self.loss_norm, batch_turns(batch, self.loss_norm), batch.row_weight)[sel]
        parts = LossParts(components={"ce": (ce * weight).sum()})
        parts.add_task_losses(batch.tasks, row_sums, sel.sum(1))

        image_positions = (batch.role == GEN) | (batch.role == UND)
        n_img = int(image_positions.sum())
        if progressive is not None and progressive.cfg.enabled:
            if n_img:
                inactive = progressive.inactive_visual(ids, off)[image_positions].sum()
                parts.extra["active_image_positions"] = 1.0 - float(inactive) / n_img
            parts.extra["active_ids"] = progressive.n_active / max(progressive.n_visual, 1)
        return parts
