"""The public Python API: two images or volumes in, one fused image or volume out.

``a`` is the anatomical or visible input (MRI, VIS) and ``b`` the other one
(CT, PET, SPECT, IR); the network treats them differently, so keep that order
(``modalities`` says which is which; swap both together if your data come the
other way round).

Pipeline: validate -> put ``b`` on ``a``'s grid -> split colour into Y and
chroma -> map each input's intensities to ``[0, 1]`` (:mod:`.intensity`) ->
fuse slice by slice along ``axis`` (:class:`~.runner.SliceRunner`) -> put
chroma back.  The result is float32 in ``[0, 1]`` with ``a``'s shape (plus a
trailing RGB axis when the output is in colour) and ``a``'s geometry.

Dask (or zarr) inputs, bare or inside an ``ImageData``, take the lazy path of
:mod:`.lazy`: one global intensity range per volume is computed first, and
the result is a lazy dask array fused slab by slab along ``axis`` (grey
volumes on matching grids only).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..errors import InputError, PrecisionWarning, UPFusionError
from ..model import UPFusion, load_model
from ..model.text import MODALITIES, PromptCode, default_prompt, is_trained_prompt, pair_key, prompt_code
from . import color as colour
from .geometry import match_grids
from .image import ImageData, is_lazy_array
from .intensity import apply_range, check_finite, intensity_range
from .registry import available_fusers, build_fuser, uses_text
from .runner import (
    CancelToken,
    ProgressCallback,
    SliceRunner,
    available_bytes,
    compile_fuser,
    resolve_device,
    resolve_precision,
    unvalidated_precision_note,
    validated_precision,
)

__all__ = ["MIN_SLICE", "FusionEngine", "FusionResult", "fuse", "get_engine"]

#: Smallest slice side (pixels) that is fused; smaller slices usually mean a wrong ``axis``.
MIN_SLICE = 16

@dataclass
class FusionResult:
    """A fused image, the record of how it was made, and the fused luminance.

    ``image`` is the result (in colour when an input was); ``info`` records the
    inputs, model, prompt, device, precision and timing; ``luma`` is the fused
    Y channel (``a``'s spatial shape, float32 in ``[0, 1]``), which is what the
    network produced before any chroma was put back.
    """

    image: ImageData
    info: dict[str, Any] = field(default_factory=dict)
    luma: np.ndarray | None = None


@dataclass
class _Prepared:
    luma: np.ndarray  # spatial shape, float32 in [0, 1]
    chroma: np.ndarray | None  # spatial shape + (2,), or None when grey


def _split_colour(
    image: ImageData, modality: str, window, colormap: str | None, part: Callable[[np.ndarray], np.ndarray] | None = None
) -> _Prepared:
    """Y in ``[0, 1]`` and chroma (or None) of ``image``, or of ``part(...)`` of it with the whole image's range.

    The intensity range is always the whole image's (the rule is per volume), so the part is exactly
    the same part of what the whole image gives.
    """
    data = image.array
    cut = part or (lambda x: x)
    if image.rgb:
        rgb = data[..., :3]
        if colour.is_grey_rgb(rgb):
            grey = rgb[..., 0]
            return _Prepared(apply_range(cut(grey), *intensity_range(grey, modality, window=window)), None)
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(rgb.dtype, 1.0)
        ycc = colour.rgb_to_ycbcr(np.clip(cut(rgb).astype(np.float32) / np.float32(scale), 0, 1))
        return _Prepared(np.ascontiguousarray(ycc[..., 0]), ycc[..., 1:])
    grey = apply_range(cut(data), *intensity_range(data, modality, window=window))
    if colormap is None:
        return _Prepared(grey, None)
    ycc = colour.rgb_to_ycbcr(colour.apply_colormap(grey, colormap))
    return _Prepared(np.ascontiguousarray(ycc[..., 0]), ycc[..., 1:])


_SAME_IMAGE = "Inputs a and b are the same image; pick one image of each modality."


def _check_modalities(modalities: tuple[str, str]) -> None:
    for name, modality in zip("ab", modalities):
        if modality.upper() not in MODALITIES:
            raise InputError(f"Unknown modality {modality!r} for input {name}; use one of {', '.join(MODALITIES)}.")


def _check_kind(name: str, data: Any) -> None:
    """Refuse data that is not a numeric image, or is empty (needs only dtype, shape and size)."""
    if data.dtype == bool or not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise InputError(f"Input {name} has data type {data.dtype}, which is not an image intensity; give a numeric image.")
    if data.size == 0:
        raise InputError(f"Input {name} is empty (shape {data.shape}); give an image with pixels.")


def _constant_error(name: str, value: Any) -> InputError:
    return InputError(
        f"Input {name} is constant (every value is {value}), so there is nothing to fuse; check that "
        "you picked the right image."
    )


def _validate(a: ImageData, b: ImageData, modalities: tuple[str, str]) -> None:
    _check_modalities(modalities)
    for name, image in (("a", a), ("b", b)):
        data = image.array
        _check_kind(name, data)
        check_finite(data, name)
        if not image.rgb and float(data.min()) == float(data.max()):
            raise _constant_error(name, data.flat[0])
    if a.array.shape == b.array.shape and np.shares_memory(a.array, b.array):
        raise InputError(_SAME_IMAGE)
    if a.ndim != b.ndim:
        raise InputError(
            f"Input a is {a.ndim}-D but input b is {b.ndim}-D; give two 2-D images or two "
            "3-D volumes."
        )


def _as_image(x: np.ndarray | ImageData, name: str, modality: str) -> ImageData:
    if isinstance(x, ImageData):
        return x
    array = np.asarray(x)
    if array.dtype == object or array.ndim not in (2, 3, 4):
        raise InputError(
            f"Input {name} has shape {array.shape}; give a 2-D image or a 3-D volume (select one volume of a 4-D "
            "series first, e.g. volume[0], or pass the axis you want as the slicing axis)."
        )
    return ImageData.from_array(array, metadata={"modality": modality})


def _describe(image: ImageData) -> str:
    path = image.metadata.get("path")
    return str(path) if path else f"array {tuple(image.array.shape)} {image.array.dtype}"


#: float32 copies of a voxel that one fusion keeps in host memory at its peak (normalised a and b, their slice
#: stacks, the fused stack and the result, chroma for colour inputs).
HOST_COPIES = 8


def check_host_memory(image: ImageData, colour: bool) -> None:
    """Refuse up front a volume whose fusion would not fit in free host memory, saying how much it needs."""
    needed = int(np.prod(image.shape)) * 4 * (HOST_COPIES + (6 if colour else 0))
    free = available_bytes(torch.device("cpu"))
    if needed > 0.9 * free:
        raise InputError(
            f"Fusing this {' x '.join(map(str, image.shape))} volume needs about {needed / 2**30:.1f} GiB of memory "
            f"but only {free / 2**30:.1f} GiB are free; close other programs, crop the volume, or pass it as a dask "
            "array to fuse it chunk by chunk."
        )


def _slice_axis(shape: tuple[int, ...], axis: int) -> int:
    """``axis`` checked and made non-negative (0 for a 2-D image); refuses slices smaller than :data:`MIN_SLICE`."""
    ndim = len(shape)
    if ndim == 3 and not -3 <= axis < 3:
        raise InputError(f"axis must be 0, 1 or 2 for a volume, got {axis}.")
    axis = axis % 3 if ndim == 3 else 0
    slice_shape = [n for i, n in enumerate(shape) if ndim == 2 or i != axis]
    if min(slice_shape) < MIN_SLICE:
        raise InputError(
            f"Slices along axis {axis} are {slice_shape[0]} x {slice_shape[1]} pixels, smaller than the "
            f"{MIN_SLICE} x {MIN_SLICE} that fusion needs; pick another axis or a larger image."
        )
    return axis


def _slices(volume: np.ndarray, axis: int) -> np.ndarray:
    """``[S, H, W]`` view of a 2-D image (S = 1) or a 3-D volume sliced along ``axis``."""
    if volume.ndim == 2:
        return volume[None]
    return np.ascontiguousarray(np.moveaxis(volume, axis, 0))


def _unslice(stack: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    return stack[0] if ndim == 2 else np.moveaxis(stack, 0, axis)


class FusionEngine:
    """A fuser loaded once on a device, ready to fuse pair after pair.

    ``model`` is a registered fuser name (``"small"``, ``"paper"``,
    ``"average"``, ...; see :func:`~.registry.available_fusers`), a checkpoint
    path, or a ready ``torch.nn.Module`` slice fuser.  ``precision`` is
    ``"auto"``, ``"fp32"``, ``"bf16"``, or on a GPU also ``"tf32"`` or
    ``"fp16"``: ``"auto"`` is the precision the fuser's config says its weights
    were checked at on that device (:func:`~.runner.validated_precision`): fp32
    for ``paper`` everywhere and for ``small`` on a GPU, bf16 for ``small`` on a
    CPU with native bf16.  fp32 is full float32 (TF32 off on a GPU).  An explicit
    reduced precision that was not validated runs with a :class:`PrecisionWarning`,
    since UP-Fusion's channel rankings may change.  ``compile=True`` runs the fuser through
    ``torch.compile`` (compiled once per slice shape, kept between volumes; falls
    back to eager execution if compilation fails).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | nn.Module = "small",
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        batch_size: int | str = "auto",
        clip_weights: str | os.PathLike[str] | None = None,
        compile: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        resolve_precision(precision, self.device)  # an unknown or impossible precision fails before any loading
        self.batch_size = batch_size
        self.clip_weights = clip_weights
        if isinstance(model, nn.Module):
            self.fuser, self.model_name = model.to(self.device).eval(), type(model).__name__
        elif isinstance(model, str) and model in available_fusers():
            self.fuser, self.model_name = build_fuser(model, self.device), model
        elif os.path.exists(os.fspath(model)):
            self.fuser, self.model_name = load_model(model, self.device), os.fspath(model)
        else:
            raise InputError(
                f"{os.fspath(model)!r} is neither a known model ({', '.join(available_fusers())}) nor an existing "
                "checkpoint file; pick a model or give the path of a checkpoint."
            )
        validated = validated_precision(getattr(self.fuser, "config", None), self.device)
        self.precision = resolve_precision(precision, self.device, validated)
        note = None if precision == "auto" else unvalidated_precision_note(
            self.precision, validated, self.device, f"The {self.model_name!r} model"
        )
        if note:
            warnings.warn(note, PrecisionWarning, stacklevel=2)
        self._codes: dict[str, PromptCode] = {}
        self._lock = threading.Lock()
        self.compiled = compile_fuser(self.fuser, self.device) if compile else None

    @property
    def uses_text(self) -> bool:
        return uses_text(self.fuser)

    def identity(self) -> dict[str, Any]:
        """What a fused result records about the model that made it."""
        report = getattr(self.fuser, "load_report", None)
        info: dict[str, Any] = {"model": self.model_name}
        if report is not None:
            from ..model.cache import file_sha256

            info.update(checkpoint=report.source, checkpoint_sha256=file_sha256(report.source), config=report.config)
        return info

    def prompt_code(self, prompt: str) -> torch.Tensor | None:
        """The text code of ``prompt`` for this model, computed once and kept (``None`` if the fuser takes no text)."""
        if not self.uses_text:
            return None
        with self._lock:
            if prompt not in self._codes:
                if not isinstance(self.fuser, UPFusion):
                    raise UPFusionError("This fuser reads text but is not an UP-Fusion network; give its codes yourself.")
                self._codes[prompt] = prompt_code(self.fuser, prompt, clip_weights=self.clip_weights)
            return self._codes[prompt].code

    def default_prompt(self, modalities: tuple[str, str]) -> str:
        """The prompt used when none is given: :data:`~napari_upfusion.model.text.AUTHORS_PROMPT` for a
        CLIP-conditioned network (the only prompt its weights were trained with), the pair's built-in
        prompt for a prompt-table one (``small``) and for other fusers."""
        config = getattr(self.fuser, "config", None)
        return default_prompt(*modalities, text_encoder=getattr(config, "text_encoder", "prompt-table"))

    def text(self, modalities: tuple[str, str], prompt: str | None) -> tuple[str, torch.Tensor | None]:
        """The prompt actually used (:meth:`default_prompt` when ``prompt`` is empty, whitespace tidied) and its code."""
        prompt = " ".join((prompt or self.default_prompt(modalities)).split())
        return prompt, self.prompt_code(prompt)

    def provenance(self, modalities: tuple[str, str], prompt: str, **settings: Any) -> dict[str, Any]:
        """The record a fused result keeps of how it was made (``settings`` are added as given).

        ``prompt_trained`` says whether the prompt is one the weights were trained with (``None`` for
        fusers without a config); ``prompt_code`` how its code was made (encoder, and for CLIP the
        device and dtype it ran in); both ``None`` for fusers that read no text.
        """
        config = getattr(self.fuser, "config", None)
        reads_text = self.uses_text
        code = self._codes.get(prompt) if reads_text else None
        return {
            "package": "napari-upfusion",
            "version": __version__,
            **self.identity(),
            "modalities": list(modalities),
            "pair": pair_key(*modalities),
            "prompt": prompt if reads_text else None,
            "prompt_trained": is_trained_prompt(config, prompt) if reads_text and config is not None else None,
            "prompt_code": code.describe() if code is not None else None,
            "device": str(self.device),
            "precision": self.precision,
            **settings,
        }

    def fuse(
        self,
        a: np.ndarray | ImageData,
        b: np.ndarray | ImageData,
        *,
        modalities: tuple[str, str] = ("MRI", "PET"),
        prompt: str | None = None,
        axis: int = 0,
        colormap: str | None = None,
        color_output: bool | None = None,
        window: str | tuple[float, float] | None = None,
        register: bool = False,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | Callable[[], bool] | None = None,
    ) -> FusionResult:
        """Fuse ``a`` (anatomical / visible) with ``b``; see :func:`fuse` for every argument."""
        started = time.perf_counter()
        modalities = (modalities[0].upper(), modalities[1].upper())
        if any(is_lazy_array(x.array if isinstance(x, ImageData) else x) for x in (a, b)):
            from .lazy import fuse_lazy

            return fuse_lazy(
                self, a, b, modalities=modalities, prompt=prompt, axis=axis, colormap=colormap, window=window,
                register=register, progress=progress, cancel=cancel,
            )
        return self._fuse(a, b, None, modalities, prompt, axis, colormap, color_output, window, register, progress,
                          cancel, started)  # fmt: skip

    def fuse_slice(
        self,
        a: np.ndarray | ImageData,
        b: np.ndarray | ImageData,
        index: int,
        *,
        modalities: tuple[str, str] = ("MRI", "PET"),
        prompt: str | None = None,
        axis: int = 0,
        colormap: str | None = None,
        color_output: bool | None = None,
        window: str | tuple[float, float] | None = None,
        register: bool = False,
    ) -> FusionResult:
        """Fuse only slice ``index`` along ``axis``: the same slice that :meth:`fuse` of the whole pair gives.

        For a quick look at settings (model, prompt, colour) before fusing a whole volume.  Each
        input's intensity range is still computed from its whole volume (and ``b`` is resampled
        onto ``a``'s grid as a whole), so the result equals that slice of the full fusion up to float
        rounding (which batching and memory layout change in the last bits).

        Parameters
        ----------
        a, b, modalities, prompt, axis, colormap, color_output, window, register
            As for :func:`fuse`; in-memory inputs only.
        index
            The slice along ``axis`` (ignored for a 2-D pair, which is fused whole).

        Returns
        -------
        FusionResult
            ``image`` is that slice of ``a`` as a one-slice volume (shape 1 along ``axis``) placed where
            the slice lies in space (:meth:`ImageData.slab`); ``info["slice"]`` records ``index``.
        """
        started = time.perf_counter()
        modalities = (modalities[0].upper(), modalities[1].upper())
        if any(is_lazy_array(x.array if isinstance(x, ImageData) else x) for x in (a, b)):
            raise InputError("A one-slice preview needs images in memory, not dask or zarr arrays; fuse the volume.")
        return self._fuse(a, b, int(index), modalities, prompt, axis, colormap, color_output, window, register,
                          None, None, started)  # fmt: skip

    def _fuse(self, a, b, index, modalities, prompt, axis, colormap, color_output, window, register, progress, cancel,
              started) -> FusionResult:  # fmt: skip
        """The in-memory pipeline of the module docstring, for the whole pair or (``index``) one slice of it."""
        img_a, img_b = _as_image(a, "a", modalities[0]), _as_image(b, "b", modalities[1])
        _validate(img_a, img_b, modalities)
        ndim = img_a.ndim
        axis = _slice_axis(img_a.shape, axis)
        part = None
        if index is not None and ndim == 3:
            if not 0 <= index < img_a.shape[axis]:
                raise InputError(
                    f"Slice {index} is outside the volume, which has {img_a.shape[axis]} slices along axis {axis}."
                )
            part = lambda x: x[(slice(None),) * axis + (slice(index, index + 1),)]
        else:
            check_host_memory(img_a, img_a.rgb or img_b.rgb or colormap is not None)
        img_b = match_grids(img_a, img_b, register=register)
        prompt, code = self.text(modalities, prompt)
        prep_a = _split_colour(img_a, modalities[0], window if modalities[0] == "CT" else None, None, part)
        prep_b = _split_colour(img_b, modalities[1], window if modalities[1] == "CT" else None, colormap, part)
        runner = SliceRunner(self.fuser, self.device, self.precision, self.batch_size, compiled=self.compiled)
        luma = _unslice(runner.run(_slices(prep_a.luma, axis), _slices(prep_b.luma, axis), code, progress, cancel), ndim, axis)
        if runner.compile_error:  # compiled once and failed: stay eager from now on
            self.compiled = None
        fused = luma
        chroma = prep_b.chroma if prep_b.chroma is not None else prep_a.chroma
        if chroma is not None and color_output is not False:
            fused = colour.ycbcr_to_rgb(np.concatenate([luma[..., None], chroma], axis=-1))
        extra = {} if part is None else {"slice": index}
        info = self.provenance(
            modalities,
            prompt,
            batch_size=runner.batch_size_used,
            axis=axis,
            **extra,
            colormap=colormap,
            window=window,
            registered=register,
            color_output=fused.ndim == ndim + 1,
            compiled=runner.compiled is not None,
            inputs=[_describe(img_a), _describe(img_b)],
            seconds=round(time.perf_counter() - started, 3),
        )
        grid = img_a if part is None else img_a.slab(index, axis)
        result = grid.with_array(fused.astype(np.float32, copy=False), rgb=fused.ndim == ndim + 1)
        result = dataclasses.replace(result, metadata={"upfusion": info})
        return FusionResult(result, info, luma)


_ENGINES: OrderedDict[tuple, FusionEngine] = OrderedDict()
_ENGINES_LOCK = threading.Lock()


def get_engine(
    model: str | os.PathLike[str] | nn.Module = "small",
    device: str | torch.device = "auto",
    precision: str = "auto",
    batch_size: int | str = "auto",
    clip_weights: str | os.PathLike[str] | None = None,
    compile: bool = False,
) -> FusionEngine:
    """A :class:`FusionEngine`, reused between calls with the same settings (the two most recent are kept)."""
    options = {"device": device, "precision": precision, "batch_size": batch_size, "clip_weights": clip_weights,
               "compile": compile}  # fmt: skip
    if isinstance(model, nn.Module):
        return FusionEngine(model, **options)
    key = (os.fspath(model), str(device), precision, str(batch_size), str(clip_weights), compile)
    with _ENGINES_LOCK:
        if key in _ENGINES:
            _ENGINES.move_to_end(key)
            return _ENGINES[key]
    engine = FusionEngine(model, **options)
    with _ENGINES_LOCK:
        _ENGINES[key] = engine
        while len(_ENGINES) > 2:
            _ENGINES.popitem(last=False)
    return engine


def fuse(
    a: np.ndarray | ImageData,
    b: np.ndarray | ImageData,
    *,
    modalities: tuple[str, str] = ("MRI", "PET"),
    prompt: str | None = None,
    model: str | os.PathLike[str] | nn.Module = "small",
    device: str | torch.device = "auto",
    precision: str = "auto",
    axis: int = 0,
    batch_size: int | str = "auto",
    colormap: str | None = None,
    color_output: bool | None = None,
    window: str | tuple[float, float] | None = None,
    register: bool = False,
    clip_weights: str | os.PathLike[str] | None = None,
    compile: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | Callable[[], bool] | None = None,
) -> np.ndarray | ImageData:
    """Fuse two co-registered images or volumes into one.

    Parameters
    ----------
    a, b
        ``a`` is the anatomical or visible input (MRI, VIS), ``b`` the other
        modality (CT, PET, SPECT, IR).  ``a`` goes into the network's first
        (visible) slot and ``b`` into its second (infrared) slot, as in the
        authors' ``Test.py``; they publish no rule for medical pairs, so the
        anatomical image takes the visible slot.  Each is a numpy array — 2-D ``(y, x)``,
        3-D ``(z, y, x)``, or either with a trailing RGB/RGBA axis — or an
        :class:`~napari_upfusion.engine.image.ImageData` carrying physical
        geometry (for example from :func:`~napari_upfusion.engine.io.read_image`).
        Neither is modified.  A dask or zarr array (bare or in an ``ImageData``,
        e.g. from :func:`~napari_upfusion.engine.lazy.open_lazy`) takes the lazy
        path of :mod:`~napari_upfusion.engine.lazy`: grey volumes on matching
        grids, fused slab by slab along ``axis``.
    modalities
        ``(modality of a, modality of b)`` from ``MRI, VIS, CT, PET, SPECT, IR``;
        chooses the intensity rule and the default prompt.
    prompt
        Text that guides the fusion.  Default for CLIP-conditioned networks
        (``paper``, any checkpoint in the authors' layout):
        :data:`~napari_upfusion.model.text.AUTHORS_PROMPT`, the only prompt their
        released weights were trained with.  Another prompt, such as the pair
        prompts of :data:`~napari_upfusion.model.text.DEFAULT_PROMPTS`, gives the
        network a channel order it never saw in training: an experiment, recorded
        as ``prompt_trained: False``.  Default for ``small``: the pair's built-in
        prompt (it was trained with each of them and accepts only those).
    model
        ``"small"`` (bundled), ``"paper"`` (the authors' weights), a classical
        fuser (``"average"``, ``"maximum"``, ``"laplacian"``), a checkpoint path or
        a loaded module.
    device, precision, batch_size
        ``"auto"`` uses CUDA when present, else the CPU, at the precision the
        model was validated at there: fp32 (TF32 off) for ``paper`` on every device
        and for ``small`` on a GPU, bf16 for ``small`` on CPUs with native bf16.
        ``"bf16"``, ``"fp16"`` or ``"tf32"`` (GPU only) when asked for explicitly,
        with a :class:`~napari_upfusion.errors.PrecisionWarning` where not
        validated (channel rankings may change).  One slice at a time on the
        model's CPU streams, batches on a GPU that follow free memory and halve on
        out-of-memory.
    axis
        Slicing axis of a volume.
    colormap
        Colour a scalar ``b`` through ``"hot"``, ``"jet"`` or ``"pet"`` first (the
        classic colour fusion picture).
    color_output
        ``None``: colour output when an input is in colour (its Cb/Cr are put
        back on the fused Y; ``b``'s when both are); ``False``: luminance only.
    window
        CT window, a name of :data:`~napari_upfusion.engine.intensity.CT_WINDOWS`
        or ``(level, width)`` in HU.
    register
        Rigidly register ``b`` to ``a`` (Mattes mutual information) before fusing.
    compile
        Run the network through ``torch.compile`` (CUDA graphs on a GPU); it pays
        for long volumes on a GPU, falls back to eager execution if it fails, and on
        the CPU measured no faster in fp32 (docs in ``upfusion bench``).
    progress
        Called as ``progress(slices_done, slices_total)`` after each batch.
    cancel
        A :class:`threading.Event` (or anything with ``is_set()``, or a callable);
        when set, fusion stops between batches and raises
        :class:`~napari_upfusion.errors.FusionCancelled`: nothing partial is returned.

    Returns
    -------
    numpy.ndarray or ImageData
        Float32 in ``[0, 1]``, ``a``'s spatial shape (plus ``3`` for colour),
        the same type as ``a``; an ``ImageData`` keeps ``a``'s geometry and
        records the settings in ``metadata["upfusion"]``.  For lazy inputs the
        array is a lazy dask array, equal to the eager result once computed
        (``write_image`` streams it to NIfTI or zarr).
    """
    engine = get_engine(model, device, precision, batch_size, clip_weights, compile)
    result = engine.fuse(
        a,
        b,
        modalities=modalities,
        prompt=prompt,
        axis=axis,
        colormap=colormap,
        color_output=color_output,
        window=window,
        register=register,
        progress=progress,
        cancel=cancel,
    )
    return result.image if isinstance(a, ImageData) else result.image.array
