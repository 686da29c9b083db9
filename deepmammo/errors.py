"""The error a command raises for a mistake of its user's: every layer may raise it (the engine's
tools included), and `deepmammo` (cli.py) prints it in one line with exit status 2."""


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""
