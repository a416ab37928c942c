"""`uniar train-tokenizer vq|kl --out DIR`: train a built-in image tokenizer on ShapesWorld."""

from __future__ import annotations

import argparse

EPILOG = """\
overrides are key=value pairs on the config (see uniar/tokenizers/train_image.py, vq.py, kl.py), e.g.
  uniar train-tokenizer vq --out runs/tokenizers/vq --minutes 15 model.codebook_size=1024 train.lr=1e-3
  uniar train-tokenizer kl --out runs/tokenizers/kl --steps 2000 model.latent_channels=16 model.normalize=global
The folder receives the tokenizer (config.json, model.safetensors), train_log.csv and training.json;
load it with uniar.tokenizers.image.load_image_tokenizer(DIR).
"""


class _IntermixedParser(argparse.ArgumentParser):
    """Lets key=value overrides come after the options too (plain argparse takes the positionals
    in one run, so `vq --out D lr=1` would leave `lr=1` unrecognised)."""

    _busy = False

    def parse_known_args(self, args=None, namespace=None):
        if self._busy:  # the intermixed parse calls back here for its own passes
            return super().parse_known_args(args, namespace)
        self._busy = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._busy = False


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-tokenizer",
        help="train a built-in image tokenizer (vq or kl) on ShapesWorld",
        description="Train a built-in image tokenizer (VQ: discrete ids; KL: continuous latents) on "
                    "ShapesWorld train images rendered on the fly, and save it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.__class__ = _IntermixedParser  # add_parser builds the top parser's class; only the parsing differs
    p.add_argument("kind", choices=["vq", "kl"], help="vq (discrete, UGen) or kl (continuous, UniFluid)")
    p.add_argument("--out", required=True, help="output folder for the tokenizer and its training log")
    p.add_argument("--minutes", type=float, default=None, help="wall-time budget (the LR schedule is planned for it)")
    p.add_argument("--steps", type=int, default=None, help="step budget (with --minutes: whichever ends first)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and of every random choice")
    p.add_argument("--config", default=None, help="optional YAML file with `model:` and `train:` sections")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=1e-3")
    p.set_defaults(func=run)


def run(args) -> int:
    from uniar.config import apply_overrides, from_dict, load_yaml
    from uniar.errors import UserError
    from uniar.tokenizers.train_image import default_config, train_image_tokenizer

    cfg = default_config(args.kind)
    if args.config:
        cfg = from_dict(type(cfg), load_yaml(args.config))
    cfg = apply_overrides(cfg, args.overrides)
    if args.minutes is None and args.steps is None:
        raise UserError("give a budget: --minutes M and/or --steps N")
    summary = train_image_tokenizer(args.kind, cfg, args.out, minutes=args.minutes, steps=args.steps,
                                     seed=args.seed, progress=not args.no_progress)
    scores = ", ".join(f"{k} {v:.4g}" for k, v in summary.items() if k.startswith("val_"))
    print(f"saved {args.kind} tokenizer to {args.out}: {summary['steps']} steps "
          f"in {summary['seconds']:.0f} s; {scores}")
    return 0
