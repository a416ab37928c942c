"""One training loop for both model families.

AdamW with warm-up + cosine, gradient clipping and accumulation, bf16 autocast, a task mixture per
stage, per-task losses, periodic evaluation on ShapesWorld `val`, a progress bar, metrics written as
they come (metrics.csv, eval.jsonl) and plotted at the end, atomic checkpoints that resume exactly.
Data parallelism (DDP / FSDP2) is applied from outside the model (uniar.train.distributed).
"""

from __future__ import annotations

import csv
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from uniar.config import to_dict
from uniar.data.image_pool import build_pool
from uniar.data.sequence import collate
from uniar.data.tasks import TaskSampler
from uniar.errors import UserError
from uniar.models.build import build_model, build_text_tokenizer, load_image_tokenizer, make_builder
from uniar.train import checkpoint as ckpt
from uniar.train.config import TrainConfig
from uniar.train.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, unwrap, wrap_model
from uniar.train.progressive_vocab import ProgressiveVocab
from uniar.utils.io import write_json
from uniar.utils.precision import compiler_available, use_bf16, use_compile


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine from 1 down to `min_lr_ratio` at the last step; a stage with a
    `restart_lr` starts the same shape again from its own peak (relative to optim.lr)."""
    o = cfg.optim
    first, end, peak = next(seg for seg in reversed(cfg.lr_segments()) if seg[0] <= step)
    local, length = step - first, end - first
    # a restarted stretch shorter than two warm-ups still decays (the run's first stretch is as set)
    warmup = o.warmup_steps if first == 0 else min(o.warmup_steps, max(1, length // 2))
    scale = peak / o.lr
    if local < warmup:
        return scale * (local + 1) / warmup
    progress = (local - warmup) / max(1, length - warmup)
    return scale * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; matrices decay, norms, biases and embeddings-free vectors do not."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for the whole update (memory traffic, not FLOPs, bounds the step on CPU)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2), fused=True)


class Trainer:
    """Holds a run's pieces; `run()` trains from `start_step` (0, or the resumed checkpoint's)."""

    def __init__(self, cfg: TrainConfig, resume: str | None = None, progress: bool = True,
                 parallel: str = "none", dist_info: DistInfo | None = None):
        cfg.validate()
        self.cfg = cfg
        self.info = dist_info or init_distributed()
        self.progress = progress and self.info.is_main
        self.out = Path(cfg.out_dir)
        torch.manual_seed(cfg.seed)

        self.text_tok = build_text_tokenizer(cfg.model.text_tokenizer)
        self.image_tok = load_image_tokenizer(cfg.model.image_tokenizer).eval()
        if self.image_tok.image_size != cfg.data.image_size:
            raise UserError(f"data.image_size is {cfg.data.image_size} but the image tokenizer "
                            f"{cfg.model.image_tokenizer} works on {self.image_tok.image_size} px images: "
                            f"set data.image_size={self.image_tok.image_size} or use a tokenizer trained "
                            f"at {cfg.data.image_size} px")
        self.model = build_model(cfg.model, self.text_tok, self.image_tok)
        if cfg.init_from and not resume:
            self._init_from(cfg.init_from)
        self.builder = make_builder(self.model, cfg.model, self.text_tok, self.image_tok)
        self.sampler = self._task_sampler()

        n_visual = self.model.vocab.n_visual
        stage_b_steps = cfg.steps - cfg.image_stage_start()
        self.progressive = None
        if n_visual and cfg.progressive_vocab.enabled:
            self.progressive = ProgressiveVocab(cfg.progressive_vocab, n_visual, max(1, stage_b_steps))

        self.model.to(self.info.device)
        self.bf16 = use_bf16(cfg.optim.bf16, self.info.device)
        if cfg.optim.bf16 == "auto" and not self.bf16 and self.info.is_main:
            print(f"optim.bf16=auto: no fast bf16 on {self.info.device.type} here (a CPU needs avx512_bf16 "
                  "or amx_bf16), training in fp32", flush=True)
        if cfg.optim.compile is True and not compiler_available(self.info.device):
            raise UserError("optim.compile=true, but torch.compile cannot build kernels here (on a CPU it "
                            "needs a C++ compiler: install g++ or set $CXX); set optim.compile=false")
        self.compiled = use_compile(cfg.optim.compile, self.info.device)
        if self.compiled:
            if parallel == "fsdp":
                raise UserError("optim.compile is not supported with --parallel fsdp yet; set optim.compile=false")
            self.model.compile_training()
        self.wrapped = wrap_model(self.model, parallel, self.info)
        self.optimizer = make_optimizer(self.wrapped, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.start_step = 0
        if resume:
            self._resume(resume)

    # ---- data ----------------------------------------------------------------------------------

    def _task_sampler(self) -> TaskSampler:
        cfg = self.cfg
        tasks = {t for s in cfg.stages for t, w in s.weights.items() if w > 0}
        pool = None
        if tasks - {"text"}:
            pool = build_pool(self.image_tok, "train", cfg.data.pool_size, cfg.data.image_size,
                              cfg.data.max_objects, progress=self.progress)
        text_ids = None
        if "text" in tasks:
            from uniar.data.corpus import corpus_documents, token_stream

            # documents separated by <eos> (no <bos>: each window starts <bos> <text> itself)
            text_ids = token_stream(self.text_tok, corpus_documents("train"), add_bos=False)
        return TaskSampler(cfg.data, self.builder, pool, text_ids,
                           und_pixels=getattr(self.model, "reads_pixels", False))

    def micro_batches(self, step: int):
        """This rank's micro-batches of optimizer step `step`.

        The global batch is a pure function of (seed, step); ranks take rows rank, rank+world, ...
        and split them into `grad_accum` micro-batches (by stride, or by length with
        optim.group_by_length), so any (world, grad_accum) partition of the same global batch trains
        identically.
        """
        cfg, info = self.cfg, self.info
        _, stage, _ = cfg.stage_at(step)
        seqs = self.sampler.batch(stage.weights, cfg.optim.batch_size, cfg.seed, step,
                                  vqa_type_weights=stage.vqa_type_weights,
                                  edit_type_weights=stage.edit_type_weights)
        mine = seqs[info.rank::info.world]
        accum = cfg.optim.grad_accum
        if len(mine) < accum:
            raise UserError(f"batch of {cfg.optim.batch_size} rows cannot feed {info.world} ranks x "
                            f"{accum} micro-batches")
        if cfg.optim.group_by_length:
            mine = sorted(mine, key=len)  # stable: rows of equal length keep their order
            size = -(-len(mine) // accum)
            chunks = [mine[i:i + size] for i in range(0, len(mine), size)]
        else:
            chunks = [mine[i::accum] for i in range(accum)]
        batches = [collate(c, pad_id=self.text_tok.pad_id, side="right") for c in chunks]
        if stage.loss_weights:
            for b in batches:
                b.row_weight = torch.tensor([float(stage.loss_weights.get(t, 1.0)) for t in b.tasks])
        return [b.to(info.device) for b in batches]

    # ---- one optimizer step ------------------------------------------------------------------------

    def train_step(self, step: int) -> dict:
        cfg, model = self.cfg, unwrap(self.wrapped)
        if self.progressive is not None:
            self.progressive.set_step(step - cfg.image_stage_start())
        index, stage, start = cfg.stage_at(step)
        if stage.reset_moments and step == start and index > 0:
            self.optimizer.state.clear()  # AdamW re-creates each parameter's state at its next step
        batches = self.micro_batches(step)
        # global target counts per loss component, so that the mean is over the whole global batch
        names = list(model.loss_weights())
        local = [sum(model.target_counts(b, self.progressive)[n] for b in batches) for n in names]
        counts = dict(zip(names, all_reduce_sum([float(c) for c in local], self.info)))
        weights = model.loss_weights()

        self.wrapped.train()
        stats: dict = {"task_sum": {}, "task_count": {}, "extra": {}}
        comp_sums = {n: 0.0 for n in names}
        autocast = torch.autocast(self.info.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        for i, batch in enumerate(batches):
            sync = nullcontext()
            if hasattr(self.wrapped, "no_sync") and i < len(batches) - 1:
                sync = self.wrapped.no_sync()
            with sync:
                with autocast:
                    parts = self._loss(batch)
                loss = sum(weights[n] * parts.components[n] / max(counts[n], 1.0) for n in names
                           if n in parts.components)
                (loss * self.info.world).backward()
            for n in names:
                if n in parts.components:
                    comp_sums[n] += float(parts.components[n].detach())
            for k, v in parts.per_task_sum.items():
                stats["task_sum"][k] = stats["task_sum"].get(k, 0.0) + v
                stats["task_count"][k] = stats["task_count"].get(k, 0) + parts.per_task_count[k]
            stats["extra"].update(parts.extra)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

        # losses averaged over the global batch (all ranks)
        keys = sorted(stats["task_sum"])
        totals = all_reduce_sum([comp_sums[n] for n in names]
                                + [stats["task_sum"][k] for k in keys]
                                + [float(stats["task_count"][k]) for k in keys], self.info)
        comp = {n: totals[i] / max(counts[n], 1.0) for i, n in enumerate(names)}
        row = {"step": step + 1, "lr": self.scheduler.get_last_lr()[0],
               "loss": sum(weights[n] * comp[n] for n in names), "grad_norm": float(grad_norm)}
        if len(names) > 1:
            row.update({f"loss_{n}": v for n, v in comp.items()})
        for j, k in enumerate(keys):
            c = totals[len(names) + len(keys) + j]
            row[f"loss_{k}"] = totals[len(names) + j] / c if c else float("nan")
        row.update(stats["extra"])
        row["tokens"] = sum(int(b.mask.sum()) for b in batches) * self.info.world
        return row

    def _loss(self, batch):
        # through the wrapper's forward (= model.loss), so DDP/FSDP hooks fire
        return self.wrapped(batch, self.progressive)

    # ---- the run -----------------------------------------------------------------------------------

    def run(self, evaluate_fn=None) -> dict:
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", to_dict(cfg))
        logger = MetricsLogger(self.out / "metrics.csv", enabled=info.is_main, append=self.start_step > 0)
        if info.is_main and self.start_step == 0:
            (self.out / "eval.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh curve
        bar = tqdm(total=cfg.steps, initial=self.start_step, desc=f"train {self.out.name}",
                   disable=not self.progress, unit="step", dynamic_ncols=True)
        t0, tokens, last = time.time(), 0, None
        self.paused_s = 0.0  # evaluation and checkpoint time, kept out of elapsed_s and tokens/s
        for step in range(self.start_step, cfg.steps):
            row = self.train_step(step)
            tokens += row.pop("tokens")
            row["elapsed_s"] = round(time.time() - t0 - self.paused_s, 2)
            row["tokens_per_s"] = round(tokens / max(row["elapsed_s"], 1e-9), 1)
            last = row
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                logger.write(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}")
            bar.update(1)
            if not math.isfinite(row["loss"]):
                raise UserError(f"loss became {row['loss']} at step {step + 1}; lower optim.lr or check the data")
            pause = time.time()
            if cfg.eval.every and cfg.eval.n > 0 and (step + 1) % cfg.eval.every == 0 and step + 1 < cfg.steps and evaluate_fn:
                self._evaluate(evaluate_fn, step + 1, cfg.eval.n)
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                self.save(self.out / "checkpoints" / f"step_{step + 1}", step + 1)
            self.paused_s += time.time() - pause
        bar.close()
        self.save(self.out / "checkpoints" / "final", cfg.steps)
        result = {"last": last}
        if evaluate_fn and cfg.eval.final_n > 0:
            result["eval"] = self._evaluate(evaluate_fn, cfg.steps, cfg.eval.final_n)
        if info.is_main:
            plot_metrics(self.out)
        return result

    def _evaluate(self, evaluate_fn, step: int, n: int) -> dict | None:
        if not self.info.is_main:
            return None
        metrics = evaluate_fn(self, n)
        with open(self.out / "eval.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        return metrics

    # ---- checkpoints ---------------------------------------------------------------------------

    def state_dicts(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(self.wrapped, self.optimizer, options=opts)

    def save(self, folder: Path, step: int) -> None:
        model_sd, optim_sd = self.state_dicts()
        if self.info.is_main:
            model_sd = {k.removeprefix("module."): v for k, v in model_sd.items()}
            state = {"step": step, "scheduler": self.scheduler.state_dict(), "rng": ckpt.rng_state(),
                     "progressive_vocab": self.progressive.state_dict() if self.progressive else None}
            backbone = self.model.backbone
            hf_config = backbone.hf_config_dict() if hasattr(backbone, "hf_config_dict") else None
            ckpt.save_checkpoint(folder, cfg=self.cfg, model_state=model_sd, text_tok=self.text_tok,
                                 image_tok=self.image_tok, vocab=self.model.vocab,
                                 optim_state={"state": {k.removeprefix("module."): v for k, v in optim_sd["state"].items()},
                                              "param_groups": optim_sd["param_groups"]},
                                 training_state=state, backbone_hf_config=hf_config)
        barrier(self.info)

    def _init_from(self, folder: str) -> None:
        """Start from another run's weights; its vocabulary must be this model's."""
        from uniar.utils.io import load_safetensors, read_json

        ckpt.check_checkpoint(folder)
        theirs = read_json(Path(folder) / "vocab.json")
        if theirs != self.model.vocab.to_dict():
            raise UserError(f"init_from={folder}: its vocabulary ({theirs.get('text_size')} text + "
                            f"{theirs.get('n_visual')} visual ids) is not this model's "
                            f"({self.model.vocab.text_size} + {self.model.vocab.n_visual}); use the same "
                            "text and image tokenizers as that run")
        try:
            self.model.load_state_dict(load_safetensors(Path(folder) / "model.safetensors"))
        except RuntimeError as err:
            raise UserError(f"init_from={folder}: its weights do not fit this model config ({err}); "
                            "use the same model settings as that run") from err

    def _resume(self, folder: str) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        ckpt.check_checkpoint(folder)
        state, optim_sd = ckpt.load_training_state(folder)
        from uniar.utils.io import load_safetensors

        model_sd = load_safetensors(Path(folder) / "model.safetensors")
        prefix = "module." if self.wrapped is not self.model and hasattr(self.wrapped, "module") else ""
        model_sd = {prefix + k: v for k, v in model_sd.items()}
        if optim_sd is not None:
            optim_sd["state"] = {prefix + k: v for k, v in optim_sd["state"].items()}
            for g in optim_sd["param_groups"]:
                g["params"] = [prefix + p for p in g["params"]]
        set_state_dict(self.wrapped, self.optimizer, model_state_dict=model_sd,
                       optim_state_dict=optim_sd,
                       options=StateDictOptions(full_state_dict=True, strict=True))
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        if self.progressive is not None and state.get("progressive_vocab"):
            self.progressive.load_state_dict(state["progressive_vocab"])
        self.start_step = int(state["step"])


class MetricsLogger:
    """Appends rows to a CSV file as they come; new columns rewrite the header once."""

    def __init__(self, path: Path, enabled: bool = True, append: bool = False):
        self.path, self.enabled = Path(path), enabled
        self.rows: list[dict] = []
        if enabled and append and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                self.rows = list(csv.DictReader(f))
        self.columns: list[str] = list(self.rows[0].keys()) if self.rows else []

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        mode = "a"
        if new or not self.path.is_file():
            self.columns += new
            mode = "w"
        with open(self.path, mode, newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if mode == "w":
                w.writeheader()
                w.writerows(self.rows)
            else:
                w.writerow(row)


def read_metrics(out_dir: Path) -> list[dict]:
    path = Path(out_dir) / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def plot_metrics(out_dir: Path) -> Path | None:
    """Plot total and per-task losses (and eval scores, if any) to OUT/metrics.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(out_dir)
    if not rows:
        return None
    steps = np.array([float(r["step"]) for r in rows])
    loss_keys = [k for k in rows[0] if k.startswith("loss")]
    evals = []
    if (Path(out_dir) / "eval.jsonl").is_file():
        evals = [json.loads(line) for line in open(Path(out_dir) / "eval.jsonl", encoding="utf-8")]
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(12 if evals else 7, 4), squeeze=False)
    ax = axes[0, 0]
    for k in loss_keys:
        ys = np.array([float(r[k]) if r.get(k) not in (None, "", "nan") else np.nan for r in rows])
        ax.plot(steps, ys, label=k, lw=1.5 if k == "loss" else 1)
    ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.set_yscale("log"), ax.legend(fontsize=7)
    ax.set_title("training loss")
    if evals:
        ax = axes[0, 1]
        keys = [k for k in evals[-1] if k != "step" and isinstance(evals[-1][k], (int, float))
                and not k.endswith("_n") and not k.startswith("text_ppl")]
        for k in keys:
            ax.plot([e["step"] for e in evals], [e.get(k, np.nan) for e in evals], marker="o", label=k)
        ax.set_xlabel("step"), ax.set_ylim(0, 1.05), ax.legend(fontsize=7), ax.set_title("val scores")
    fig.tight_layout()
    from uniar.utils.io import atomic_path

    path = Path(out_dir) / "metrics.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def steps_for_budget(cfg: TrainConfig, minutes: float, probe_steps: int = 8) -> int:
    """How many optimizer steps of `cfg` fit in `minutes` on this machine.

    Times a few steps of each stage on a throwaway copy of the run (same model, data and batch),
    then fills the budget stage by stage. The result is fixed before training starts, so the
    learning-rate schedule and the curriculum are planned for the real length of the run.
    """
    import copy

    probe_cfg = copy.deepcopy(cfg)
    probe_cfg.out_dir = str(Path(cfg.out_dir) / ".probe")
    trainer = Trainer(probe_cfg, progress=False)
    per_step = []
    start = 0
    for stage in cfg.stages:
        length = max(1, round(stage.fraction * cfg.steps))
        trainer.train_step(start)  # warm-up (allocations, first-call costs)
        t = time.time()
        # steps spread over the stage: batches differ in task mix and sequence lengths, and a
        # progressive run trains more targets (logits rows) as its visual ids become active
        for i in range(probe_steps):
            trainer.train_step(start + 1 + (i * max(1, length - 1)) // probe_steps)
        per_step.append((time.time() - t) / probe_steps)
        start += length
    mean = sum(s.fraction * t for s, t in zip(cfg.stages, per_step))
    return max(10, int(minutes * 60 / mean))
