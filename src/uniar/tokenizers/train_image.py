"""Training of the built-in image tokenizers (VQ and KL) on ShapesWorld `train` images.

One function serves both: `train_image_tokenizer(kind, cfg, out_dir, minutes=..., steps=...)`.

- Data: `train` examples 0, 1, 2, ... rendered on the fly, `batch_size` per step, never repeated
  within a run (rendering costs ~0.2 ms an image, a small fraction of a step).
- Loss: L1 (or MSE) on pixels + `edge_weight` x L1 on horizontal and vertical pixel differences
  (keeps shape edges, and so small crosses, crisp; no perceptual nets: no weights to download)
  + the model's own term (VQ commitment, or the KL).
- Optimiser: AdamW, linear warm-up, cosine decay to `min_lr_ratio`, gradient clipping, bf16
  autocast on CPU.
- Budget: `steps`, or `minutes` of wall time, or both (whichever ends first). Under a time budget
  the step time is measured over the first `timing_steps` steps to plan the number of steps, and
  schedule progress is max(step / planned steps, elapsed / budget), so the cosine reaches its end
  exactly when the run does even if the shared machine slows down.
- Output folder: the tokenizer (`config.json`, `model.safetensors`; saved every
  `checkpoint_minutes` and at the end), `train_log.csv` (losses, codebook use, perplexity, PSNR)
  and `training.json` (config, seed, steps, time, final scores). All written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from uniar.data.images import to_model, to_uint8
from uniar.errors import UserError
from uniar.tokenizers.image import ImageTokenizer
from uniar.tokenizers.kl import KLConfig, KLTokenizer
from uniar.tokenizers.vq import VQConfig, VQTokenizer, perplexity
from uniar.utils.io import write_json, write_text
from uniar.utils.precision import use_bf16

KINDS = ("vq", "kl")


@dataclass
class TrainSettings:
    # Measured on ShapesWorld (5-min runs): lr 2e-3 left the net stuck on the all-black image for
    # hundreds of steps, 1e-3 learned, 5e-4 a little better; MSE pulls the sparse objects out of the
    # black background much faster than L1 (whose per-pixel optimum is the black median).
    batch_size: int = 16
    lr: float = 5e-4
    min_lr_ratio: float = 0.02  # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    grad_clip: float = 1.0
    bf16: bool | Literal["auto"] = "auto"  # bf16 autocast; auto = where the device does bf16 fast (utils/precision.py)
    recon_loss: Literal["l1", "mse"] = "mse"
    # extra weight on object pixels: objects cover ~10% of an image, and small ones carry the
    # details (a cross's arms, a colour) that the scene parser reads
    fg_weight: float = 0.0
    edge_weight: float = 1.0
    eval_every: int = 500  # steps between evaluations on `val` images
    eval_images: int = 256
    log_every: int = 10
    checkpoint_minutes: float = 5.0
    timing_steps: int = 20  # steps measured to plan a time budget (after 3 warm-up steps)
    stats_images: int = 2048  # KL: `train` images used to measure the latent normalisation
    threads: int = 0  # torch CPU threads for the run; 0 keeps torch's setting
    # VQ: fraction of the run trained as a plain autoencoder before quantising: the encoder learns
    # the images without the churn of early code assignments, then seeds the codebook (87% exact
    # with 0.3 vs 76% without, 5-min runs)
    vq_warmup: float = 0.3
    codebook_init_images: int = 256  # VQ: images whose encodings seed the codebook (k-means++)


@dataclass
class VQTrainConfig:
    model: VQConfig = field(default_factory=VQConfig)
    train: TrainSettings = field(default_factory=TrainSettings)


@dataclass
class KLTrainConfig:
    model: KLConfig = field(default_factory=KLConfig)
    train: TrainSettings = field(default_factory=TrainSettings)


def default_config(kind: str) -> VQTrainConfig | KLTrainConfig:
    check_kind(kind)
    return VQTrainConfig() if kind == "vq" else KLTrainConfig()


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UserError(f"unknown image tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")


def build_tokenizer(kind: str, model_cfg) -> ImageTokenizer:
    check_kind(kind)
    return VQTokenizer(model_cfg) if kind == "vq" else KLTokenizer(model_cfg)


# ---- pieces ------------------------------------------------------------------------------------

def train_batch(start: int, n: int, size: int) -> torch.Tensor:
    """`train` examples start .. start+n-1 as model input (B, 3, size, size) in [-1, 1]."""
    from uniar.data.shapesworld import images

    return to_model(images("train", start, n, size))


def edge_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and vertical pixel differences of two image batches."""
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    return 0.5 * (F.l1_loss(dx(recon), dx(target)) + F.l1_loss(dy(recon), dy(target)))


def learning_rate(s: TrainSettings, step: int, progress: float) -> float:
    """Linear warm-up over `warmup_steps`, times a cosine from 1 to `min_lr_ratio` over progress 0..1."""
    warm = min(1.0, (step + 1) / max(1, s.warmup_steps))
    cosine = s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return s.lr * warm * cosine


@torch.no_grad()
def reconstruct(tokenizer: ImageTokenizer, images_uint8: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """Reconstructions of uint8 (n, S, S, 3) images, uint8 (n, S, S, 3)."""
    out = []
    for i in range(0, len(images_uint8), batch_size):
        recon = tokenizer.reconstruct(to_model(images_uint8[i:i + batch_size]))
        out.append(to_uint8(recon).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def code_usage(tokenizer: ImageTokenizer, images_uint8: np.ndarray, batch_size: int = 250) -> dict:
    """Discrete tokenizers: distinct codes used over a set of images, and the codebook perplexity."""
    counts = torch.zeros(tokenizer.codebook_size, dtype=torch.long)
    for i in range(0, len(images_uint8), batch_size):
        ids = tokenizer.encode(to_model(images_uint8[i:i + batch_size])).reshape(-1).cpu()
        counts += torch.bincount(ids, minlength=tokenizer.codebook_size)
    return {"codes_used": int((counts > 0).sum()), "perplexity": perplexity(counts)}


def evaluate(tokenizer: ImageTokenizer, images_uint8: np.ndarray) -> dict:
    """PSNR of reconstructions; for a VQ also codes used and codebook perplexity over the set."""
    from uniar.eval.scores import psnr

    was_training = tokenizer.training
    tokenizer.eval()
    out = {"psnr": psnr(images_uint8, reconstruct(tokenizer, images_uint8))}
    if tokenizer.kind == "discrete":
        out.update(code_usage(tokenizer, images_uint8))
    tokenizer.train(was_training)
    return out


class CsvLog:
    """Rows kept in memory and written out whole (atomically) on `flush`."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        if not self.rows:
            return
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        write_text(self.path, buf.getvalue())


class Budget:
    """Schedule progress under a step budget, a time budget, or both.

    Under a time budget the number of steps is planned from the step time measured over
    `timing_steps` steps, and re-planned every `timing_steps` steps from the step time since
    the last plan (only upwards, so a machine that speeds up does not end the run early; if it
    slows down, elapsed time takes over). Progress is max(step / planned, elapsed / budget) and
    never goes backwards.
    """

    WARMUP = 3  # the first steps include one-off costs (allocation, kernel selection)

    def __init__(self, steps: int | None, minutes: float | None, timing_steps: int):
        if steps is None and minutes is None:
            raise UserError("give a training budget: steps, minutes, or both")
        if steps is not None and steps < 1:
            raise UserError(f"steps must be >= 1, got {steps}")
        if minutes is not None and minutes <= 0:
            raise UserError(f"minutes must be > 0, got {minutes}")
        self.steps = steps
        self.seconds = None if minutes is None else 60.0 * minutes
        self.timing_steps = max(1, timing_steps)
        self.planned = steps  # under a time budget: set once the step time is known
        self.start = time.perf_counter()
        self._mark: tuple[int, float] | None = None  # (steps done, time) when timing last started
        self._progress = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def observe(self, step: int) -> None:
        """Call after each step `step` (0-based): plans the number of steps from the step time."""
        done, now = step + 1, time.perf_counter()
        if self.seconds is None or done < self.WARMUP:
            return
        if done == self.WARMUP:
            self._mark = (done, now)
            return
        timed = done - self._mark[0]
        if timed < self.timing_steps:
            return
        per_step = (now - self._mark[1]) / timed
        planned = done + int(max(0.0, self.seconds - self.elapsed()) / per_step)
        if self.steps is not None:
            planned = min(planned, self.steps)
        self.planned = max(planned, self.planned or 0)
        self._mark = (done, now)

    def progress(self, step: int) -> float:
        """Fraction of the run done after `step` steps (0..1)."""
        p = step / self.planned if self.planned else 0.0
        if self.seconds is not None:
            p = max(p, self.elapsed() / self.seconds)
        self._progress = max(self._progress, min(1.0, p))
        return self._progress


# ---- the training function ------------------------------------------------------------------

def train_image_tokenizer(
    kind: str,
    cfg: VQTrainConfig | KLTrainConfig | None = None,
    out_dir: str | Path = "runs/tokenizer",
    minutes: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> dict:
    """Train a built-in image tokenizer and save it to `out_dir`. Returns a summary dict
    (steps, seconds, images seen, last validation scores, config) with the model under "tokenizer".

    kind: "vq" or "kl". cfg: a VQTrainConfig / KLTrainConfig (defaults if None). The run ends
    after `steps` steps or `minutes` of wall time, whichever comes first (at least one is needed).
    `seed` sets the weight initialisation, the KL noise and the codebook's random choices; the
    data is always `train` examples 0, 1, 2, ...
    """
    check_kind(kind)
    cfg = cfg if cfg is not None else default_config(kind)
    expected = VQTrainConfig if kind == "vq" else KLTrainConfig
    if not isinstance(cfg, expected):
        raise UserError(f"a {kind} tokenizer needs a {expected.__name__}, got {type(cfg).__name__}")
    s = cfg.train
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    budget = Budget(steps, minutes, s.timing_steps)
    if s.threads > 0:
        torch.set_num_threads(s.threads)
    torch.manual_seed(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    model = build_tokenizer(kind, cfg.model).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=tuple(s.betas), weight_decay=s.weight_decay)
    size = cfg.model.image_size
    val_images = _val_images(s.eval_images, size)
    log = CsvLog(out_dir / "train_log.csv")
    info = {"kind": kind, "seed": seed, "minutes": minutes, "steps_budget": steps, "config": asdict(cfg)}

    bar = tqdm(total=budget.planned or 0, desc=f"train {kind} tokenizer", unit="step", disable=not progress)
    last_checkpoint = time.perf_counter()
    step, last_eval = 0, {}
    while budget.progress(step) < 1.0:
        lr = learning_rate(s, step, budget.progress(step))
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = train_batch(step * s.batch_size, s.batch_size, size).to(device)
        quantize = kind == "vq" and budget.progress(step) >= s.vq_warmup
        if quantize and not bool(model.quantizer.initialised):
            # the images of the next batches, so the codebook starts where the data is
            init = train_batch(step * s.batch_size, s.codebook_init_images, size).to(device)
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=use_bf16(s.bf16, images.device)):
                model.initialise_codebook(init, generator)
        row = train_step(model, optimizer, images, s, generator, quantize)
        budget.observe(step)
        step += 1

        bar.total = budget.planned or bar.total
        bar.update(1)
        done = budget.progress(step) >= 1.0
        row = {"step": step, "elapsed_s": round(budget.elapsed(), 2), "lr": lr, **row}
        if step % s.eval_every == 0 or done:
            last_eval = evaluate(model, val_images)
            log.add({**row, **{f"val_{k}": v for k, v in last_eval.items()}})
            log.flush()
        elif step % s.log_every == 0 or step == 1:
            log.add(row)
            if step % (10 * s.log_every) == 0:
                log.flush()
            bar.set_postfix(_postfix(row, last_eval))
        if not done and time.perf_counter() - last_checkpoint > 60 * s.checkpoint_minutes:
            _checkpoint(model, kind, s, out_dir, {**info, "steps": step, "seconds": budget.elapsed(), "final": False})
            last_checkpoint = time.perf_counter()
    bar.close()
    summary = {**info, "steps": step, "seconds": round(budget.elapsed(), 1), "images_seen": step * s.batch_size,
               "planned_steps": budget.planned, "final": True, **{f"val_{k}": v for k, v in last_eval.items()}}
    _checkpoint(model, kind, s, out_dir, summary)
    model.eval()
    return {**summary, "tokenizer": model}


def reconstruction_loss(recon: torch.Tensor, images: torch.Tensor, s: TrainSettings) -> tuple:
    """(pixel loss, edge loss) of float reconstructions against the images.

    With `fg_weight`, pixels brighter than the black background weigh 1 + fg_weight times more.
    """
    err = (recon - images).abs() if s.recon_loss == "l1" else (recon - images).pow(2)
    if s.fg_weight:
        weight = 1.0 + s.fg_weight * (images.amax(dim=1, keepdim=True) > -0.9).float()
        pixel = (weight * err).mean() / weight.mean()
    else:
        pixel = err.mean()
    return pixel, edge_loss(recon, images)


def train_step(model, optimizer, images: torch.Tensor, s: TrainSettings, generator: torch.Generator,
               quantize: bool) -> dict:
    """One optimiser step (and the codebook's update for a VQ); returns the numbers to log."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=use_bf16(s.bf16, images.device)):
        out = model(images, quantize=quantize) if model.kind == "discrete" else model(images, generator=generator)
    pixel, edge = reconstruction_loss(out["recon"].float(), images, s)
    loss = pixel + s.edge_weight * edge + out["aux_loss"]
    if not torch.isfinite(loss):
        raise UserError(
            f"training diverged (loss {loss.item()}); lower train.lr (now {s.lr}) or train.grad_clip "
            f"(now {s.grad_clip})"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
    optimizer.step()
    row = {"loss": loss.item(), "recon": pixel.item(), "edge": edge.item(), "grad_norm": float(grad_norm)}
    row.update({k: out[k].item() for k in ("commit", "kl", "posterior_std") if k in out})
    if model.kind == "discrete":
        row.update(model.after_step(out, generator))
    return row


def _val_images(n: int, size: int) -> np.ndarray:
    from uniar.data.shapesworld import images

    return images("val", 0, n, size)


def _postfix(row: dict, last_eval: dict) -> dict:
    post = {"loss": f"{row['loss']:.4f}"}
    if "codes_used" in row:
        post["codes"] = row["codes_used"]
    if "psnr" in last_eval:
        post["val_psnr"] = f"{last_eval['psnr']:.1f}"
    return post


def _checkpoint(model: ImageTokenizer, kind: str, s: TrainSettings, out_dir: Path, info: dict) -> None:
    """Save the tokenizer (with fresh latent statistics for a KL) and the run's description."""
    if kind == "kl":
        was_training = model.training
        model.eval()
        chunk = 256
        model.fit_normalization(
            train_batch(i, min(chunk, s.stats_images - i), model.image_size).to(model.device)
            for i in range(0, s.stats_images, chunk)
        )
        model.train(was_training)
    model.save(out_dir)
    write_json(out_dir / "training.json", {k: v for k, v in info.items() if k != "tokenizer"})
