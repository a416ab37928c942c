"""Errors a user can act on. The message says what is wrong and what to do about it."""


class UserError(Exception):
    """A bad input, a missing file, an unknown preset: anything the user can fix.

    The command line prints these without a traceback.
    """


class CheckpointError(UserError):
    """A checkpoint folder that is missing, incomplete or corrupt."""
