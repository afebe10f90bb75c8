"""Errors a user can hit. The CLI prints their message (no traceback) and exits with status 2.

Every message says what was expected, what was found, and what to do.
"""

from __future__ import annotations


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
