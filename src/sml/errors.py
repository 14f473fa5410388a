"""User-facing errors: the CLI prints their message as one paragraph and exits non-zero."""
from __future__ import annotations


class SMLError(Exception):
    """An error caused by input or settings, with a message that names the problem and the fix."""


class InputError(SMLError, ValueError):
    """Bad input data or arguments (wrong shape, NaN logits, unreadable file, invalid setting)."""


class DataError(InputError):
    """A data set on disk does not match the layout its loader expects."""


class CheckpointError(SMLError):
    """A checkpoint cannot be loaded safely or does not fit the architecture."""


class OutputError(SMLError):
    """An output file or folder cannot be written (read-only, no space, a file where a folder should be...)."""
