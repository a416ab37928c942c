"""`uniar quickstart`: the main job on the embedded default, end to end, in minutes on a CPU.

1. ShapesWorld: a labelled preview grid.
2. The two image tokenizers (VQ for UGen, KL for UniFluid), trained briefly, with reconstruction
   scores read back by the scene parser.
3. Each model (`ugen-tiny`, `unifluid-tiny` by default) trained on the task mixture for its share of
   the budget, on the tokenizer trained in step 2, then evaluated on `test`: what it drew, read,
   edited and answered.
Everything lands in OUT (default quickstart_out/) with a report.md that links the pictures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

MODELS = {"ugen-tiny": "vq", "unifluid-tiny": "kl"}  # preset -> the tokenizer it is trained on
# shares of the training budget: the tokenizers first, the rest split evenly between the models
TOKENIZER_SHARE = {"vq": 0.15, "kl": 0.12}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart", help="generate data, train tokenizers, ugen-tiny and unifluid-tiny briefly, write a report",
        description="The main job on the embedded default (ShapesWorld): about 30 minutes on 2 CPU cores "
                    "with both models (--models ugen-tiny: about 15).")
    p.add_argument("--out", default="quickstart_out")
    p.add_argument("--minutes", type=float, default=None,
                   help="total training budget in minutes, tokenizers included (default: 11 per model)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS),
                   help="which tiny models to train (default: both)")
    p.add_argument("--eval-n", type=int, default=100, help="test examples per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool-size", type=int, default=20000, help="training images encoded for the models")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from uniar.utils.io import write_json, write_text

    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = args.minutes if args.minutes is not None else 11.0 * len(args.models)
    summary: dict = {"budget_minutes": budget, "seed": args.seed, "models": args.models}
    md = ["# uniar quickstart", "",
          f"Budget {budget:g} training minutes on this machine, seed {args.seed}. "
          "Every number below was produced by this run.", ""]
    n_steps = 2 + len(args.models)
    md += preview(out, f"[1/{n_steps}]")
    tok_minutes = {kind: share * budget for kind, share in TOKENIZER_SHARE.items()}
    md += tokenizers(out, tok_minutes, args.seed, summary, f"[2/{n_steps}]", image_sizes())
    model_minutes = (budget - sum(tok_minutes.values())) / len(args.models)
    for i, preset in enumerate(args.models):
        md += model_section(out, preset, model_minutes, args, summary, f"[{3 + i}/{n_steps}]", section=3 + i)
    summary["wall_seconds"] = time.time() - t_start
    md += ["", f"Total wall time: {summary['wall_seconds'] / 60:.1f} min."]
    write_json(out / "report.json", summary)
    write_text(out / "report.md", "\n".join(md) + "\n")
    print(f"done in {summary['wall_seconds'] / 60:.1f} min: {out / 'report.md'}")
    return 0


def preview(out: Path, tag: str) -> list[str]:
    from uniar.data.shapesworld import get_example
    from uniar.data.shapesworld.render import render_batch
    from uniar.utils.grid import image_grid
    from uniar.utils.io import save_image

    print(f"{tag} ShapesWorld preview")
    shown = [get_example("train", i) for i in range(16)]
    save_image(out / "shapesworld_preview.png",
               image_grid(render_batch([e.scene for e in shown], 64), [e.caption for e in shown], cols=8))
    return ["## 1. ShapesWorld", "", "![preview](shapesworld_preview.png)", ""]


def image_sizes() -> dict[str, int]:
    """Each tokenizer kind trains at the image size of the preset that uses it (data.image_size)."""
    from uniar.config import load_config
    from uniar.configs import resolve
    from uniar.train.config import TrainConfig

    return {kind: load_config(TrainConfig, resolve(preset), []).data.image_size for preset, kind in MODELS.items()}


def tokenizers(out: Path, tok_minutes: dict, seed: int, summary: dict, tag: str, sizes: dict[str, int]) -> list[str]:
    import numpy as np
    import torch

    from uniar.data.images import to_model, to_numpy_hwc, to_uint8
    from uniar.data.shapesworld import get_example
    from uniar.data.shapesworld.parser import parse_images
    from uniar.data.shapesworld.render import render_batch
    from uniar.eval.scores import recon_scores
    from uniar.tokenizers.image import load_image_tokenizer
    from uniar.tokenizers.train_image import default_config, train_image_tokenizer
    from uniar.utils.grid import image_grid
    from uniar.utils.io import save_image

    examples = [get_example("test", i) for i in range(200)]
    md = ["## 2. Image tokenizers", "", "| tokenizer | image size | minutes | recon_exact | psnr |",
          "|---|---|---|---|---|"]
    for kind, minutes in tok_minutes.items():
        print(f"{tag} training the {kind} tokenizer at {sizes[kind]} px for {minutes:.1f} min")
        folder = out / "tokenizers" / kind
        cfg = default_config(kind)
        cfg.model.image_size = sizes[kind]
        train_image_tokenizer(kind, cfg, folder, minutes=minutes, seed=seed)
        originals = render_batch([e.scene for e in examples], sizes[kind])
        tok = load_image_tokenizer(folder).eval()
        with torch.no_grad():
            recon = to_numpy_hwc(to_uint8(tok.decode(tok.encode(to_model(originals)))))
        scores = recon_scores([e.scene for e in examples], parse_images(recon), originals, recon)
        summary[f"tokenizer_{kind}"] = {"minutes": minutes, **scores}
        tiles = np.stack([x for pair in zip(originals[:16], recon[:16]) for x in pair])
        save_image(out / f"recon_{kind}.png", image_grid(tiles, ["original", kind] * 16, cols=8))
        md.append(f"| {kind} ([grid](recon_{kind}.png)) | {sizes[kind]} | {minutes:.1f} | {scores['recon_exact']:.3f} | "
                  f"{scores['psnr']:.2f} |")
    return md + [""]


def model_section(out: Path, preset: str, minutes: float, args, summary: dict, tag: str, section: int) -> list[str]:
    from uniar.config import load_config
    from uniar.configs import resolve
    from uniar.data.shapesworld import get_example
    from uniar.data.shapesworld.render import render_batch
    from uniar.eval.evaluate import evaluate
    from uniar.sample.decode import SamplingConfig
    from uniar.sample.pipeline import Pipeline
    from uniar.train.config import TrainConfig
    from uniar.train.loop import Trainer, steps_for_budget

    run_dir = out / preset
    cfg = load_config(TrainConfig, resolve(preset), [
        f"model.image_tokenizer={out / 'tokenizers' / MODELS[preset]}", f"out_dir={run_dir}",
        f"seed={args.seed}", "eval.every=0", "checkpoint_every=0", f"data.pool_size={args.pool_size}"])
    if minutes < 2:  # compiling takes 15-40 s here: it pays back over minutes of training, not seconds
        cfg.optim.compile = False
    cfg.steps = steps_for_budget(cfg, minutes)
    cfg.optim.warmup_steps = min(cfg.optim.warmup_steps, cfg.steps // 10)
    print(f"{tag} training {preset} for {cfg.steps} steps (~{minutes:.1f} min)")
    t = time.time()
    Trainer(cfg).run()
    train_s = time.time() - t
    ckpt = run_dir / "checkpoints" / "final"
    pipe = Pipeline.from_checkpoint(ckpt)
    # discrete images: top-k sampling; continuous ones: the diffusion head at temperature 1
    sampling = SamplingConfig(image_temperature=1.0, image_top_k=16 if MODELS[preset] == "vq" else 0,
                              cfg_scale=2.0, seed=args.seed)
    report = evaluate(pipe, "test", n=args.eval_n, sampling=sampling, out_dir=run_dir / "eval",
                      checkpoint=str(ckpt), fid=False)
    summary[preset] = {"steps": cfg.steps, "train_seconds": train_s, **report}
    m = report["metrics"]
    md = [f"## {section}. {preset}", "",
          f"{cfg.steps} steps in {train_s / 60:.1f} min ([loss curves]({preset}/metrics.png)). "
          f"Evaluated on {args.eval_n} `test` examples per task with `{sampling.describe()}`.", "",
          "| metric | value |", "|---|---|"]
    md += [f"| {k} | {v:.3f} |" for k, v in m.items() if isinstance(v, float)]
    md += ["", "What it drew (prompt under each image):", "", f"![t2i]({preset}/eval/t2i_test.png)", "",
           "What it read (its caption under each image):", "", f"![captions]({preset}/eval/caption_test.png)", "",
           "What it edited (source, target, model):", "", f"![edits]({preset}/eval/edit_test.png)", ""]
    qs = [(e, q) for e in [get_example("test", i) for i in range(4)] for q in e.questions[:2]]
    answers = pipe.vqa(render_batch([e.scene for e, _ in qs], pipe.image_size), [q.question for _, q in qs])
    md += ["What it answered:", "", "| question | answer | truth |", "|---|---|---|"]
    md += [f"| {q.question} | {a} | {q.answer} |" for (_, q), a in zip(qs, answers)]
    return md + [""]
