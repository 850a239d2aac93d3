"""Exceptions with messages meant for people: one sentence saying what is wrong and what to do.

Every layer raises these instead of letting a traceback from deep inside torch,
SimpleITK or nibabel reach a user; the CLI prints ``str(error)`` and the
napari widget shows it as a notification.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "FusionCancelled",
    "InputError",
    "InputWarning",
    "PrecisionWarning",
    "PromptError",
    "ResultError",
    "Terminated",
    "UPFusionError",
    "WeightsNotFoundError",
]


class UPFusionError(Exception):
    """Base class of every error that napari-upfusion raises on purpose."""


class CheckpointError(UPFusionError):
    """A weights file cannot be read, is unsafe, or does not fit the network.

    ``missing`` and ``unexpected`` list the offending state-dict keys by name.
    """

    def __init__(self, message: str, missing: list[str] | None = None, unexpected: list[str] | None = None) -> None:
        super().__init__(message)
        self.missing = list(missing or [])
        self.unexpected = list(unexpected or [])


class WeightsNotFoundError(UPFusionError):
    """Weights that are never downloaded silently (the authors' checkpoint, CLIP) are absent."""


class PromptError(UPFusionError):
    """A text prompt cannot be turned into a code for the chosen model."""


class InputError(UPFusionError, ValueError):
    """An input image, volume, layer or file is unusable as given."""


class FusionCancelled(UPFusionError):
    """The user cancelled a fusion; nothing was returned or written."""


class ResultError(UPFusionError):
    """A fuser produced something that is not an image in ``[0, 1]`` (NaN, infinite or out-of-range values)."""


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM, or SIGHUP when its terminal went away): unwinds like Ctrl-C, so that
    every clean-up runs.

    A subclass of :class:`KeyboardInterrupt` so that whatever cleans up after Ctrl-C (staging
    folders, a batch report marked interrupted, worker threads joined) does the same here; the
    command line exits with 128 + :attr:`signal` for it (143 for SIGTERM, 129 for SIGHUP) and 130 for Ctrl-C.
    """

    def __init__(self, signal: int = 15) -> None:
        super().__init__(signal)
        #: The number of the signal that asked (15 is SIGTERM).
        self.signal = signal


class InputWarning(UserWarning):
    """An input was usable but not as given: one sentence saying what was seen and what was done about it
    (a DICOM series with a missing slice resampled onto a regular grid, inputs that overlap only in part)."""


class PrecisionWarning(UserWarning):
    """A reduced precision was asked for that the model's weights were not checked at on that device."""
