"""The controls of the "UP-Fusion" dock widget: what to fuse and how, and the buttons that start it.

Only choices live here; running them is :mod:`.controller`'s job.  The two layer
choosers are napari's own Image-layer choosers (magicgui's ``create_widget`` typed
with ``napari.layers.Image``): napari refills them whenever the docked widget's
viewer gains, loses, reorders or renames a layer (by calling :meth:`reset_choices`),
and this container then picks a sensible pair.  The prompt controls follow the
model (a built-in prompt table, free text through CLIP, or no prompt) and, for a
prompt-table model, the modality pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    TextEdit,
    create_widget,
)
from qtpy.QtCore import QSignalBlocker
from qtpy.QtWidgets import QSizePolicy

from ...engine.color import COLORMAPS
from ...engine.registry import available_fusers
from ...engine.runner import device_choices
from ...errors import InputError
from ...modalities import MODALITIES
from ...model.factory import get_config
from ...model.text.prompts import AUTHORS_PROMPT, DEFAULT_PROMPTS, default_prompt
from ..layers import PREVIEW_NAME

__all__ = ["CHECKPOINT", "CUSTOM_PROMPT", "FusionControls", "prompt_mode"]

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


def _input(which: str, modality: str, tooltip: str) -> tuple[ComboBox, ComboBox]:
    """Input ``which`` (``"a"`` or ``"b"``): napari's chooser of the Image layers of the viewer the widget is docked
    in, and the chooser of its modality."""
    from napari.layers import Image

    side = which.upper()
    layer = create_widget(annotation=Image, name=f"layer_{which}", label=f"image {side}", options={"tooltip": tooltip})
    modalities = ComboBox(name=f"modality_{which}", label=f"modality {side}", choices=list(MODALITIES), value=modality)
    return layer, modalities


class FusionControls(Container):
    """Every choice of a fusion, reachable by name (``controls["model"]``, ``controls["prompt_text"]`` ...).

    Layers and modalities (``layer_a``, ``modality_a``, ``layer_b``, ``modality_b``), the model
    (``model``, ``checkpoint``), the prompt (``prompt``, ``prompt_text``), ``device``, ``axis``,
    ``colour_output``, ``colormap``; the buttons ``preview_button``, ``run_button`` and
    ``cancel_button``; ``progress`` and the ``status`` line.  :meth:`options` reads the choices as
    the keyword arguments of :func:`~napari_upfusion.plugin.layers.run_fusion`.
    """

    def __init__(self) -> None:
        super().__init__(labels=True)
        self._prompt_mode = "free"
        self._prompt_entries: list[tuple[str, str]] = []
        self._layer_a, self._modality_a = _input(
            "a", "MRI", "Anatomical / visible image (MRI, VIS): the reference whose grid, scale, translate and affine "
            "the result keeps.",
        )  # fmt: skip
        self._layer_b, self._modality_b = _input(
            "b", "PET", "The other modality (CT, PET, SPECT, IR); resampled onto image A's grid when the layers' "
            "physical placement differs.",
        )  # fmt: skip
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
            name="device", label="device", choices=device_choices(), value="auto",
            tooltip="auto: the GPU when there is one, else the CPU.",
        )  # fmt: skip
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
        self.preview_button = PushButton(
            name="preview_button",
            text="Preview slice",
            tooltip="Fuse only the slice the viewer shows now (along the slicing axis) into the layer "
            f"{PREVIEW_NAME!r}, to try model, prompt and colour settings in about a second; Run replaces it.",
        )
        self.run_button = PushButton(name="run_button", text="Run")
        self.cancel_button = PushButton(name="cancel_button", text="Cancel", enabled=False)
        self.progress = ProgressBar(name="progress", label="progress", min=0, max=1, value=0)
        self.status = _note("status")
        self.max_width = 460  # leave the canvas room; the notes wrap
        self.extend(
            [
                self._layer_a, self._modality_a, self._layer_b, self._modality_b,
                self._model, self._model_note, self._checkpoint,
                self._prompt_choice, self._prompt_text, self._prompt_note,
                self._device, self._axis, self._colour, self._colormap,
                self.preview_button, self.run_button, self.cancel_button, self.progress, self.status,
            ]
        )  # fmt: skip
        for note in (self._model_note, self._prompt_note, self.status):
            note.label = ""  # set after construction: magicgui falls back to the name for a label given as ""

        self._layer_a.changed.connect(self._on_layer_a)
        self._layer_b.changed.connect(lambda layer: self._modality_from(layer, self._modality_b))
        self._modality_a.changed.connect(self._on_modality)
        self._modality_b.changed.connect(self._on_modality)
        self._model.changed.connect(self._on_model)
        self._prompt_choice.changed.connect(self._on_prompt_choice)
        # magicgui's TextEdit never emits `changed` (QTextEdit.textChanged carries no value), so listen to Qt
        self._prompt_text.native.textChanged.connect(self._on_prompt_text)
        self._on_model()
        self.reset_choices()

    # ------------------------------------------------------------------ layers
    def reset_choices(self, *_: Any) -> None:
        """Refill every chooser (napari calls this on layer changes), then pick a sensible pair of layers."""
        super().reset_choices()
        layers = list(self._layer_a.choices)
        if len(layers) < 2 or self._layer_a.value is not self._layer_b.value:
            return
        # start from an anatomical layer for A and another one for B
        anatomical = [layer for layer in layers if layer.metadata.get("modality") in _MODALITIES_A]
        a = anatomical[0] if anatomical else layers[0]
        self._layer_a.value, self._layer_b.value = a, next(layer for layer in layers if layer is not a)

    @property
    def layers(self) -> tuple[Any, Any]:
        """The chosen Image layers ``(a, b)`` (``None`` where there is none to choose)."""
        return self._layer_a.value, self._layer_b.value

    @property
    def modalities(self) -> tuple[str, str]:
        """The chosen modalities of A and B."""
        return self._modality_a.value, self._modality_b.value

    def _modality_from(self, layer: Any, combo: ComboBox) -> None:
        modality = getattr(layer, "metadata", {}).get("modality") if layer is not None else None
        if modality in MODALITIES:
            combo.value = modality

    def _on_layer_a(self, layer: Any = None) -> None:
        layer = self._layer_a.value
        self._modality_from(layer, self._modality_a)
        self._axis.enabled = layer is None or layer.ndim == 3

    # ------------------------------------------------------------------ model and prompt
    def _on_model(self, value: Any = None) -> None:
        model = self._model.value
        self._checkpoint.visible = model == CHECKPOINT
        info = available_fusers().get(model)
        self._model_note.value = info.description if info else "A checkpoint file: the authors' Fuse.pth or one of ours."
        mode, prompts = prompt_mode(model)
        self._prompt_mode = mode
        if mode == "table":
            choices = [(_prompt_label(p), p) for p in prompts]
        elif mode == "free":  # the trained prompt first, then the others
            prompts = tuple(sorted(DEFAULT_PROMPTS.values(), key=lambda p: p != AUTHORS_PROMPT))
            choices = [(_prompt_label(p, mode), p) for p in prompts] + [(CUSTOM_PROMPT, CUSTOM_PROMPT)]
        else:
            choices = [(_NO_PROMPT, _NO_PROMPT)]
        self._prompt_entries = choices
        with self._prompt_choice.changed.blocked():  # the default is chosen below, once the mode is set
            self._prompt_choice.reset_choices()
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

    def _select_default_prompt(self) -> None:
        """Prefill the model's default prompt (the authors' for a CLIP model, the pair's for ``small``); typed
        text is kept."""
        values = list(self._prompt_choice.choices)
        if self._prompt_choice.value == CUSTOM_PROMPT and CUSTOM_PROMPT in values:
            return
        encoder = "clip-vit-b-32" if self._prompt_mode == "free" else "prompt-table"
        wanted = default_prompt(self._modality_a.value, self._modality_b.value, encoder)
        with self._prompt_choice.changed.blocked():
            self._prompt_choice.value = wanted if wanted in values else values[0]
        self._on_prompt_choice()

    def _on_prompt_choice(self, value: Any = None) -> None:
        """A listed prompt was chosen: show its text (the text edit's own signal is held meanwhile)."""
        choice = self._prompt_choice.value
        if choice == CUSTOM_PROMPT:
            return
        with QSignalBlocker(self._prompt_text.native):
            self._prompt_text.value = "" if choice == _NO_PROMPT else choice

    def _on_prompt_text(self) -> None:
        """Text was typed: for a free-text model, the choice becomes the custom entry unless the text is a listed one."""
        if self._prompt_mode != "free":
            return
        if " ".join(self._prompt_text.value.split()) != self._prompt_choice.value:
            with self._prompt_choice.changed.blocked():
                self._prompt_choice.value = CUSTOM_PROMPT

    # ------------------------------------------------------------------ reading the choices
    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~napari_upfusion.plugin.layers.run_fusion` that the controls are set to."""
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
