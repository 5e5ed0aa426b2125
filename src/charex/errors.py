"""Errors charex raises for bad input; the CLI turns them into exit code 2."""

from __future__ import annotations


class CharexError(ValueError):
    """Bad input, a model that does not fit, or a corrupt file. The message names the problem."""


class FingerprintFileError(CharexError):
    """A fingerprint file is missing, truncated, corrupt or was modified after it was written."""


class ModelLoadError(CharexError):
    """A model cannot be loaded safely or does not behave as its card says."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if the message is empty), for error text."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
