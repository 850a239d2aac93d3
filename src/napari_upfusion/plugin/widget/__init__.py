"""The "UP-Fusion" dock widget: pick two Image layers, their modalities, a prompt and a model, and Run.

A thin front end (see ``docs/architecture.md``) in two parts: the controls
(:mod:`.controls`, magicgui widgets and napari's own layer choosers) and the
controller (:mod:`.controller`), which runs the same three steps as
:func:`napari_upfusion.fuse_layers` in a thread worker.

Open it from Plugins > UP-Fusion, or from Python::

    dock, widget = viewer.window.add_plugin_dock_widget("napari-upfusion", "UP-Fusion")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..gl_guard import protect_from_late_triton

protect_from_late_triton()  # napari imports this module after drawing its canvas; torch follows (see gl_guard)

from ..layers import unwrap
from .controller import FusionController
from .controls import CHECKPOINT, CUSTOM_PROMPT, FusionControls, prompt_mode

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Image

__all__ = ["CHECKPOINT", "CUSTOM_PROMPT", "UPFusionWidget", "prompt_mode"]


class UPFusionWidget(FusionControls):
    """Dock widget that fuses two Image layers of ``napari_viewer`` into a new layer.

    Parameters
    ----------
    napari_viewer
        The viewer whose Image layers are offered (Labels, Points and other layer types are not).

    Notes
    -----
    The controls are reachable by name (``widget["model"]``, ``widget["prompt"]``,
    ``widget["prompt_text"]``, ``widget["layer_a"]``, ``widget["run_button"]``,
    ``widget["preview_button"]``, ``widget["progress"]``, ``widget["status"]``...; see
    :class:`~.controls.FusionControls`).  ``run()`` is what the Run button calls,
    ``preview()`` what Preview slice calls (the slice the viewer shows, into the layer
    :data:`~napari_upfusion.plugin.layers.PREVIEW_NAME`, which Run replaces) and ``cancel()``
    what Cancel calls; ``running`` tells whether a fusion is under way and ``last_layer`` is
    the layer the last successful run added; ``controller`` does the running.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        # napari hands plugins a proxy; the controller needs the viewer itself (layers compare by identity)
        self.controller = FusionController(unwrap(napari_viewer), self)

    @property
    def running(self) -> bool:
        """Whether a fusion is under way."""
        return self.controller.running

    @property
    def last_layer(self) -> Image | None:
        """The layer the last successful run added."""
        return self.controller.last_layer

    def run(self, value: Any = None) -> None:
        """Start fusing the chosen layers in a worker thread (what the Run button does)."""
        self.controller.run()

    def preview(self, value: Any = None) -> None:
        """Fuse only the slice the viewer shows now into the preview layer (what Preview slice does)."""
        self.controller.preview()

    def cancel(self, value: Any = None) -> None:
        """Ask the running fusion to stop at the next batch; nothing will be added."""
        self.controller.cancel()
