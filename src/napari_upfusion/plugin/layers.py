"""napari layers to and from the engine: the one place where layers become :class:`ImageData` and back.

Used by scripts (:func:`fuse_layers`), by the widget (which runs the same three
steps, :func:`prepare_layers` -> :func:`run_fusion` in a worker thread ->
:func:`add_fused_layer`; for *Preview slice* :func:`current_slice` -> :func:`run_preview` ->
:func:`show_preview`), by the reader, the writer and the sample data.  No
image maths happens here: geometry is handed to
:meth:`ImageData.from_napari_geometry` / :meth:`ImageData.napari_geometry`, and
everything else to the engine.

Example::

    import napari
    from napari_upfusion import fuse_layers

    viewer = napari.Viewer()
    viewer.open_sample("napari-upfusion", "brain_mri_pet")
    fused = fuse_layers(viewer, "MRI", "PET", modalities=("MRI", "PET"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.image import ImageData, is_lazy_array
from ..engine.options import EngineOptions
from ..errors import InputError
from .gl_guard import protect_from_late_triton

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Image, Layer

    from ..engine.provenance import FusionResult

__all__ = [
    "PREVIEW_NAME",
    "PreparedPair",
    "add_fused_layer",
    "current_slice",
    "fuse_layers",
    "image_from_layer_state",
    "image_layer_data",
    "layer_to_image",
    "prepare_layers",
    "remove_preview",
    "run_fusion",
    "run_preview",
    "show_preview",
    "unwrap",
]

#: Name of the one temporary layer that :func:`show_preview` keeps up to date.
PREVIEW_NAME = "UP-Fusion preview"
#: ``metadata`` key that marks that layer (a user may rename it).
_PREVIEW_KEY = "upfusion_preview"

#: The layer attributes that place a layer in the world, copied from the reference layer to the fused one.
_GEOMETRY_ATTRIBUTES = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels")


# ---------------------------------------------------------------------------------------------- layers -> ImageData
def image_from_layer_state(
    data: Any,
    *,
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    rotate: Any = None,
    shear: Any = None,
    affine: Any = None,
    rgb: bool | None = None,
    multiscale: bool = False,
    metadata: Mapping[str, Any] | None = None,
    name: str = "layer",
) -> ImageData:
    """The :class:`ImageData` that a napari image layer with this data and transform shows.

    Parameters
    ----------
    data
        The layer's data; for a multiscale layer the list of levels, of which level 0
        (full resolution, the level that ``scale`` refers to) is used.
    scale, translate, rotate, shear, affine
        The layer's transform, as napari stores it (``layer.scale`` ... or the same keys of
        ``layer.as_layer_data_tuple()[1]``).  Rotation and shear are folded into the
        affine, so the image sits exactly where napari draws it.
    rgb
        Whether the last axis is colour (``layer.rgb``).
    multiscale
        Whether ``data`` is a list of resolution levels.
    metadata
        Copied into the image's metadata (``"path"`` and ``"modality"`` are what the engine reads).
    name
        The layer name, used in error messages only.

    Returns
    -------
    ImageData
        A read-only view of the layer's data with its geometry; ``has_geometry`` is False
        when the layer has napari's default transform.
    """
    from napari.utils.transforms import Affine

    if multiscale:
        data = data[0]
    # dask / zarr layers stay lazy: the engine then fuses them slab by slab with bounded memory
    array = data if is_lazy_array(data) else np.asarray(data)
    if array.dtype == object:
        raise InputError(f"Layer {name!r} does not hold a numeric array; pick an image layer.")
    if scale is None:
        return ImageData.from_napari_geometry(array, rgb=rgb, metadata=dict(metadata or {}))
    n = len(scale)
    # napari draws data at  affine @ (rotate @ shear @ diag(scale) @ index + translate):
    # everything but the scale goes into the outer matrix, composed by napari's own Affine.
    inner = Affine(
        rotate=np.eye(n) if rotate is None else rotate,
        shear=np.zeros(n * (n - 1) // 2) if shear is None else shear,
        translate=np.zeros(n) if translate is None else translate,
        ndim=n,
    )
    outer = np.eye(n + 1) if affine is None else np.asarray(getattr(affine, "affine_matrix", affine), dtype=float)
    return ImageData.from_napari_geometry(
        array,
        scale=scale,
        translate=None,
        affine=outer @ inner.affine_matrix,
        rgb=rgb,
        metadata=dict(metadata or {}),
    )


def layer_to_image(layer: Layer, modality: str | None = None) -> ImageData:
    """The :class:`ImageData` of an Image layer: its full-resolution data and the geometry napari shows it with.

    Parameters
    ----------
    layer
        A ``napari.layers.Image``; any other layer type is refused with one sentence.
    modality
        Stored as ``metadata["modality"]``.

    Returns
    -------
    ImageData
        A read-only view of the layer's data (never a copy that could drift, never modified); its
        metadata keeps the layer's ``path``, ``modality`` and ``dicom`` (DICOM headers, from the reader).
    """
    from napari.layers import Image

    if not isinstance(layer, Image):
        kind = type(layer).__name__
        raise InputError(
            f"Layer {layer.name!r} is a {kind} layer, but fusion needs two Image layers; pick image layers "
            "(a labels or segmentation layer cannot be fused)."
        )
    metadata = {key: layer.metadata[key] for key in ("path", "modality", "dicom") if key in layer.metadata}
    if modality is not None:
        metadata["modality"] = modality
    metadata["layer"] = layer.name
    return image_from_layer_state(
        layer.data,
        scale=layer.scale,
        translate=layer.translate,
        rotate=layer.rotate,
        shear=layer.shear,
        affine=layer.affine,
        rgb=layer.rgb,
        multiscale=layer.multiscale,
        metadata=metadata,
        name=layer.name,
    )


# ---------------------------------------------------------------------------------------------- ImageData -> layers
def image_layer_data(image: ImageData, name: str, **layer_kwargs: Any) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari layer-data tuple ``(data, kwargs, "image")`` that shows ``image`` in physical space.

    Parameters
    ----------
    image
        The image; its ``napari_geometry()`` gives ``scale``, ``translate`` and, for rotated or
        flipped axes, ``affine``.  Units are millimetres when the image has physical geometry.
    name
        The layer name.
    **layer_kwargs
        Further ``Image`` layer arguments (``colormap``, ``contrast_limits``, ``metadata`` ...).

    Returns
    -------
    tuple
        For a reader, a sample-data function or ``viewer._add_layer_from_data``.
    """
    kwargs: dict[str, Any] = {"name": name, "rgb": image.rgb, **image.napari_geometry()}
    if image.has_geometry:
        kwargs["units"] = ("mm",) * image.ndim
    kwargs.update(layer_kwargs)
    return image.array, kwargs, "image"


# ---------------------------------------------------------------------------------------------- fusion
@dataclass
class PreparedPair:
    """Two Image layers ready for the engine, and the reference layer's placement for the result.

    Built on the GUI thread by :func:`prepare_layers`; :func:`run_fusion` may then run in any thread.
    """

    a_name: str
    b_name: str
    a: ImageData
    b: ImageData
    modalities: tuple[str, str]
    #: ``scale``, ``translate``, ``rotate``, ``shear``, ``affine``, ``units``, ``axis_labels`` of layer a.
    geometry: dict[str, Any] = field(default_factory=dict)

    @property
    def default_name(self) -> str:
        """The fused layer's name, after its inputs: ``"fused(a, b)"``."""
        return f"fused({self.a_name}, {self.b_name})"


def unwrap(obj: Any) -> Any:
    """The object behind napari's ``PublicOnlyProxy`` (what plugin widgets receive), or ``obj`` itself.

    Each access through the proxy makes a new proxy object, so identity checks need the real layer.
    """
    return getattr(obj, "__wrapped__", obj)


def _find_layer(viewer: napari.Viewer, layer: str | Layer, which: str) -> Layer:
    viewer = unwrap(viewer)
    if not isinstance(layer, str):
        layer = unwrap(layer)
        if layer not in viewer.layers:
            raise InputError(f"Layer {layer.name!r} ({which}) is not in this viewer; pick one of its layers.")
        return layer
    if layer not in viewer.layers:
        names = ", ".join(repr(item.name) for item in viewer.layers) or "none"
        raise InputError(f"There is no layer named {layer!r} ({which}); the layers are {names}.")
    return viewer.layers[layer]


def prepare_layers(
    viewer: napari.Viewer,
    a: str | Layer,
    b: str | Layer,
    modalities: Sequence[str] | None = None,
) -> PreparedPair:
    """Look up two Image layers and convert them for the engine (call on the GUI thread).

    Parameters
    ----------
    viewer
        The viewer holding the layers.
    a, b
        Layer names or layers: ``a`` the anatomical / visible one (MRI, VIS), the reference whose
        grid and placement the result keeps; ``b`` the other modality (CT, PET, SPECT, IR).
    modalities
        ``(modality of a, modality of b)``; None takes them from the layers' ``metadata["modality"]``
        (set by this plugin's sample data), and asks for them when a layer has none.

    Returns
    -------
    PreparedPair
    """
    layer_a, layer_b = _find_layer(viewer, a, "input a"), _find_layer(viewer, b, "input b")
    if layer_a is layer_b:
        raise InputError(f"Layer {layer_a.name!r} was picked for both inputs; pick one layer of each modality.")
    if modalities is None:
        found = [layer.metadata.get("modality") for layer in (layer_a, layer_b)]
        if None in found:
            raise InputError(
                f"Say which modalities layers {layer_a.name!r} and {layer_b.name!r} are, e.g. "
                "modalities=('MRI', 'PET')."
            )
        modalities = found
    if len(modalities) != 2:
        raise InputError(
            f"modalities must name two modalities, one per layer, e.g. ('MRI', 'PET'), not {modalities!r}."
        )
    mod_a, mod_b = (str(m).upper() for m in modalities)
    image_a, image_b = layer_to_image(layer_a, mod_a), layer_to_image(layer_b, mod_b)
    geometry = {key: getattr(layer_a, key) for key in _GEOMETRY_ATTRIBUTES}
    geometry["affine"] = np.array(layer_a.affine.affine_matrix)
    return PreparedPair(layer_a.name, layer_b.name, image_a, image_b, (mod_a, mod_b), geometry)


def _split_options(options: dict[str, Any]):
    """The engine the engine options among ``options`` choose (:class:`EngineOptions`), and the other options,
    which go to :meth:`FusionEngine.fuse <napari_upfusion.engine.api.FusionEngine.fuse>`."""
    protect_from_late_triton()  # napari drew its canvas before this first import of torch (see gl_guard)
    from ..engine.api import get_engine  # the engine (torch) only when fusing: the reader and samples stay light

    engine_options, rest = EngineOptions.split(options)
    return get_engine(**engine_options.as_kwargs()), rest


def run_fusion(
    pair: PreparedPair,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Any = None,
    **options: Any,
) -> FusionResult:
    """Fuse a prepared pair with the engine; safe to call from a worker thread (touches no layer).

    Parameters
    ----------
    pair
        From :func:`prepare_layers`.
    progress, cancel
        Passed to the engine: ``progress(done, total)`` after each batch of slices; a
        :class:`threading.Event` that, once set, makes the engine raise
        :class:`~napari_upfusion.errors.FusionCancelled`.
    **options
        ``model``, ``device``, ``precision``, ``batch_size``, ``clip_weights`` choose the engine
        (:func:`~napari_upfusion.engine.api.get_engine`; default the bundled ``"small"`` model);
        ``prompt``, ``axis``, ``colormap``, ``color_output``, ``window``, ``register`` go to
        :meth:`FusionEngine.fuse <napari_upfusion.engine.api.FusionEngine.fuse>`.

    Returns
    -------
    FusionResult
        ``info`` additionally records the input layer names.
    """
    engine, options = _split_options(options)
    result = engine.fuse(pair.a, pair.b, modalities=pair.modalities, progress=progress, cancel=cancel, **options)
    result.info["input_layers"] = [pair.a_name, pair.b_name]
    return result


def current_slice(viewer: napari.Viewer, layer: str | Layer, axis: int) -> int:
    """The index along data ``axis`` of ``layer`` of the slice the viewer shows now.

    The viewer's current point is in world coordinates; the layer's own transform (scale,
    translate, rotate, shear, affine) turns it into data coordinates, rounded as napari rounds
    when it slices.  A 2-D layer has one slice, 0.

    Raises
    ------
    InputError
        When the viewer's position lies outside the layer along ``axis``.
    """
    layer = _find_layer(viewer, layer, "input a")
    if layer.ndim == 2:
        return 0
    position = layer.world_to_data(unwrap(viewer).dims.point)
    index = int(np.round(position[axis]))
    size = (layer.data[0] if layer.multiscale else layer.data).shape[axis]
    if not 0 <= index < size:
        raise InputError(
            f"The viewer is not showing a slice of layer {layer.name!r} along axis {axis} (it is at data position "
            f"{position[axis]:.1f} of 0-{size - 1}); move the slider onto the layer."
        )
    return index


def run_preview(pair: PreparedPair, index: int, **options: Any) -> FusionResult:
    """Fuse only slice ``index`` of a prepared pair (along ``options["axis"]``); safe in a worker thread.

    The engine's :meth:`~napari_upfusion.engine.api.FusionEngine.fuse_slice`: each volume's intensity
    range is the whole volume's, so the preview is the slice that :func:`run_fusion` would give.
    Takes the same ``options`` as :func:`run_fusion` (``progress`` and ``cancel`` aside).
    """
    engine, options = _split_options(options)
    result = engine.fuse_slice(pair.a, pair.b, index, modalities=pair.modalities, **options)
    result.info["input_layers"] = [pair.a_name, pair.b_name]
    return result


def _preview_layers(viewer: napari.Viewer) -> list[Layer]:
    return [layer for layer in unwrap(viewer).layers if layer.metadata.get(_PREVIEW_KEY)]


def remove_preview(viewer: napari.Viewer) -> None:
    """Remove the preview layer that :func:`show_preview` added, if there is one."""
    viewer = unwrap(viewer)
    for layer in _preview_layers(viewer):
        viewer.layers.remove(layer)


def show_preview(viewer: napari.Viewer, pair: PreparedPair, result: FusionResult) -> Image:
    """Show a one-slice result in the single preview layer, replacing the previous preview.

    The layer (named :data:`PREVIEW_NAME`) holds the slice as a one-slice volume placed exactly where
    that slice of the reference layer is, so it lies over the view it was made from.
    """
    from napari.layers import Image

    viewer = unwrap(viewer)
    image = result.image
    placement = {**image.napari_geometry(), **{k: pair.geometry[k] for k in ("units", "axis_labels") if k in pair.geometry}}
    layer = Image(
        image.array,
        name=PREVIEW_NAME,
        rgb=image.rgb,
        contrast_limits=(0.0, 1.0),
        metadata={"upfusion": dict(result.info), _PREVIEW_KEY: True},
        **({} if image.rgb else {"colormap": "gray"}),
        **placement,
    )
    remove_preview(viewer)
    return unwrap(viewer.add_layer(layer))


def add_fused_layer(viewer: napari.Viewer, pair: PreparedPair, result: FusionResult, name: str | None = None) -> Image:
    """Add a fusion result as a new Image layer placed exactly like the reference layer ``a``.

    Parameters
    ----------
    viewer
        The viewer to add the layer to.
    pair
        The pair the result was made from (gives the reference placement and the input names).
    result
        From :func:`run_fusion`.
    name
        Layer name; default ``"fused(a, b)"`` (napari appends a number when the name is taken).

    Returns
    -------
    napari.layers.Image
        Its ``metadata["upfusion"]`` is ``result.info``: package version, model and checkpoint hash,
        modalities, prompt, device, precision, axis, colormap, window, colour output, input layer
        names, seconds; ``metadata["dicom"]`` holds the reference layer's DICOM headers when it has
        them (for the DICOM writer).  No other layer is touched.
    """
    from napari.layers import Image

    image = result.image
    display = {} if image.rgb else {"colormap": "gray"}
    layer = Image(
        image.array,
        name=name or pair.default_name,
        rgb=image.rgb,
        contrast_limits=(0.0, 1.0),  # the engine's output range
        metadata={**image.metadata, "upfusion": dict(result.info)},  # and what the engine carried (DICOM headers)
        **display,
        **pair.geometry,
    )
    return unwrap(viewer.add_layer(layer))


def fuse_layers(
    viewer: napari.Viewer,
    a_name: str | Layer,
    b_name: str | Layer,
    *,
    modalities: Sequence[str] | None = None,
    name: str | None = None,
    **fuse_kwargs: Any,
) -> Image:
    """Fuse two Image layers of a viewer into a new layer (scripted use of the widget's Run).

    Parameters
    ----------
    viewer
        A ``napari.Viewer``.
    a_name, b_name
        Names (or the layers themselves) of the anatomical / visible layer (MRI, VIS), which is
        the reference for the result's grid and placement, and of the other modality
        (CT, PET, SPECT, IR).  When their grids differ, ``b`` is resampled onto ``a``'s
        through both layers' physical placement (scale, translate, rotate, shear, affine).
    modalities
        ``(modality of a, modality of b)`` from ``MRI, VIS, CT, PET, SPECT, IR``; None reads
        each layer's ``metadata["modality"]``.
    name
        Name of the new layer; default ``"fused(a, b)"``.
    **fuse_kwargs
        ``model`` (``"small"`` by default, ``"paper"``, ``"average"``, ... or a checkpoint path),
        ``device``, ``precision``, ``batch_size``, ``clip_weights``, ``prompt``, ``axis``,
        ``colormap``, ``color_output``, ``window``, ``register``, ``progress``, ``cancel``; see
        :func:`napari_upfusion.fuse`.

    Returns
    -------
    napari.layers.Image
        The new layer, already added to ``viewer``; no existing layer or its data is changed.

    Raises
    ------
    UPFusionError
        With a one-sentence message, for every unusable input (unknown or non-image layer,
        the same layer twice, shapes that differ without geometry, a bad prompt, missing
        weights...); :class:`~napari_upfusion.errors.FusionCancelled` when ``cancel`` is set.
    """
    pair = prepare_layers(viewer, a_name, b_name, modalities)
    return add_fused_layer(viewer, pair, run_fusion(pair, **fuse_kwargs), name=name)
