"""One exception type per kind of user mistake, each carrying a hint.

The CLI catches `AdvisorError` once and prints `error: <message>` plus the hint on one line each,
exit code 2. Anything else is a bug and shows a traceback only with `--debug`.
"""
from __future__ import annotations


class AdvisorError(Exception):
    """Base of all user-facing errors: a message and an optional hint how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class ModelLoadError(AdvisorError):
    """The model file is missing, unreadable, of an unknown format, or refused (untrusted pickle)."""


class InputShapeError(AdvisorError):
    """No input shape is known, or the model rejects the given one."""


class TargetError(AdvisorError):
    """A target profile is unknown or malformed, or the host cannot run it."""


class DataError(AdvisorError):
    """Evaluation/training data is missing, malformed, or inconsistent with the model."""


class PlanError(AdvisorError):
    """A plan file is malformed, of an unknown version, or names a pass not in the registry."""


class FactorError(AdvisorError):
    """Decision factors (--max-drop, --goal, --retrain, ...) are invalid or inconsistent."""


class PassError(AdvisorError):
    """A technique could not be applied to this model (reported per candidate, analysis goes on)."""


class OutputError(AdvisorError):
    """An output path is unusable (a file, read-only, locked by another run) or would replace
    one of the run's inputs."""


class CacheError(AdvisorError):
    """The trial cache cannot do what was asked (`--resume` with nothing to resume, ...)."""
