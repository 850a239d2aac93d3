"""The public Python API: two images or volumes in, one fused image or volume out.

``a`` is the anatomical or visible input (MRI, VIS) and ``b`` the other one
(CT, PET, SPECT, IR); the network treats them differently, so keep that order
(``modalities`` says which is which; swap both together if your data come the
other way round).

Pipeline: validate (:mod:`.validate`) -> put ``b`` on ``a``'s grid -> split
colour into Y and chroma -> map each input's intensities to ``[0, 1]``
(:mod:`.intensity`) -> fuse slice by slice along ``axis``
(:class:`~.runner.SliceRunner`), every batch checked to be finite and in
``[0, 1]`` (:func:`~.validate.check_result`) -> put chroma back -> record how it
was made (:mod:`.provenance`).  The result is float32 in ``[0, 1]`` with ``a``'s
shape (plus a trailing RGB axis when the output is in colour) and ``a``'s geometry.

:func:`fuse_files` is the same from files to a file, with every check of the paths,
the headers and the output done before the model is loaded or a pixel is read.

Dask (or zarr) inputs, bare or inside an ``ImageData``, take the lazy path
(:mod:`.lazy`): one global intensity range per volume is computed first, and the
result is a lazy dask array fused slab by slab along ``axis`` (grey volumes on
matching grids only).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError, PrecisionWarning, UPFusionError
from ..model.checkpoint.load import load_model
from ..model.text.codes import PromptCode, prompt_code
from ..model.text.prompts import default_prompt
from ..model.upfusion import UPFusion
from . import color as colour
from .cpu_graph import GraphFuser, resolve_cpu_path
from .geometry import match_grids
from .image import ImageData, is_lazy_array
from .intensity import apply_range, intensity_range, window_range
from .io import read_image, write_image
from .lazy import SlabFuser, as_lazy_image, fuse_slabs, lazy_ranges
from .options import EngineOptions, takes_engine_options
from .preflight import check_file_fusion
from .provenance import FusionResult, fusion_record, result_metadata
from .registry import available_fusers, build_fuser, uses_text
from .runner import (
    CancelToken,
    ProgressCallback,
    SliceRunner,
    compile_fuser,
    resolve_device,
    resolve_precision,
    runtime_hints,
    unvalidated_precision_note,
    validated_precision,
)
from .slicing import from_slices, to_slices
from .validate import (
    as_image,
    check_host_memory,
    check_lazy_pair,
    check_modalities,
    check_output,
    check_overlap,
    check_pair,
    check_result,
    check_slice_index,
    slice_axis,
)

__all__ = ["FusionEngine", "FusionResult", "fuse", "fuse_files", "get_engine"]


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


class FusionEngine:
    """A fuser loaded once on a device, ready to fuse pair after pair.

    Takes the engine options of :class:`~.options.EngineOptions` (``model`` first,
    the others by keyword): ``model`` is a registered fuser name (``"small"``,
    ``"paper"``, ``"average"``, ...; see :func:`~.registry.available_fusers`), a
    checkpoint path, or a ready ``torch.nn.Module`` slice fuser; ``device``,
    ``precision``, ``batch_size``, ``clip_weights`` and ``compile`` say where and
    how it runs.  ``precision="auto"`` is the precision the fuser's weights were
    checked at on that device (:func:`~.runner.validated_precision`, from the
    fuser's runtime hints); an explicit reduced precision that was not validated
    runs with a :class:`PrecisionWarning`, since UP-Fusion's channel rankings may
    change.  ``compile=True`` runs the fuser through ``torch.compile`` (compiled
    once per slice shape, kept between volumes; if compilation fails the engine
    falls back to eager execution, once and for good, on both paths).  ``cpu_path``
    (``"auto"``, ``"eager"``, ``"onnx"``) says how an UP-Fusion network runs on the CPU:
    ``"onnx"`` in fp32 through ONNX Runtime (:mod:`.cpu_graph`), ``"auto"`` as its weights'
    runtime hints say (``onnx`` for ``small``, ``eager`` for ``paper``) unless a reduced
    precision or ``compile`` was asked for; ``cpu_path`` records the path that ran.
    """

    @takes_engine_options
    def __init__(self, model: str | os.PathLike[str] | nn.Module = "small", **options: Any) -> None:
        settings = EngineOptions(model, **options)
        self.options = settings
        self.device = resolve_device(settings.device)
        resolve_precision(settings.precision, self.device)  # an unknown or impossible precision fails before loading
        self.batch_size = settings.batch_size
        self.clip_weights = settings.clip_weights
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
        validated = validated_precision(runtime_hints(self.fuser), self.device)
        path = resolve_cpu_path(settings.cpu_path, self.fuser, self.device, settings.precision, settings.compile)
        #: The fuser the runners call: the ONNX Runtime graph of the network on the CPU path "onnx", else the network.
        self.graph = GraphFuser(self.fuser) if path == "onnx" else None
        self.precision = "fp32" if self.graph is not None else resolve_precision(settings.precision, self.device, validated)
        note = None if settings.precision == "auto" else unvalidated_precision_note(
            self.precision, validated, self.device, f"The {self.model_name!r} model"
        )
        if note:
            warnings.warn(note, PrecisionWarning, stacklevel=2)
        self._codes: dict[str, PromptCode] = {}
        self._lock = threading.Lock()
        self.compiled = compile_fuser(self.fuser, self.device) if settings.compile else None

    @property
    def uses_text(self) -> bool:
        return uses_text(self.fuser)

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

    def known_code(self, prompt: str) -> PromptCode | None:
        """The :class:`~napari_upfusion.model.text.codes.PromptCode` of a prompt already encoded, else ``None``."""
        return self._codes.get(prompt)

    def default_prompt(self, modalities: tuple[str, str]) -> str:
        """The prompt used when none is given: :data:`~napari_upfusion.model.text.prompts.AUTHORS_PROMPT` for a
        CLIP-conditioned network (the only prompt its weights were trained with), the pair's built-in
        prompt for a prompt-table one (``small``) and for other fusers."""
        config = getattr(self.fuser, "config", None)
        return default_prompt(*modalities, text_encoder=getattr(config, "text_encoder", "prompt-table"))

    def text(self, modalities: tuple[str, str], prompt: str | None) -> tuple[str, torch.Tensor | None]:
        """The prompt actually used (:meth:`default_prompt` when ``prompt`` is empty or blank, whitespace tidied) and its
        code."""
        prompt = " ".join((prompt or "").split()) or " ".join(self.default_prompt(modalities).split())
        return prompt, self.prompt_code(prompt)

    def slice_runner(self) -> SliceRunner:
        """A :class:`~.runner.SliceRunner` for this engine's fuser (its ONNX Runtime graph on that path), device,
        precision, batch size and compiled fuser, which checks every fused batch (:func:`~.validate.check_result`,
        naming this engine's model)."""
        fuser = self.graph if self.graph is not None else self.fuser
        check = functools.partial(check_result, model=self.model_name)
        return SliceRunner(fuser, self.device, self.precision, self.batch_size, compiled=self.compiled, check=check)

    @property
    def cpu_path(self) -> str:
        """The path the network runs: ``"onnx"`` while the ONNX Runtime graph works, else ``"eager"``."""
        return "onnx" if self.graph is not None and self.graph.failed is None else "eager"

    def forget_compiled(self) -> None:
        """Stay eager from now on: called once a compiled fuser failed (each runner also drops it at once)."""
        self.compiled = None

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
        if window is not None:
            window_range(window)
        if any(is_lazy_array(x.array if isinstance(x, ImageData) else x) for x in (a, b)):
            return self._fuse_lazy(a, b, modalities, prompt, axis, colormap, window, register, progress, cancel,
                                   started)  # fmt: skip
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
        if window is not None:
            window_range(window)
        if any(is_lazy_array(x.array if isinstance(x, ImageData) else x) for x in (a, b)):
            raise InputError("A one-slice preview needs images in memory, not dask or zarr arrays; fuse the volume.")
        return self._fuse(a, b, int(index), modalities, prompt, axis, colormap, color_output, window, register,
                          None, None, started)  # fmt: skip

    def _fuse(self, a, b, index, modalities, prompt, axis, colormap, color_output, window, register, progress, cancel,
              started, before: Callable[[tuple[int, ...], bool], None] | None = None) -> FusionResult:  # fmt: skip
        """The in-memory pipeline of the module docstring, for the whole pair or (``index``) one slice of it.

        ``before(shape, colour)`` is called with the result's spatial shape and whether it is in colour
        once both are known, before the network runs (:func:`fuse_files` checks its output there)."""
        img_a, img_b = as_image(a, "a", modalities[0]), as_image(b, "b", modalities[1])
        check_pair(img_a, img_b, modalities)
        ndim = img_a.ndim
        axis = slice_axis(img_a.shape, axis)
        part = None
        if index is not None and ndim == 3:
            check_slice_index(img_a.shape, axis, index)
            part = lambda x: x[(slice(None),) * axis + (slice(index, index + 1),)]
        else:
            check_host_memory(img_a.shape, img_a.rgb or img_b.rgb or colormap is not None)
        if not register:
            check_overlap(img_a, img_b)
        img_b = match_grids(img_a, img_b, register=register)
        prompt, code = self.text(modalities, prompt)
        prep_a = _split_colour(img_a, modalities[0], window if modalities[0] == "CT" else None, None, part)
        prep_b = _split_colour(img_b, modalities[1], window if modalities[1] == "CT" else None, colormap, part)
        if before is not None:
            colour_out = (prep_b.chroma is not None or prep_a.chroma is not None) and color_output is not False
            before(img_a.shape, colour_out)
        runner = self.slice_runner()
        stack = runner.run(to_slices(prep_a.luma, axis), to_slices(prep_b.luma, axis), code, progress, cancel)
        luma = from_slices(stack, ndim, axis)
        if runner.compile_error:  # compiled once and failed: stay eager from now on
            self.forget_compiled()
        fused = luma
        chroma = prep_b.chroma if prep_b.chroma is not None else prep_a.chroma
        if chroma is not None and color_output is not False:
            fused = colour.ycbcr_to_rgb(np.concatenate([luma[..., None], chroma], axis=-1))
        info = fusion_record(
            self, modalities, prompt, (img_a, img_b), started,
            batch_size=runner.batch_size_used, axis=axis, colormap=colormap, window=window, registered=register,
            color_output=fused.ndim == ndim + 1, compiled=runner.compiled is not None, cpu_path=self.cpu_path,
            **({} if part is None else {"slice": index}),
        )  # fmt: skip
        grid = img_a if part is None else img_a.slab(index, axis)
        result = grid.with_array(fused.astype(np.float32, copy=False), rgb=fused.ndim == ndim + 1)
        result = dataclasses.replace(result, metadata=result_metadata(img_a, info))
        return FusionResult(result, info, luma)

    def _fuse_lazy(self, a, b, modalities, prompt, axis, colormap, window, register, progress, cancel,
                   started) -> FusionResult:  # fmt: skip
        """The lazy path (:mod:`.lazy`): a lazy float32 dask array with ``a``'s shape and geometry; ``info`` has
        ``"lazy": True`` and the slab sizes (``"seconds"`` covers only the checks and intensity ranges)."""
        check_modalities(modalities)
        img_a, img_b = as_lazy_image(a, modalities[0]), as_lazy_image(b, modalities[1])
        check_lazy_pair(img_a, img_b, colormap=colormap, register=register)
        ndim = img_a.ndim
        axis = slice_axis(img_a.shape, axis)
        ranges = lazy_ranges((img_a, img_b), modalities, window)
        prompt, code = self.text(modalities, prompt)
        total = img_a.shape[axis] if ndim == 3 else 1
        slabs = SlabFuser(self.slice_runner(), code, ranges, axis, ndim, total, progress, cancel, self.forget_compiled)
        fused = fuse_slabs(img_a, img_b, slabs, axis)
        info = fusion_record(
            self, modalities, prompt, (img_a, img_b), started,
            batch_size=self.batch_size, axis=axis, colormap=None, window=window, registered=False,
            color_output=False, compiled=self.compiled is not None, cpu_path=self.cpu_path,
            lazy=True, slab_slices=list(fused.chunks[axis]) if ndim == 3 else [1],
            intensity_ranges=[list(r) for r in ranges],
        )  # fmt: skip
        result = dataclasses.replace(img_a.with_array(fused, rgb=False), metadata=result_metadata(img_a, info))
        return FusionResult(result, info, fused)  # grey only: the fused array is its own luma


_ENGINES: OrderedDict[tuple, FusionEngine] = OrderedDict()
_ENGINES_LOCK = threading.Lock()


def get_engine(*args: Any, **kwargs: Any) -> FusionEngine:
    """A :class:`FusionEngine` for the engine options (:class:`~.options.EngineOptions`, by position or keyword),
    reused between calls with the same options (the two most recent are kept; a module is never cached)."""
    options = EngineOptions(*args, **kwargs)
    key = options.cache_key()
    if key is None:
        return FusionEngine(**options.as_kwargs())
    with _ENGINES_LOCK:
        if key in _ENGINES:
            _ENGINES.move_to_end(key)
            return _ENGINES[key]
    engine = FusionEngine(**options.as_kwargs())
    with _ENGINES_LOCK:
        _ENGINES[key] = engine
        while len(_ENGINES) > 2:
            _ENGINES.popitem(last=False)
    return engine


_SIGNATURE = inspect.signature(EngineOptions).replace(return_annotation=FusionEngine)
get_engine.__signature__ = _SIGNATURE  # type: ignore[attr-defined]  # help() shows the options


@takes_engine_options
def fuse_files(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    modalities: tuple[str, str] = ("MRI", "PET"),
    prompt: str | None = None,
    axis: int = 0,
    colormap: str | None = None,
    color_output: bool | None = None,
    window: str | tuple[float, float] | None = None,
    register: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | Callable[[], bool] | None = None,
    inputs: Iterable[tuple[str, str | os.PathLike[str] | None]] = (),
    format: str | None = None,
    **options: Any,
) -> tuple[FusionResult, Path]:
    """Fuse two image files (or DICOM folders) into one output file, checking everything that can be checked first.

    Before the model is loaded or a pixel is read, :func:`~.preflight.check_file_fusion`: no output
    is an input (``a``, ``b``, a checkpoint or CLIP weights given by path, and ``inputs``), ``a`` and
    ``b`` are not the same image, their headers are readable, the output can be written and its
    format holds a volume of ``a``'s shape, and the fusion fits in free memory.  Once both images
    are read, and before the network runs, the output is checked again knowing whether the result
    is in colour (NIfTI holds no colour).
    The output is written atomically (:func:`~.io.write_image`).

    Parameters
    ----------
    a, b
        Input files or DICOM folders, as for :func:`~.io.read_image`.
    output
        The output file, whose format follows its extension; with ``format="dicom"`` the
        folder that receives a new DICOM series.
    overwrite
        Replace an existing output file.
    modalities, prompt, axis, colormap, color_output, window, register, progress, cancel
        As for :func:`fuse`.
    inputs
        More ``(label, path)`` inputs the output must not overwrite (a batch's manifest).
    format
        A format's name (``"dicom"``, ...), as for :func:`~.io.write_image`; None: the extension decides.
    model, device, precision, batch_size, clip_weights, compile
        The engine options, as for :func:`fuse`.

    Returns
    -------
    (FusionResult, pathlib.Path)
        The result and the path written.
    """
    settings = EngineOptions(**options)
    modalities = (modalities[0].upper(), modalities[1].upper())
    check_file_fusion(a, b, output, overwrite=overwrite, modalities=modalities, colormap=colormap, window=window,
                      inputs=inputs, format=format, **settings.as_kwargs())  # fmt: skip
    engine = get_engine(**settings.as_kwargs())
    image_a, image_b = read_image(a, modality=modalities[0]), read_image(b, modality=modalities[1])

    def before(shape: tuple[int, ...], colour: bool) -> None:
        check_output(output, shape=shape, rgb=colour, overwrite=overwrite, format=format)

    result = engine._fuse(image_a, image_b, None, modalities, prompt, axis, colormap, color_output, window, register,
                          progress, cancel, time.perf_counter(), before)  # fmt: skip
    return result, write_image(result.image, output, overwrite=overwrite, format=format)


@takes_engine_options
def fuse(
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
    **options: Any,
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
        e.g. from :func:`~napari_upfusion.engine.io.open_lazy`) takes the lazy
        path of :mod:`~napari_upfusion.engine.lazy`: grey volumes on matching
        grids, fused slab by slab along ``axis``.
    modalities
        ``(modality of a, modality of b)`` from ``MRI, VIS, CT, PET, SPECT, IR``;
        chooses the intensity rule and the default prompt.
    prompt
        Text that guides the fusion.  Default for CLIP-conditioned networks
        (``paper``, any checkpoint in the authors' layout):
        :data:`~napari_upfusion.model.text.prompts.AUTHORS_PROMPT`, the only prompt their
        released weights were trained with.  Another prompt, such as the pair
        prompts of :data:`~napari_upfusion.model.text.prompts.DEFAULT_PROMPTS`, gives the
        network a channel order it never saw in training: an experiment, recorded
        as ``prompt_trained: False``.  Default for ``small``: the pair's built-in
        prompt (it was trained with each of them and accepts only those).
    model, device, precision, batch_size, clip_weights, compile, cpu_path
        The engine options (:class:`~napari_upfusion.engine.options.EngineOptions`,
        where each is described): the fuser (``"small"`` bundled, ``"paper"``, a
        classical fuser, a checkpoint path or a loaded module) and where and how it
        runs.  ``"auto"`` uses CUDA when present, else the CPU, at the precision the
        model was validated at there.  Engines are reused between calls with the same
        options (:func:`get_engine`).
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
        records the settings in ``metadata["upfusion"]`` (and keeps ``a``'s DICOM headers in
        ``metadata["dicom"]``, so ``write_image(..., format="dicom")`` links the result to
        ``a``'s series).  For lazy inputs the
        array is a lazy dask array, equal to the eager result once computed
        (``write_image`` streams it to NIfTI or zarr).
    """
    result = get_engine(**options).fuse(
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
