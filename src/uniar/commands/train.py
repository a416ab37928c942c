"""`uniar train`: train a model from a preset or YAML config, with key=value overrides."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a UGen/UniFluid model",
        description="Train a model. Example: uniar train --config ugen-tiny steps=2000 "
                    "model.image_tokenizer=runs/tokenizers/vq. Run under torchrun for DDP/FSDP2.",
    )
    p.add_argument("--config", required=True, help="preset name (e.g. ugen-tiny) or a YAML file")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. optim.lr=3e-4")
    p.add_argument("--resume", default=None, help="checkpoint folder to resume from")
    p.add_argument("--parallel", choices=("none", "ddp", "fsdp"), default="none",
                   help="data parallelism when launched with torchrun")
    p.add_argument("--no-eval", action="store_true", help="skip the periodic and final evaluation")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from uniar.config import load_config
    from uniar.configs import resolve
    from uniar.train.config import TrainConfig
    from uniar.train.evaluation import periodic_eval
    from uniar.train.loop import Trainer

    cfg = load_config(TrainConfig, resolve(args.config), args.overrides)
    trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress, parallel=args.parallel)
    result = trainer.run(evaluate_fn=None if args.no_eval else periodic_eval)
    if trainer.info.is_main:
        print(f"checkpoint: {cfg.out_dir}/checkpoints/final")
        if result.get("eval"):
            for k, v in result["eval"].items():
                print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    return 0
