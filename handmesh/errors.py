"""Errors a user can hit. The CLI prints their message (`message`, no traceback) and exits with status 2.

Every message says what was expected, what was found, and what to do.
"""

from __future__ import annotations

import re

# torch re-raises an exception from a DataLoader worker as `type(error)(text)`, text = "Caught DataError in DataLoader
# worker process 1.\nOriginal Traceback (most recent call last):\n...\nhandmesh.errors.DataError: <message>\n"
_WORKER_RERAISE = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class HandmeshError(Exception):
    """Base class for user-facing errors: bad input, missing files, wrong formats."""


class ManoFileError(HandmeshError):
    """A MANO model file is missing, truncated, foreign, unsafe, or for the wrong hand."""


class DataError(HandmeshError):
    """A dataset folder, annotation file or image is missing or malformed."""


class CheckpointError(HandmeshError):
    """A checkpoint is missing, corrupt, or from another model."""


class PredictionFileError(HandmeshError):
    """A prediction file (pred.json) is malformed or on the wrong scale."""


def message(error: BaseException) -> str:
    """What to print for `error`: its message; for one a DataLoader worker raised, the worker's own message rather
    than torch's wrapper around it (the worker's traceback)."""
    text = str(error)
    if not _WORKER_RERAISE.match(text):
        return text
    kind = type(error)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):  # as `traceback` names the class
        name = f"{kind.__module__}.{name}"
    _, found, original = text.rpartition(f"\n{name}: ")  # the last exception of the traceback is the one re-raised
    return original.strip() if found else text
