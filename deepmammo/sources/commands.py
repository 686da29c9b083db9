"""Subcommands of this stage for the `deepmammo` command (see deepmammo/cli.py)."""


def register(subparsers):
    """Add this stage's subcommands to the `deepmammo` parser."""
