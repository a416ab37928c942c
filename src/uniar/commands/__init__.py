"""Subcommands of the `uniar` command line.

Each module here defines `register(subparsers)`, which adds one or more subcommands and sets
`func` on their parser to a callable taking the parsed `argparse.Namespace`. `uniar.cli`
discovers the modules, so adding a command never touches a shared file. Keep imports of heavy
libraries (torch, transformers) inside the handler functions so `uniar --help` stays fast.
"""
