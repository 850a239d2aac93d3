"""What the widget's buttons do: the three layer steps around a thread worker, cancellation and progress.

:class:`FusionController` calls :func:`~napari_upfusion.plugin.layers.prepare_layers`
(GUI thread), :func:`~napari_upfusion.plugin.layers.run_fusion` (or
:func:`~napari_upfusion.plugin.layers.run_preview`) in a napari thread worker, so
the viewer stays responsive, and :func:`~napari_upfusion.plugin.layers.add_fused_layer`
(or :func:`~napari_upfusion.plugin.layers.show_preview`) back on the GUI thread: the
same steps as :func:`napari_upfusion.fuse_layers`.  Cancel sets the
``threading.Event`` the engine watches between batches; the engine then raises
:class:`~napari_upfusion.errors.FusionCancelled` and nothing is added.  Every
:class:`~napari_upfusion.errors.UPFusionError` is shown as a napari error
notification with its one-sentence message, and the widget is ready for the next run.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, Qt, Signal

from ...errors import FusionCancelled, InputError, UPFusionError
from ..layers import (
    PreparedPair,
    add_fused_layer,
    current_slice,
    prepare_layers,
    remove_preview,
    run_fusion,
    run_preview,
    show_preview,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Image

    from .controls import FusionControls

__all__ = ["FusionController"]

_log = logging.getLogger(__name__)

_CANCELLED = "Fusion was cancelled; no layer was added."


class _ProgressRelay(QObject):
    """Carries ``(done, total)`` from the worker thread to the GUI thread."""

    progressed = Signal(int, int)


def _fuse_outcome(
    pair: PreparedPair, options: dict[str, Any], relay: _ProgressRelay, cancel: threading.Event, index: int | None = None
):
    """Worker-thread body: the fusion result (of slice ``index`` only, for a preview), or why there is none.

    Never raises, so napari shows no traceback.
    """
    try:
        if index is not None:
            return "done", run_preview(pair, index, **options)
        return "done", run_fusion(pair, progress=relay.progressed.emit, cancel=cancel, **options)
    except FusionCancelled:
        return "cancelled", _CANCELLED
    except UPFusionError as error:
        return "error", str(error)
    except Exception as error:  # noqa: BLE001 - a bug, not bad input: one sentence in the viewer, traceback in the log
        _log.exception("UP-Fusion failed")
        return "error", f"Fusion failed unexpectedly ({type(error).__name__}: {error}); please report this."


class FusionController:
    """Runs what ``controls`` are set to on ``viewer``'s layers: Run, Preview slice and Cancel.

    ``running`` tells whether a fusion is under way, ``cancel_event`` is the event the running
    fusion watches, and ``last_layer`` is the layer the last successful run added.
    """

    def __init__(self, viewer: napari.viewer.Viewer, controls: FusionControls) -> None:
        self.viewer, self.controls = viewer, controls
        self.cancel_event = threading.Event()
        self.last_layer: Image | None = None
        self._worker = None
        self._pair: PreparedPair | None = None
        self._previewing = False
        self._relay = _ProgressRelay()
        self._relay.progressed.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)
        controls.preview_button.changed.connect(self.preview)
        controls.run_button.changed.connect(self.run)
        controls.cancel_button.changed.connect(self.cancel)
        # the dock was closed: stop a run (it adds nothing)
        controls.native.destroyed.connect(lambda *_: self.cancel_event.set())

    @property
    def running(self) -> bool:
        """Whether a fusion is under way."""
        return self._worker is not None

    def run(self, value: Any = None) -> None:
        """Start fusing the chosen layers in a worker thread (what the Run button does)."""
        self._start(preview=False)

    def preview(self, value: Any = None) -> None:
        """Fuse only the slice the viewer shows now into the preview layer (what Preview slice does)."""
        self._start(preview=True)

    def cancel(self, value: Any = None) -> None:
        """Ask the running fusion to stop at the next batch; nothing will be added."""
        if self.running:
            self.cancel_event.set()
            self.controls.cancel_button.enabled = False
            self.controls.status.value = "Cancelling..."

    def _start(self, preview: bool) -> None:
        from napari.qt.threading import create_worker

        if self.running:
            return
        controls = self.controls
        try:
            a, b = controls.layers
            if a is None or b is None:
                raise InputError("Add two Image layers first (File > Open Sample > UP-Fusion has examples).")
            pair = prepare_layers(self.viewer, a, b, controls.modalities)
            options = controls.options()
            index = current_slice(self.viewer, a, options["axis"]) if preview else None
        except UPFusionError as error:
            self._report_error(str(error))
            return
        self._pair, self._previewing = pair, preview
        self.cancel_event = threading.Event()
        controls.progress.max, controls.progress.value = 1, 0
        what = f"slice {index} of {pair.a_name} and {pair.b_name}" if preview else f"{pair.a_name} and {pair.b_name}"
        controls.status.value = f"Fusing {what}..."
        self._set_running(True)
        worker = create_worker(_fuse_outcome, pair, options, self._relay, self.cancel_event, index, _start_thread=False)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def _set_running(self, running: bool) -> None:
        self.controls.run_button.enabled = not running
        self.controls.preview_button.enabled = not running
        self.controls.cancel_button.enabled = running

    def _on_progress(self, done: int, total: int) -> None:
        self.controls.progress.max = max(1, total)
        self.controls.progress.value = done

    def _report_error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.controls.status.value = message
        show_error(message)

    def _on_returned(self, outcome: tuple[str, Any]) -> None:
        from napari.utils.notifications import show_info

        status, payload = outcome
        controls = self.controls
        if status == "done" and self.cancel_event.is_set():  # Cancel came after the last check: still honour it
            status, payload = "cancelled", _CANCELLED
        if status == "done" and self._pair is not None and self._previewing:
            layer = show_preview(self.viewer, self._pair, payload)
            info = payload.info
            controls.progress.value = controls.progress.max
            controls.status.value = (
                f"Preview of slice {info.get('slice', 0)} (axis {info['axis']}) in {layer.name!r} "
                f"({info['model']}, {info['seconds']:.1f} s); Run fuses the whole volume."
            )
        elif status == "done" and self._pair is not None:
            remove_preview(self.viewer)  # the volume replaces the one-slice preview
            layer = add_fused_layer(self.viewer, self._pair, payload)
            self.last_layer = layer
            info = payload.info
            controls.status.value = f"Added {layer.name!r} ({info['model']}, {info['device']}, {info['seconds']:.1f} s)."
        elif status == "cancelled":
            controls.progress.value = 0
            controls.status.value = payload
            show_info(payload)
        else:
            controls.progress.value = 0
            self._report_error(payload)

    def _on_finished(self) -> None:
        self._worker = None
        self._pair = None
        self._set_running(False)
