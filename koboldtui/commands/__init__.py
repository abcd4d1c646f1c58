"""CLI subcommands, one module per area; each exposes ``register(subparsers)``.

A command's handler takes the parsed ``argparse.Namespace`` and returns an exit code.
"""
