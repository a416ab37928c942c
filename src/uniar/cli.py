"""The `uniar` command: discovers the subcommands in `uniar.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import uniar.commands
from uniar.utils.threads import apply_env_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uniar",
        description="Unified autoregressive multimodal models: UGen (discrete) and UniFluid (continuous).",
    )
    parser.add_argument("--version", action="version", version=f"uniar {uniar.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(uniar.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"uniar.commands.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # No network at run time: pretrained models come from local folders only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    apply_env_threads()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except UserError as err:  # an error the user can fix: say what and how, no traceback
        print(f"uniar {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


from uniar.errors import UserError  # noqa: E402  (kept at the bottom to avoid an import cycle)

if __name__ == "__main__":
    sys.exit(main())
