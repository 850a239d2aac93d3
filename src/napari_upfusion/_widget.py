"""The "UP-Fusion" dock widget: pick two Image layers, their modalities, a prompt and a model, and Run.

A thin front end (see ``design.md``): it only gathers choices and calls
:func:`~napari_upfusion._layers.prepare_layers` (GUI thread),
:func:`~napari_upfusion._layers.run_fusion` (a napari thread worker, so the viewer
stays responsive) and :func:`~napari_upfusion._layers.add_fused_layer` (GUI thread
again), the same three steps as :func:`napari_upfusion.fuse_layers`.  Cancel sets the
``threading.Event`` the engine watches between batches; the engine then raises
:class:`~napari_upfusion.errors.FusionCancelled` and nothing is added.  Every
:class:`~napari_upfusion.errors.UPFusionError` is shown as a napari error notification
with its one-sentence message, and the widget is ready for the next Run.

Open it from Plugins > UP-Fusion, or from Python::

    dock, widget = viewer.window.add_plugin_dock_widget("napari-upfusion", "UP-Fusion")
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._gl_guard import protect_from_late_triton

protect_from_late_triton()  # napari imports this module after drawing its canvas; torch follows (see _gl_guard)

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, TextEdit
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import QSizePolicy

from ._layers import (
    PREVIEW_NAME,
    PreparedPair,
    add_fused_layer,
    current_slice,
    prepare_layers,
    remove_preview,
    run_fusion,
    run_preview,
    show_preview,
    unwrap,
)
from .engine.color import COLORMAPS
from .engine.registry import available_fusers
from .errors import FusionCancelled, InputError, UPFusionError
from .model.factory import get_config
from .model.text import AUTHORS_PROMPT, DEFAULT_PROMPTS, MODALITIES, default_prompt

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Image

__all__ = ["CHECKPOINT", "CUSTOM_PROMPT", "UPFusionWidget", "prompt_mode"]

_log = logging.getLogger(__name__)

#: The model entry that asks for a checkpoint file instead of a registered fuser.
CHECKPOINT = "checkpoint file..."
#: The prompt entry meaning "the text typed below".
CUSTOM_PROMPT = "custom text (edit below)"
_NO_PROMPT = "(this fuser reads no prompt)"
_NO_COLORMAP = "none"
#: Modalities offered first for input A (anatomical / visible); the others suit input B.
_MODALITIES_A = ("MRI", "VIS")

_PROMPT_HELP = {
    "table": (
        "The {model!r} model knows only its built-in prompts, one per modality pair: the prompt tells it which "
        "pair it is fusing and so which features of each image to keep. Free text is not understood."
    ),
    "free": (
        "The released weights were trained with the authors' prompt alone, the default here. Any other prompt "
        "(a modality pair's, or your own text) gives the network a channel order it never saw in training: an "
        "experiment, recorded as such in the result's metadata. A new prompt needs CLIP ViT-B/32 weights "
        "(`upfusion download clip`) unless its code is cached."
    ),
    "none": "The {model!r} fuser is a classical method and does not read a prompt.",
}


def prompt_mode(model: str) -> tuple[str, tuple[str, ...]]:
    """How a model choice takes its prompt: ``("table", prompts)``, ``("free", ())`` or ``("none", ())``.

    ``table``: only the listed built-in prompts (the bundled ``small`` model);
    ``free``: any text through CLIP (``paper``, checkpoint files); ``none``: no prompt
    (classical fusers).  Read from the fuser registry, so nothing is built.

    Parameters
    ----------
    model
        A name from :func:`~napari_upfusion.engine.registry.available_fusers` or :data:`CHECKPOINT`.

    Returns
    -------
    tuple
    """
    info = available_fusers().get(model)
    if model == CHECKPOINT or info is None:
        return "free", ()
    if info.prompt == "table":
        return "table", tuple(get_config(info.config).prompts)
    return info.prompt, ()


def _prompt_label(prompt: str, mode: str = "table") -> str:
    """The prompt menu's name for ``prompt``; for a CLIP model (``mode="free"``) it says which one was trained."""
    if mode == "free":
        if prompt == AUTHORS_PROMPT:
            return "authors' prompt (trained)"
        return _prompt_label(prompt) + " (untrained: experiment)"
    for key, text in DEFAULT_PROMPTS.items():
        if text == prompt:
            return {"authors": "authors' generic prompt", "generic": "generic"}.get(key, key)
    return prompt[:40] + ("..." if len(prompt) > 40 else "")


def _note(name: str) -> Label:
    """A wrapped, unlabelled line of explanation under the control it explains."""
    label = Label(name=name, value="")
    label.native.setWordWrap(True)
    # magicgui fixes a Label's size; a wrapped note must be free to take the width and the lines it needs
    label.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    return label


class _ProgressRelay(QObject):
    """Carries ``(done, total)`` from the worker thread to the GUI thread."""

    progressed = Signal(int, int)


_CANCELLED = "Fusion was cancelled; no layer was added."


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


class UPFusionWidget(Container):
    """Dock widget that fuses two Image layers of ``napari_viewer`` into a new layer.

    Parameters
    ----------
    napari_viewer
        The viewer whose Image layers are offered (Labels, Points and other layer types are not).

    Notes
    -----
    ``run()`` is what the Run button calls, ``preview()`` what Preview slice calls (the slice the
    viewer shows, into the layer :data:`~napari_upfusion._layers.PREVIEW_NAME`, which Run replaces)
    and ``cancel()`` what Cancel calls; ``running`` tells whether a fusion is under way and
    ``last_layer`` is the layer the last successful run added.  The controls are reachable by name
    (``widget["model"]``, ``widget["prompt"]``, ``widget["prompt_text"]``, ``widget["layer_a"]``,
    ``widget["run_button"]``, ``widget["preview_button"]``, ``widget["progress"]``, ``widget["status"]``...).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = unwrap(napari_viewer)  # napari hands plugins a proxy; layers compare by identity below
        self._worker = None
        self._cancel_event = threading.Event()
        self._pair: PreparedPair | None = None
        self._previewing = False
        self._updating_prompt = False
        self._prompt_mode = "free"
        self._prompt_entries: list[tuple[str, str]] = []
        self.last_layer: Image | None = None

        self._layer_a = ComboBox(
            name="layer_a",
            label="image A",
            choices=self._image_layers,
            tooltip="Anatomical / visible image (MRI, VIS): the reference "
            "whose grid, scale, translate and affine the result keeps.",
        )
        self._modality_a = ComboBox(name="modality_a", label="modality A", choices=list(MODALITIES), value="MRI")
        self._layer_b = ComboBox(
            name="layer_b",
            label="image B",
            choices=self._image_layers,
            tooltip="The other modality (CT, PET, SPECT, IR); resampled "
            "onto image A's grid when the layers' physical placement differs.",
        )
        self._modality_b = ComboBox(name="modality_b", label="modality B", choices=list(MODALITIES), value="PET")
        fusers = available_fusers()
        self._model = ComboBox(
            name="model",
            label="model",
            choices=[(name + (" (needs weights)" if info.needs_weights else ""), name) for name, info in fusers.items()]
            + [(CHECKPOINT, CHECKPOINT)],
            value="small" if "small" in fusers else None,
        )
        self._model_note = _note("model_note")
        self._checkpoint = FileEdit(
            name="checkpoint",
            label="checkpoint",
            mode="r",
            filter="Checkpoints (*.pth *.pt *.safetensors *.gz);;All files (*)",
            visible=False,
            tooltip="The authors' Fuse.pth or a checkpoint saved by this project (safetensors).",
        )
        self._prompt_choice = ComboBox(name="prompt", label="prompt", choices=lambda widget: self._prompt_entries)
        self._prompt_text = TextEdit(name="prompt_text", label="prompt text")
        self._prompt_text.native.setMaximumHeight(110)
        self._prompt_note = _note("prompt_note")
        self._device = ComboBox(
            name="device",
            label="device",
            choices=self._devices(),
            value="auto",
            tooltip="auto: the GPU when there is one, else the CPU.",
        )
        self._axis = ComboBox(
            name="axis",
            label="slicing axis",
            choices=[("0 (first axis)", 0), ("1", 1), ("2", 2)],
            value=0,
            tooltip="A volume is fused slice by slice along this array axis; 2-D images ignore it.",
        )
        self._colour = CheckBox(
            name="colour_output",
            text="colour output",
            value=True,
            tooltip="When an input is in colour (or a colormap is chosen below), put its colour back on the fused "
            "brightness; off: a grey result.",
        )
        self._colormap = ComboBox(
            name="colormap",
            label="colormap for B",
            choices=[_NO_COLORMAP, *COLORMAPS],
            value=_NO_COLORMAP,
            tooltip="Colour a scalar functional image B (PET, SPECT) through this map before fusing: the classic "
            "colour fusion picture.",
        )
        self._preview_button = PushButton(
            name="preview_button",
            text="Preview slice",
            tooltip="Fuse only the slice the viewer shows now (along the slicing axis) into the layer "
            f"{PREVIEW_NAME!r}, to try model, prompt and colour settings in about a second; Run replaces it.",
        )
        self._run_button = PushButton(name="run_button", text="Run")
        self._cancel_button = PushButton(name="cancel_button", text="Cancel", enabled=False)
        self._progress = ProgressBar(name="progress", label="progress", min=0, max=1, value=0)
        self._status = _note("status")
        self.max_width = 460  # leave the canvas room; the notes wrap
        self.extend(
            [
                self._layer_a,
                self._modality_a,
                self._layer_b,
                self._modality_b,
                self._model,
                self._model_note,
                self._checkpoint,
                self._prompt_choice,
                self._prompt_text,
                self._prompt_note,
                self._device,
                self._axis,
                self._colour,
                self._colormap,
                self._preview_button,
                self._run_button,
                self._cancel_button,
                self._progress,
                self._status,
            ]
        )

        for note in (self._model_note, self._prompt_note, self._status):
            note.label = ""  # set after construction: magicgui falls back to the name for a label given as ""
        self._relay = _ProgressRelay()
        self._relay.progressed.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)
        self._layer_a.changed.connect(self._on_layer_a)
        self._layer_b.changed.connect(self._on_layer_b)
        self._modality_a.changed.connect(self._on_modality)
        self._modality_b.changed.connect(self._on_modality)
        self._model.changed.connect(self._on_model)
        self._prompt_choice.changed.connect(self._on_prompt_choice)
        # magicgui's TextEdit never emits `changed` (QTextEdit.textChanged carries no value), so listen to Qt
        self._prompt_text.native.textChanged.connect(self._on_prompt_text)
        self._preview_button.changed.connect(self.preview)
        self._run_button.changed.connect(self.run)
        self._cancel_button.changed.connect(self.cancel)
        events = self._viewer.layers.events
        emitters = [
            getattr(events, name)
            for name in ("inserted", "removed", "reordered", "moved", "renamed")
            if hasattr(events, name)
        ]
        for emitter in emitters:
            emitter.connect(self._on_layers_changed)

        def closed(*_: Any) -> None:  # the dock was closed: stop listening, and stop a run (it adds nothing)
            self._cancel_event.set()
            for emitter in emitters:
                emitter.disconnect(self._on_layers_changed)

        self.native.destroyed.connect(closed)

        self._on_model()
        self._on_layers_changed()
        self._on_layer_a()
        self._on_layer_b()

    # ------------------------------------------------------------------ choices
    def _image_layers(self, widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    @staticmethod
    def _devices() -> list[str]:
        import torch

        devices = ["auto", "cpu"]
        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            devices += ["cuda"] + ([f"cuda:{i}" for i in range(count)] if count > 1 else [])
        return devices

    def _on_layers_changed(self, event: Any = None) -> None:
        self._layer_a.reset_choices()
        self._layer_b.reset_choices()
        layers = [layer for _, layer in self._image_layers()]
        if len(layers) < 2:
            return
        a, b = self._layer_a.value, self._layer_b.value
        if a is b:  # start from a sensible pair: an anatomical layer for A, another one for B
            by_modality = [layer for layer in layers if layer.metadata.get("modality") in _MODALITIES_A]
            a = by_modality[0] if by_modality else layers[0]
            b = next(layer for layer in layers if layer is not a)
            self._layer_a.value, self._layer_b.value = a, b

    def _modality_from(self, layer: Any, combo: ComboBox) -> None:
        modality = getattr(layer, "metadata", {}).get("modality") if layer is not None else None
        if modality in MODALITIES:
            combo.value = modality

    def _on_layer_a(self, layer: Any = None) -> None:
        self._modality_from(self._layer_a.value, self._modality_a)
        layer = self._layer_a.value
        self._axis.enabled = layer is None or layer.ndim == 3

    def _on_layer_b(self, layer: Any = None) -> None:
        self._modality_from(self._layer_b.value, self._modality_b)

    def _on_model(self, value: Any = None) -> None:
        model = self._model.value
        self._checkpoint.visible = model == CHECKPOINT
        info = available_fusers().get(model)
        self._model_note.value = (
            info.description if info else "A checkpoint file: the authors' Fuse.pth or one of ours."
        )
        mode, prompts = prompt_mode(model)
        self._prompt_mode = mode
        self._updating_prompt = True
        try:
            if mode == "table":
                choices = [(_prompt_label(p), p) for p in prompts]
            elif mode == "free":  # the trained prompt first, then the others
                prompts = sorted(DEFAULT_PROMPTS.values(), key=lambda p: p != AUTHORS_PROMPT)
                choices = [(_prompt_label(p, mode), p) for p in prompts] + [(CUSTOM_PROMPT, CUSTOM_PROMPT)]
            else:
                choices = [(_NO_PROMPT, _NO_PROMPT)]
            self._prompt_entries = choices
            self._prompt_choice.reset_choices()
        finally:
            self._updating_prompt = False
        self._prompt_text.read_only = mode != "free"
        self._prompt_text.enabled = mode != "none"
        self._prompt_choice.enabled = mode != "none"
        help_text = _PROMPT_HELP[mode].format(model=model)
        self._prompt_note.value = help_text
        for widget in (self._prompt_choice, self._prompt_text, self._prompt_note):
            widget.tooltip = help_text
        self._select_default_prompt()

    def _on_modality(self, value: Any = None) -> None:
        if self._prompt_mode == "table":  # only a prompt-table model's default depends on the pair
            self._select_default_prompt()

    def _select_default_prompt(self, value: Any = None) -> None:
        """Prefill the model's default prompt (the authors' for a CLIP model, the pair's for ``small``); typed
        text is kept."""
        values = list(self._prompt_choice.choices)
        if self._prompt_choice.value == CUSTOM_PROMPT and CUSTOM_PROMPT in values:
            return
        encoder = "clip-vit-b-32" if self._prompt_mode == "free" else "prompt-table"
        wanted = default_prompt(self._modality_a.value, self._modality_b.value, encoder)
        self._prompt_choice.value = wanted if wanted in values else values[0]
        self._on_prompt_choice()

    def _on_prompt_choice(self, value: Any = None) -> None:
        choice = self._prompt_choice.value
        if self._updating_prompt or choice == CUSTOM_PROMPT:
            return
        self._updating_prompt = True
        try:
            self._prompt_text.value = "" if choice == _NO_PROMPT else choice
        finally:
            self._updating_prompt = False

    def _on_prompt_text(self, value: Any = None) -> None:
        if self._updating_prompt or self._prompt_mode != "free":
            return
        if " ".join(self._prompt_text.value.split()) != self._prompt_choice.value:
            self._updating_prompt = True
            try:
                self._prompt_choice.value = CUSTOM_PROMPT
            finally:
                self._updating_prompt = False

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        """Whether a fusion is under way."""
        return self._worker is not None

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~napari_upfusion._layers.run_fusion` that the widget is set to."""
        model: Any = self._model.value
        if model == CHECKPOINT:
            path = Path(self._checkpoint.value) if self._checkpoint.value else None
            if path is None or not path.is_file():
                raise InputError("Choose a checkpoint file (Fuse.pth or a .safetensors file) or pick a listed model.")
            model = str(path)
        colormap = self._colormap.value
        return {
            "model": model,
            "device": self._device.value,
            "prompt": None if self._prompt_mode == "none" else self._prompt_text.value,
            "axis": self._axis.value,
            "colormap": None if colormap == _NO_COLORMAP else colormap,
            "color_output": None if self._colour.value else False,
        }

    def run(self, value: Any = None) -> None:
        """Start fusing the chosen layers in a worker thread (what the Run button does)."""
        self._start(preview=False)

    def preview(self, value: Any = None) -> None:
        """Fuse only the slice the viewer shows now into the preview layer (what Preview slice does)."""
        self._start(preview=True)

    def _start(self, preview: bool) -> None:
        from napari.qt.threading import create_worker

        if self.running:
            return
        try:
            a, b = self._layer_a.value, self._layer_b.value
            if a is None or b is None:
                raise InputError("Add two Image layers first (File > Open Sample > UP-Fusion has examples).")
            pair = prepare_layers(self._viewer, a, b, (self._modality_a.value, self._modality_b.value))
            options = self.options()
            index = current_slice(self._viewer, a, options["axis"]) if preview else None
        except UPFusionError as error:
            self._report_error(str(error))
            return
        self._pair = pair
        self._previewing = preview
        self._cancel_event = threading.Event()
        self._progress.max, self._progress.value = 1, 0
        what = f"slice {index} of {pair.a_name} and {pair.b_name}" if preview else f"{pair.a_name} and {pair.b_name}"
        self._status.value = f"Fusing {what}..."
        self._set_running(True)
        worker = create_worker(_fuse_outcome, pair, options, self._relay, self._cancel_event, index, _start_thread=False)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def cancel(self, value: Any = None) -> None:
        """Ask the running fusion to stop at the next batch; nothing will be added."""
        if self.running:
            self._cancel_event.set()
            self._cancel_button.enabled = False
            self._status.value = "Cancelling..."

    def _set_running(self, running: bool) -> None:
        self._run_button.enabled = not running
        self._preview_button.enabled = not running
        self._cancel_button.enabled = running

    def _on_progress(self, done: int, total: int) -> None:
        self._progress.max = max(1, total)
        self._progress.value = done

    def _report_error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self._status.value = message
        show_error(message)

    def _on_returned(self, outcome: tuple[str, Any]) -> None:
        from napari.utils.notifications import show_info

        status, payload = outcome
        if status == "done" and self._cancel_event.is_set():  # Cancel came after the last check: still honour it
            status, payload = "cancelled", _CANCELLED
        if status == "done" and self._pair is not None and self._previewing:
            layer = show_preview(self._viewer, self._pair, payload)
            info = payload.info
            self._progress.value = self._progress.max
            self._status.value = (
                f"Preview of slice {info.get('slice', 0)} (axis {info['axis']}) in {layer.name!r} "
                f"({info['model']}, {info['seconds']:.1f} s); Run fuses the whole volume."
            )
        elif status == "done" and self._pair is not None:
            remove_preview(self._viewer)  # the volume replaces the one-slice preview
            layer = add_fused_layer(self._viewer, self._pair, payload)
            self.last_layer = layer
            info = payload.info
            self._status.value = f"Added {layer.name!r} ({info['model']}, {info['device']}, {info['seconds']:.1f} s)."
        elif status == "cancelled":
            self._progress.value = 0
            self._status.value = payload
            show_info(payload)
        else:
            self._progress.value = 0
            self._report_error(payload)

    def _on_finished(self) -> None:
        self._worker = None
        self._pair = None
        self._set_running(False)
