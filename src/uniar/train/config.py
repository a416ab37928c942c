"""The training config: one typed dataclass tree per run, saved with every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from uniar.data.tasks import DataConfig
from uniar.errors import UserError
from uniar.models.backbone import BackboneConfig
from uniar.models.unifluid import UniFluidConfig
from uniar.train.progressive_vocab import ProgressiveVocabConfig


@dataclass
class ModelConfig:
    family: str = "ugen"  # ugen | unifluid
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    max_seq_len: int = 256  # the sequence builder's limit (the backbone's own may be larger)
    # text tokenizer: "bpe:<vocab size>" trains the built-in byte-level BPE (deterministic, about a
    # second); anything else is a local folder with tokenizer.json or a SentencePiece tokenizer.model
    text_tokenizer: str = "bpe:4096"
    image_tokenizer: str = ""  # folder of a trained/pretrained image tokenizer
    unifluid: UniFluidConfig = field(default_factory=UniFluidConfig)  # family unifluid only
    # how each loss component averages over the batch: "token" (every target counts once),
    # "sequence" (every row's targets are averaged first, so a VQA row weighs what a t2i row weighs)
    # or "turn" (every unbroken run of trained tokens is averaged first: as "sequence", except that
    # each answer of a multi-question VQA row weighs what a row weighs; models/losses.py)
    loss_norm: str = "token"
    # VQA: <vqa> Q <boi> I <eoi> <answer> A, editing: <edit> E <boi> S <eoi> <boi> I' <eoi>, so the
    # image is read knowing what is asked of it (default: the image first, as LLaVA-style models do)
    prompt_first: bool = False
    # UGen: what each target's softmax normalises over. "full": the whole unified vocabulary (one
    # head, as the paper). "per_modality": the ids the sampler may emit there, visual ids for an
    # image token and text ids elsewhere, so the loss is the likelihood of what is sampled.
    softmax: str = "full"
    # UGen: add a learned embedding of each image token's index in its image (0..N-1) to its input,
    # so the model knows which cell a token shows without counting from <boi> (the paper is silent;
    # false = none, only the backbone's 1-D positions). UniFluid: model.unifluid.image_pos_embed.
    image_pos_embed: bool = False
    # UGen: where the visual ids' input embeddings start. "random": fresh rows, as the paper extends
    # the vocabulary; "codebook": each id's VQ code vector through a fixed random projection, so codes
    # that look alike start alike (models/visual_init.py)
    visual_embed_init: str = "random"


@dataclass
class StageConfig:
    name: str = "B"
    fraction: float = 1.0  # of train.steps
    weights: dict = field(default_factory=lambda: {"t2i": 1.0})  # task -> mixture weight
    # this stage's VQA question-type weights (data.vqa_type_weights for the stage); None = those
    vqa_type_weights: dict | None = None
    # this stage's edit-type weights (data.edit_type_weights for the stage); None = those
    edit_type_weights: dict | None = None
    # task -> weight of that task's rows in the loss (absent tasks: 1). The mixture `weights` decide
    # which rows are drawn; these scale their share of the gradient without changing the data: under
    # loss_norm "sequence" a loss weight of 2 counts each of the task's rows twice.
    loss_weights: dict | None = None
    # a learning-rate restart at this stage's first step: warm-up again to this peak, then cosine down
    # to peak * min_lr_ratio at the next restart or the run's end; None = the run's schedule goes on
    restart_lr: float | None = None
    # clear AdamW's moment estimates at this stage's first step (a fresh optimizer, as a fine-tune has)
    reset_moments: bool = False


@dataclass
class OptimConfig:
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 200
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    batch_size: int = 32  # sequences per optimizer step (global, over all ranks and micro-steps)
    grad_accum: int = 1
    # split each rank's rows into the grad_accum micro-batches by length (shortest rows together)
    # instead of by stride: the same global batch and the same loss, with less padding computed
    # (ShapesWorld task sequences run from ~20 to ~170 tokens; one padded batch is ~40% padding)
    group_by_length: bool = False
    # bf16 autocast; auto = where the device has bf16 matmul units (a GPU, an AVX512-BF16/AMX CPU),
    # fp32 elsewhere (uniar/utils/precision.py); fp16 is never used
    bf16: bool | Literal["auto"] = "auto"
    # torch.compile the training forward (the built-in decoder's cache-free path and the diffusion
    # head's denoiser); sampling with a KV cache stays eager. auto = where a compiler is found (a C++
    # compiler on CPU; utils/precision.py). The first steps of a run pay the compilation.
    compile: bool | Literal["auto"] = False


@dataclass
class EvalConfig:
    every: int = 500  # optimizer steps; 0 = only at the end
    n: int = 64  # val examples per task for the periodic evaluation
    final_n: int = 200  # val examples per task at the end; 0 = no final evaluation


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    progressive_vocab: ProgressiveVocabConfig = field(
        default_factory=lambda: ProgressiveVocabConfig(enabled=False))
    steps: int = 3000
    seed: int = 0
    # a checkpoint whose model weights this run starts from (fresh optimizer, schedule and curriculum:
    # fine-tuning on a new mixture); "" = random init. `--resume` continues a run instead.
    init_from: str = ""
    out_dir: str = "runs/run"
    log_every: int = 10
    checkpoint_every: int = 1000
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        for key in ("every", "n", "final_n"):
            if getattr(self.eval, key) < 0:
                raise UserError(f"eval.{key} must be >= 0 (0 turns that evaluation off), got {getattr(self.eval, key)}")
        total = sum(s.fraction for s in self.stages)
        if abs(total - 1.0) > 1e-6:
            raise UserError(f"stage fractions must add up to 1, got {total}")
        for s in self.stages:
            if s.restart_lr is not None and not s.restart_lr > 0:
                raise UserError(f"stage {s.name}: restart_lr must be > 0, got {s.restart_lr}")
        if self.model.family not in ("ugen", "unifluid"):
            raise UserError(f"model.family must be ugen or unifluid, got {self.model.family!r}")
        if not 1 <= self.data.vqa_per_row <= 5:
            raise UserError(f"data.vqa_per_row must be 1..5 (a scene has at most 5 questions), "
                            f"got {self.data.vqa_per_row}")
        from uniar.data.sequence import TASKS
        from uniar.data.shapesworld.edits import EDIT_TYPES
        from uniar.data.shapesworld.questions import AID_TYPES, QUESTION_TYPES

        # (where, weights, allowed keys, what the keys are, whether one weight must be positive)
        checks = []
        for key, known, what in (("vqa_type_weights", QUESTION_TYPES + AID_TYPES, "question types"),
                                 ("edit_type_weights", EDIT_TYPES, "edit types")):
            # the data's weights, then each stage's own
            checks.append((f"data.{key}", getattr(self.data, key), known, what, True))
            checks += [(f"stage {s.name} {key}", getattr(s, key), known, what, True) for s in self.stages
                       if getattr(s, key) is not None]
        checks += [(f"stage {s.name} loss_weights", s.loss_weights, TASKS, "tasks", False)
                   for s in self.stages if s.loss_weights]
        for where, weights, known, what, need_positive in checks:
            bad = {t: w for t, w in weights.items()
                   if t not in known or not isinstance(w, (int, float)) or w < 0}
            if bad:
                raise UserError(f"{where}: {bad} is not valid; keys are {what} "
                                f"({', '.join(known)}), values weights >= 0")
            if need_positive and weights and not any(w > 0 for w in weights.values()):
                raise UserError(f"{where} needs at least one positive weight")
        if not 0.0 <= self.data.exists_near_miss <= 1.0:
            raise UserError(f"data.exists_near_miss is a probability, got {self.data.exists_near_miss}")
        if self.data.vqa_per_row > 1 and self.model.prompt_first:
            raise UserError("data.vqa_per_row > 1 needs the image before the questions; "
                            "set model.prompt_first=false")

    def stage_starts(self) -> list[int]:
        """First optimizer step of each stage."""
        starts, start = [], 0
        for s in self.stages:
            starts.append(start)
            start += round(s.fraction * self.steps)
        return starts

    def stage_at(self, step: int) -> tuple[int, StageConfig, int]:
        """(stage index, stage, first step of that stage) for optimizer step `step` (the last stage
        holds any step past the planned ones; a stage rounded to no steps is never returned)."""
        starts = self.stage_starts()
        i = max(j for j, start in enumerate(starts) if start <= step)
        return i, self.stages[i], starts[i]

    def lr_segments(self) -> list[tuple[int, int, float]]:
        """(first step, end step, peak lr) of each stretch the schedule warms up and decays over:
        the whole run, cut at every stage with a `restart_lr`."""
        cuts = [(0, self.optim.lr)]
        for start, s in zip(self.stage_starts(), self.stages):
            if s.restart_lr is not None:
                if start == 0:
                    cuts[0] = (0, s.restart_lr)
                elif start < self.steps:
                    cuts.append((start, s.restart_lr))
        ends = [c[0] for c in cuts[1:]] + [self.steps]
        return [(first, end, peak) for (first, peak), end in zip(cuts, ends)]

    def image_stage_start(self) -> int:
        """First step of the first stage that trains image tasks (stage B for UGen)."""
        for start, s in zip(self.stage_starts(), self.stages):
            if any(w > 0 and t != "text" for t, w in s.weights.items()):
                return start
        return self.steps
