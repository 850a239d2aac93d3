"""``ImageData``: an image or volume together with its physical geometry.

Conventions (one rule everywhere: *array axis order*)
-----------------------------------------------------
- ``array`` is indexed ``(y, x)`` in 2-D and ``(z, y, x)`` in 3-D, as numpy,
  SimpleITK's ``GetArrayFromImage`` and napari index it.  A colour image has one
  more, trailing axis of length 3 (RGB) or 4 (RGBA) and ``rgb`` is true.
- Physical space is SimpleITK's (DICOM's) LPS patient space in millimetres, but
  every geometric quantity is stored in array axis order, i.e. *reversed* with
  respect to SimpleITK's ``(x, y, z)`` order:

  * ``spacing[a]`` is the distance between neighbours along array axis ``a``;
  * ``origin`` is the physical position of the index-0 voxel, written with its
    coordinates in the order ``(S, P, L)`` in 3-D and ``(P, L)`` in 2-D (so
    ``origin == tuple(reversed(sitk_image.GetOrigin()))``);
  * ``direction[:, a]`` is the unit vector of array axis ``a``, with components
    in that same reversed ``(S, P, L)`` order.

  Hence ``world = origin + direction @ diag(spacing) @ index`` for an index in
  array axis order, which is exactly the affine that napari expects for a layer
  (napari's world axes follow the data axes).
- ``has_geometry`` tells real physical geometry (from a NIfTI, MHA, NRRD or
  DICOM file, or given explicitly) from the unit-spacing default of a plain
  array, PNG or TIFF.  Only images with real geometry are ever resampled onto
  each other (see :func:`napari_upfusion.engine.geometry.match_grids`).

The array is exposed as a read-only view, so nothing downstream can modify a
caller's data through an ``ImageData``; copy it before changing it in place.
A dask array (or a zarr array, which is wrapped in one) is kept lazy as it is:
see :func:`is_lazy_array` and :mod:`.lazy`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["ImageData", "is_lazy_array"]

_UNIT_TOL = 1e-3  # how far from unit length a direction column may be


def is_lazy_array(x: Any) -> bool:
    """Whether ``x`` is a dask or zarr array, whose values are read only when needed (never loaded whole here)."""
    dask_array = sys.modules.get("dask.array")
    zarr = sys.modules.get("zarr")
    return bool(
        (dask_array is not None and isinstance(x, dask_array.Array)) or (zarr is not None and isinstance(x, zarr.Array))
    )


def _as_array(x: Any) -> Any:
    """A read-only numpy view of ``x``, or ``x`` as a dask array when it is lazy (dask arrays are never written to)."""
    if is_lazy_array(x):
        import dask.array as da

        return x if isinstance(x, da.Array) else da.from_zarr(x)
    array = np.asarray(x).view()
    array.flags.writeable = False
    return array


def _guess_rgb(shape: tuple[int, ...]) -> bool:
    """napari's rule: a trailing axis of 3 or 4 on an array of 3 or more axes is colour."""
    return len(shape) >= 3 and shape[-1] in (3, 4)


def _vector(values: Sequence[float] | np.ndarray | None, n: int, default: float, name: str) -> tuple[float, ...]:
    if values is None:
        return (float(default),) * n
    out = np.asarray(values, dtype=float).ravel()
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise InputError(f"The {name} must be {n} finite numbers, one per image axis, but got {values!r}.")
    return tuple(float(v) for v in out)


@dataclass(frozen=True, eq=False)
class ImageData:
    """An image or volume in array axis order with its physical geometry (see the module docstring).

    Parameters
    ----------
    array
        Pixel data, ``(y, x)``, ``(z, y, x)``, optionally with a trailing colour axis.
        Stored as a read-only view; the caller's array is never modified.
    spacing
        Pixel size per spatial array axis, positive; None means all 1.
    origin
        Physical position of the first pixel, in array axis order (reversed LPS); None means 0.
    direction
        ``ndim x ndim`` matrix whose column ``a`` is the unit vector of array axis ``a``;
        None means the identity.
    rgb
        Whether the last axis of ``array`` holds RGB(A) colour channels.
    has_geometry
        False for a plain array whose geometry is only the unit default; None means
        "true when any of spacing, origin or direction is given".
    metadata
        Free-form information such as ``"path"`` and ``"modality"``.
    nifti_header
        The nibabel header an image was read with, so that writing NIfTI keeps its fields.
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    direction: np.ndarray | None = None
    rgb: bool = False
    has_geometry: bool | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    nifti_header: Any = None

    def __post_init__(self) -> None:
        array = _as_array(self.array)
        rgb = bool(self.rgb)
        if rgb and array.shape[-1:] not in ((3,), (4,)):
            raise InputError(f"A colour image needs a last axis of 3 or 4 channels, but its shape is {array.shape}.")
        n = array.ndim - rgb
        given = not (self.spacing is None and self.origin is None and self.direction is None)
        if n not in (2, 3):
            hint = f"pick one 3-D volume along the axis you want, e.g. array[0] for the first of {array.shape[0]}"
            raise InputError(
                f"Only 2-D images and 3-D volumes are supported, but this array has shape {array.shape}, which is "
                f"{n}-D; " + (f"{hint}." if n > 3 else "give at least two dimensions.")
            )
        spacing = _vector(self.spacing, n, 1.0, "spacing")
        if min(spacing) <= 0:
            raise InputError(f"The spacing must be positive, but got {spacing}.")
        direction = np.eye(n) if self.direction is None else np.array(self.direction, dtype=float)
        if direction.shape != (n, n) or not np.all(np.isfinite(direction)):
            raise InputError(f"The direction must be a finite {n}x{n} matrix, but got {self.direction!r}.")
        norms = np.linalg.norm(direction, axis=0)
        if np.any(np.abs(norms - 1) > _UNIT_TOL) or abs(np.linalg.det(direction)) < 1e-6:
            raise InputError(f"The direction matrix must have unit, independent columns, but got {direction.tolist()}.")
        direction.flags.writeable = False
        for name, value in [
            ("array", array),
            ("rgb", rgb),
            ("spacing", spacing),
            ("origin", _vector(self.origin, n, 0.0, "origin")),
            ("direction", direction),
            ("has_geometry", bool(self.has_geometry) if self.has_geometry is not None else given),
            ("metadata", dict(self.metadata)),
        ]:
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        spacing: Sequence[float] | None = None,
        origin: Sequence[float] | None = None,
        direction: np.ndarray | Sequence[Sequence[float]] | None = None,
        *,
        rgb: bool | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ImageData:
        """Wrap a numpy array, with unit spacing, zero origin and identity direction by default.

        Parameters
        ----------
        array
            Pixel data in array axis order.
        spacing, origin, direction
            Geometry in array axis order; when all three are None the result has
            ``has_geometry=False``.
        rgb
            Whether the last axis is colour.  None guesses: from ``len(spacing)`` when
            given, otherwise napari's rule (a trailing axis of 3 or 4 on 3 or more axes).
        metadata
            Copied into the result.

        Returns
        -------
        ImageData
        """
        array = array if is_lazy_array(array) else np.asarray(array)
        if rgb is None:
            rgb = array.ndim == len(spacing) + 1 if spacing is not None else _guess_rgb(array.shape)
        return cls(array, spacing, origin, direction, rgb=bool(rgb), metadata=metadata or {})

    @classmethod
    def from_affine(
        cls,
        array: np.ndarray,
        affine: np.ndarray,
        *,
        rgb: bool = False,
        has_geometry: bool = True,
        metadata: dict[str, Any] | None = None,
        nifti_header: Any = None,
    ) -> ImageData:
        """Build from an index-to-world affine in array axis order (inverse of :meth:`index_to_world_affine`).

        Parameters
        ----------
        array
            Pixel data in array axis order.
        affine
            ``(n+1) x (n+1)`` matrix mapping array indices to physical coordinates,
            both in array axis order.
        rgb, has_geometry, metadata, nifti_header
            As for the constructor.

        Returns
        -------
        ImageData
        """
        affine = np.asarray(affine, dtype=float)
        linear = affine[:-1, :-1]
        spacing = np.linalg.norm(linear, axis=0)
        if np.any(spacing == 0) or not np.all(np.isfinite(affine)):
            raise InputError("The affine maps an image axis to nothing; give an invertible affine matrix.")
        return cls(
            array,
            tuple(spacing),
            tuple(affine[:-1, -1]),
            linear / spacing,
            rgb=rgb,
            has_geometry=has_geometry,
            metadata=metadata or {},
            nifti_header=nifti_header,
        )

    def with_array(self, array: np.ndarray, *, rgb: bool | None = None) -> ImageData:
        """The same geometry, metadata and header with new pixel data of the same spatial shape.

        Parameters
        ----------
        array
            New data; it may gain or lose the colour axis (e.g. a grey fusion of a colour input).
        rgb
            Whether the last axis of ``array`` is colour; None means "has one axis more than the grid".

        Returns
        -------
        ImageData
        """
        array = array if is_lazy_array(array) else np.asarray(array)
        rgb = array.ndim == self.ndim + 1 if rgb is None else rgb
        if array.shape[: array.ndim - rgb] != self.shape:
            raise InputError(
                f"The new array's grid {array.shape[: array.ndim - rgb]} differs from the image's grid {self.shape}; "
                "resample it instead of reusing the geometry."
            )
        return ImageData(
            array, self.spacing, self.origin, self.direction, rgb, self.has_geometry, self.metadata, self.nifti_header
        )

    def slab(self, index: int, axis: int = 0) -> ImageData:
        """Slice ``index`` along spatial ``axis`` as a one-slice volume that stays where it was in space.

        Parameters
        ----------
        index
            The slice, ``0 <= index < shape[axis]``.
        axis
            A spatial array axis of this 3-D image.

        Returns
        -------
        ImageData
            Shape ``1`` along ``axis``; the origin moves to the slice, so every voxel keeps its
            physical position.  The NIfTI header is not carried over (it describes the whole grid).
        """
        if self.ndim != 3 or not 0 <= axis < 3:
            raise InputError(f"A slab is taken along axis 0, 1 or 2 of a 3-D volume, not axis {axis} of {self.ndim}-D data.")
        if not 0 <= index < self.shape[axis]:
            raise InputError(f"Slice {index} is outside the volume, which has {self.shape[axis]} slices along axis {axis}.")
        step = np.zeros(3)
        step[axis] = index
        origin = np.asarray(self.origin) + (self.direction * np.asarray(self.spacing)) @ step
        array = self.array[(slice(None),) * axis + (slice(index, index + 1),)]
        return ImageData(
            array, self.spacing, tuple(origin), self.direction, self.rgb, self.has_geometry, self.metadata, None
        )

    # ------------------------------------------------------------------ geometry
    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3), not counting a colour axis."""
        return self.array.ndim - self.rgb

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape (without the colour axis), in array axis order."""
        return self.array.shape[: self.ndim]

    def index_to_world_affine(self) -> np.ndarray:
        """The ``(ndim+1) x (ndim+1)`` matrix mapping array indices to physical coordinates (both array order).

        Returns
        -------
        numpy.ndarray
            ``[[direction @ diag(spacing), origin], [0, 1]]``.
        """
        affine = np.eye(self.ndim + 1)
        affine[:-1, :-1] = self.direction * np.asarray(self.spacing)
        affine[:-1, -1] = self.origin
        return affine

    def same_grid(self, other: ImageData, tol: float = 1e-4) -> bool:
        """Whether ``other`` samples the same points: same spatial shape, spacing, origin and direction.

        Parameters
        ----------
        other
            The image to compare with.
        tol
            Tolerance relative to the smallest spacing for spacing and origin, absolute for direction.

        Returns
        -------
        bool
        """
        if self.shape != other.shape:
            return False
        scale = tol * min(self.spacing)
        return bool(
            np.allclose(self.spacing, other.spacing, rtol=0, atol=scale)
            and np.allclose(self.origin, other.origin, rtol=0, atol=scale)
            and np.allclose(self.direction, other.direction, rtol=0, atol=tol)
        )

    # ------------------------------------------------------------------ SimpleITK
    def to_sitk(self) -> Any:
        """A ``SimpleITK.Image`` (a vector image for colour) with the same pixels and geometry.

        Returns
        -------
        SimpleITK.Image
            Spacing, origin and direction converted to SimpleITK's ``(x, y, z)`` order.
        """
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array), isVector=self.rgb)
        image.SetSpacing(self.spacing[::-1])
        image.SetOrigin(self.origin[::-1])
        image.SetDirection(self.direction[::-1, ::-1].ravel().tolist())
        return image

    @classmethod
    def from_sitk(cls, image: Any, metadata: dict[str, Any] | None = None) -> ImageData:
        """Wrap a ``SimpleITK.Image`` (scalar, or RGB/RGBA vector) with its geometry.

        Parameters
        ----------
        image
            A 2-D or 3-D SimpleITK image with 1, 3 or 4 components per pixel.
        metadata
            Copied into the result.

        Returns
        -------
        ImageData
            With ``has_geometry=True``.
        """
        import SimpleITK as sitk

        components = image.GetNumberOfComponentsPerPixel()
        if components not in (1, 3, 4):
            raise InputError(
                f"Images with {components} values per pixel are not supported; use grey, RGB or RGBA images."
            )
        n = image.GetDimension()
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(n, n)[::-1, ::-1]
        return cls(
            sitk.GetArrayFromImage(image),
            image.GetSpacing()[::-1],
            image.GetOrigin()[::-1],
            direction,
            rgb=components > 1,
            has_geometry=True,
            metadata=metadata or {},
        )

    # ------------------------------------------------------------------ napari
    def napari_geometry(self) -> dict[str, Any]:
        """Keyword arguments for a napari Image layer that place this image in physical space.

        Returns
        -------
        dict
            ``scale`` (the spacing) and ``translate`` (the origin) in array axis order when
            the direction is the identity; otherwise ``scale``, a zero ``translate`` and an
            ``affine`` ``[[direction, origin], [0, 1]]`` (napari applies the affine after
            scale and translate, and its scale must be positive, so flips need the affine too).
        """
        if np.allclose(self.direction, np.eye(self.ndim), atol=1e-9):
            return {"scale": self.spacing, "translate": self.origin}
        affine = np.eye(self.ndim + 1)
        affine[:-1, :-1] = self.direction
        affine[:-1, -1] = self.origin
        return {"scale": self.spacing, "translate": (0.0,) * self.ndim, "affine": affine}

    @classmethod
    def from_napari_geometry(
        cls,
        array: np.ndarray,
        scale: Sequence[float] | None = None,
        translate: Sequence[float] | None = None,
        affine: Any = None,
        *,
        rgb: bool | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ImageData:
        """Inverse of :meth:`napari_geometry`: the image that a napari layer with this geometry shows.

        Parameters
        ----------
        array
            The layer's data.
        scale, translate
            The layer's ``scale`` and ``translate`` (array axis order); None means the default.
        affine
            The layer's ``affine`` as a matrix or a napari ``Affine`` (its ``affine_matrix`` is used),
            applied after scale and translate.  A layer's ``rotate``/``shear`` must be folded into it.
        rgb
            Whether the last axis is colour; None means "array has one axis more than ``scale``"
            (napari's rule when ``scale`` is None).
        metadata
            Copied into the result.

        Returns
        -------
        ImageData
            ``has_geometry`` is False when scale, translate and affine are all the napari defaults.
        """
        array = array if is_lazy_array(array) else np.asarray(array)
        if rgb is None:
            rgb = array.ndim == len(scale) + 1 if scale is not None else _guess_rgb(array.shape)
        n = array.ndim - bool(rgb)
        scale_ = np.array(_vector(scale, n, 1.0, "scale"))
        translate_ = np.array(_vector(translate, n, 0.0, "translate"))
        outer = np.eye(n + 1) if affine is None else np.asarray(getattr(affine, "affine_matrix", affine), dtype=float)
        if outer.shape != (n + 1, n + 1):
            raise InputError(f"The layer's affine must be {n + 1}x{n + 1} for {n}-D data, but got shape {outer.shape}.")
        inner = np.eye(n + 1)
        inner[:-1, :-1] = np.diag(scale_)
        inner[:-1, -1] = translate_
        default = np.allclose(scale_, 1) and np.allclose(translate_, 0) and np.allclose(outer, np.eye(n + 1))
        return cls.from_affine(array, outer @ inner, rgb=bool(rgb), has_geometry=not default, metadata=metadata)
