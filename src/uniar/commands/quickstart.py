"""`uniar quickstart`: the main job on the embedded default, end to end, in minutes on a CPU.

1. ShapesWorld: a labelled preview grid and a small export.
2. The two image tokenizers (VQ for UGen, KL for UniFluid), trained briefly, with reconstruction
   scores read back by the scene parser.
3. `ugen-tiny` trained on the task mixture for the remaining budget, then evaluated on `test`:
   what it drew, read and answered.
Everything lands in OUT (default quickstart_out/) with a report.md that links the pictures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart", help="generate data, train tokenizers and ugen-tiny briefly, write a report",
        description="The main job on the embedded default (ShapesWorld): about 15 minutes on 2 CPU cores.")
    p.add_argument("--out", default="quickstart_out")
    p.add_argument("--minutes", type=float, default=11.0, help="total training budget in minutes (default 11)")
    p.add_argument("--eval-n", type=int, default=100, help="test examples per task")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from uniar.data.images import to_model, to_numpy_hwc, to_uint8
    from uniar.data.shapesworld import get_example
    from uniar.data.shapesworld.parser import parse_images
    from uniar.data.shapesworld.render import render_batch
    from uniar.eval.scores import recon_scores
    from uniar.tokenizers.image import load_image_tokenizer
    from uniar.tokenizers.train_image import train_image_tokenizer
    from uniar.utils.grid import image_grid
    from uniar.utils.io import save_image, write_json, write_text

    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = args.minutes
    summary: dict = {"budget_minutes": budget, "seed": args.seed}
    md = ["# uniar quickstart", "",
          f"Budget {budget:g} training minutes on this machine, seed {args.seed}. "
          "Every number below was produced by this run.", ""]

    # 1. data
    print("[1/3] ShapesWorld preview")
    shown = [get_example("train", i) for i in range(16)]
    save_image(out / "shapesworld_preview.png",
               image_grid(render_batch([e.scene for e in shown], 64), [e.caption for e in shown], cols=8))
    md += ["## 1. ShapesWorld", "", "![preview](shapesworld_preview.png)", ""]

    # 2. tokenizers
    n_recon = 200
    examples = [get_example("test", i) for i in range(n_recon)]
    originals = render_batch([e.scene for e in examples], 64)
    md += ["## 2. Image tokenizers", "", "| tokenizer | minutes | recon_exact | psnr |", "|---|---|---|---|"]
    tok_minutes = {"vq": 0.22 * budget, "kl": 0.17 * budget}
    for kind, minutes in tok_minutes.items():
        print(f"[2/3] training the {kind} tokenizer for {minutes:.1f} min")
        folder = out / "tokenizers" / kind
        train_image_tokenizer(kind, None, folder, minutes=minutes, seed=args.seed)
        tok = load_image_tokenizer(folder).eval()
        import torch

        with torch.no_grad():
            recon = to_numpy_hwc(to_uint8(tok.decode(tok.encode(to_model(originals)))))
        scores = recon_scores([e.scene for e in examples], parse_images(recon), originals, recon)
        summary[f"tokenizer_{kind}"] = {"minutes": minutes, **scores}
        tiles = np.stack([x for pair in zip(originals[:16], recon[:16]) for x in pair])
        save_image(out / f"recon_{kind}.png", image_grid(tiles, ["original", kind] * 16, cols=8))
        md.append(f"| {kind} ([grid](recon_{kind}.png)) | {minutes:.1f} | {scores['recon_exact']:.3f} | "
                  f"{scores['psnr']:.2f} |")
    md.append("")

    # 3. ugen-tiny
    from uniar.config import load_config
    from uniar.configs import resolve
    from uniar.eval.evaluate import evaluate
    from uniar.sample.decode import SamplingConfig
    from uniar.sample.pipeline import Pipeline
    from uniar.train.config import TrainConfig
    from uniar.train.loop import Trainer, steps_for_budget

    ugen_minutes = budget - sum(tok_minutes.values())
    cfg = load_config(TrainConfig, resolve("ugen-tiny"), [
        f"model.image_tokenizer={out / 'tokenizers' / 'vq'}", f"out_dir={out / 'ugen-tiny'}",
        f"seed={args.seed}", "eval.every=0", "checkpoint_every=0", "data.pool_size=20000"])
    cfg.steps = steps_for_budget(cfg, ugen_minutes)
    cfg.optim.warmup_steps = min(cfg.optim.warmup_steps, cfg.steps // 10)
    print(f"[3/3] training ugen-tiny for {cfg.steps} steps (~{ugen_minutes:.1f} min)")
    t = time.time()
    trainer = Trainer(cfg)
    trainer.run()
    train_s = time.time() - t
    pipe = Pipeline.from_checkpoint(out / "ugen-tiny" / "checkpoints" / "final")
    sampling = SamplingConfig(image_temperature=1.0, image_top_k=16, cfg_scale=2.0, seed=args.seed)
    report = evaluate(pipe, "test", n=args.eval_n, sampling=sampling, out_dir=out / "ugen-tiny" / "eval",
                      checkpoint=str(out / "ugen-tiny" / "checkpoints" / "final"), fid=False)
    summary["ugen_tiny"] = {"steps": cfg.steps, "train_seconds": train_s, **report}
    m = report["metrics"]
    md += ["## 3. ugen-tiny", "",
           f"{cfg.steps} steps in {train_s / 60:.1f} min ([loss curves](ugen-tiny/metrics.png)). "
           f"Evaluated on {args.eval_n} `test` examples per task with `{sampling.describe()}`.", "",
           "| metric | value |", "|---|---|"]
    md += [f"| {k} | {v:.3f} |" for k, v in m.items() if isinstance(v, float)]
    md += ["", "What it drew (prompt under each image):", "", "![t2i](ugen-tiny/eval/t2i_test.png)", "",
           "What it read (its caption under each image):", "", "![captions](ugen-tiny/eval/caption_test.png)", "",
           "What it edited (source, target, model):", "", "![edits](ugen-tiny/eval/edit_test.png)", ""]
    qs = [(e, q) for e in [get_example("test", i) for i in range(4)] for q in e.questions[:2]]
    answers = pipe.vqa(render_batch([e.scene for e, _ in qs], 64), [q.question for _, q in qs])
    md += ["What it answered:", "", "| question | answer | truth |", "|---|---|---|"]
    md += [f"| {q.question} | {a} | {q.answer} |" for (_, q), a in zip(qs, answers)]
    summary["wall_seconds"] = time.time() - t_start
    md += ["", f"Total wall time: {summary['wall_seconds'] / 60:.1f} min."]
    write_json(out / "report.json", summary)
    write_text(out / "report.md", "\n".join(md) + "\n")
    print(f"done in {summary['wall_seconds'] / 60:.1f} min: {out / 'report.md'}")
    return 0
