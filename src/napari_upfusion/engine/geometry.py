"""Putting the second image on the first one's grid: resampling and rigid registration (SimpleITK).

Transforms are ``SimpleITK.Transform`` objects in SimpleITK's own convention:
they map points of the *fixed/reference* physical space to the *moving* one, in
LPS millimetres with SimpleITK's ``(x, y, z)`` coordinate order (not the reversed
array order that :class:`~napari_upfusion.engine.image.ImageData` uses).

Outside the moving image's field of view, resampled pixels get the moving image's
minimum (per colour channel) unless a ``fill`` value is given: that is air for
CT, zero uptake for PET and the background for images scaled to ``[0, 1]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import InputError
from .image import ImageData

__all__ = ["INTERPOLATIONS", "match_grids", "register_rigid", "resample_to"]

INTERPOLATIONS: tuple[str, ...] = ("linear", "nearest", "bspline")
_SHRINK = [4, 2, 1]  # registration pyramid
_SAMPLES = [5_000, 10_000, 20_000]  # metric samples per registration level


def _channels(image: ImageData) -> list[np.ndarray]:
    return [image.array[..., c] for c in range(image.array.shape[-1])] if image.rgb else [image.array]


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Interpolated values back in ``dtype``: rounded and clipped to its range for integers."""
    if dtype == bool:
        return values > 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def _check_pair(a: ImageData, b: ImageData) -> None:
    if a.ndim != b.ndim:
        raise InputError(f"The images are {a.ndim}-D and {b.ndim}-D; give two 2-D images or two 3-D volumes.")


def resample_to(
    moving: ImageData,
    reference: ImageData,
    interpolation: str = "linear",
    transform: Any = None,
    fill: float | None = None,
) -> ImageData:
    """Resample ``moving`` onto the grid (shape, spacing, origin, direction) of ``reference``.

    Parameters
    ----------
    moving
        The image to resample, grey or colour (each channel is resampled on its own).
    reference
        The image whose grid the result takes; its pixels are not used.
    interpolation
        ``"linear"``, ``"nearest"`` or ``"bspline"`` (cubic).
    transform
        Optional ``SimpleITK.Transform`` from reference to moving physical space, such
        as the result of :func:`register_rigid`; None means the identity.
    fill
        Value outside ``moving``'s field of view; None means the minimum of ``moving``
        (per channel).

    Returns
    -------
    ImageData
        A new image on ``reference``'s grid with ``moving``'s data type (integers are
        rounded and clipped), colour flag, metadata and NIfTI header.
    """
    import SimpleITK as sitk

    _check_pair(moving, reference)
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"Unknown interpolation {interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}.")
    method = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}
    grid = ImageData(np.zeros(reference.shape, np.uint8), reference.spacing, reference.origin, reference.direction)
    target = grid.to_sitk()
    work = np.result_type(moving.array.dtype, np.float32)  # exact for 8/16-bit integers, float64 beyond
    transform = sitk.Transform(moving.ndim, sitk.sitkIdentity) if transform is None else transform
    out = []
    for channel in _channels(moving):
        value = (float(channel.min()) if channel.size else 0.0) if fill is None else float(fill)
        source = moving.with_array(channel.astype(work), rgb=False).to_sitk()
        result = sitk.Resample(source, target, transform, method[interpolation], value)
        out.append(_cast_like(sitk.GetArrayFromImage(result), moving.array.dtype))
    return ImageData(
        np.stack(out, axis=-1) if moving.rgb else out[0],
        reference.spacing,
        reference.origin,
        reference.direction,
        rgb=moving.rgb,
        has_geometry=reference.has_geometry,
        metadata=moving.metadata,
        nifti_header=moving.nifti_header,
    )


def _grey_sitk(image: ImageData) -> Any:
    grey = image.array.mean(axis=-1) if image.rgb else image.array
    if grey.size == 0 or np.ptp(grey) == 0:
        raise InputError("Cannot register a constant image; check that both inputs hold the intended data.")
    return image.with_array(grey.astype(np.float32), rgb=False).to_sitk()


def register_rigid(fixed: ImageData, moving: ImageData, *, seed: int = 1) -> Any:
    """Rigidly register ``moving`` to ``fixed`` with Mattes mutual information.

    A rotation and translation (Euler transform, started from the images' centres)
    is found in three resolution levels (shrink 4, 2, 1; smoothing 2, 1, 0 pixels)
    with regular-step gradient descent on 5,000, 10,000 and 20,000 randomly drawn
    pixels (a fixed seed makes it repeatable), so the time hardly grows with the
    image size: about 4-6 s for 128^3 volumes on two busy CPU cores.  Colour images
    are registered through their channel mean.

    Parameters
    ----------
    fixed
        The image that stays in place (the reference grid).
    moving
        The image to align to ``fixed``; both need physical geometry for a meaningful result.
    seed
        Seed of the metric's random sampling, for repeatable results.

    Returns
    -------
    SimpleITK.Transform
        An ``Euler2DTransform`` or ``Euler3DTransform`` mapping points of ``fixed``'s
        physical space to ``moving``'s (SimpleITK convention), ready for :func:`resample_to`.
    """
    import SimpleITK as sitk

    _check_pair(fixed, moving)
    fixed_image, moving_image = _grey_sitk(fixed), _grey_sitk(moving)
    transform = sitk.CenteredTransformInitializer(
        fixed_image,
        moving_image,
        sitk.Euler3DTransform() if fixed.ndim == 3 else sitk.Euler2DTransform(),
        sitk.CenteredTransformInitializerFilter.GEOMETRY,
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    voxels = [np.prod(np.ceil(np.divide(fixed.shape, shrink))) for shrink in _SHRINK]
    method.SetMetricSamplingPercentagePerLevel([min(1.0, k / v) for k, v in zip(_SAMPLES, voxels)], seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=100, gradientMagnitudeTolerance=1e-8
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(_SHRINK)
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SetInitialTransform(transform, inPlace=True)
    try:
        method.Execute(fixed_image, moving_image)
    except RuntimeError as error:
        raise InputError(
            "Rigid registration failed, most likely because the images do not overlap; "
            "check that both show the same region, or align them beforehand."
        ) from error
    return transform


def match_grids(a: ImageData, b: ImageData, register: bool = False, interpolation: str = "linear") -> ImageData:
    """Return ``b`` on ``a``'s grid, ready to be fused with ``a`` pixel by pixel.

    - Both have physical geometry (``has_geometry``): ``b`` itself when the grids
      already agree (:meth:`ImageData.same_grid`), otherwise ``b`` resampled onto
      ``a``'s grid.
    - Either lacks geometry (a plain array, PNG or TIFF): the pixels are taken to be
      co-registered when the spatial shapes agree, and ``b`` is returned with ``a``'s
      geometry; different shapes raise :class:`InputError`, since there is nothing to
      resample with.
    - ``register=True`` first rigidly registers ``b`` to ``a`` (:func:`register_rigid`)
      and always resamples, even when the grids agree.

    Parameters
    ----------
    a
        The reference image.
    b
        The image to bring onto ``a``'s grid.
    register
        Whether to rigidly register ``b`` to ``a`` first.
    interpolation
        Passed to :func:`resample_to`.

    Returns
    -------
    ImageData
    """
    _check_pair(a, b)
    if not (a.has_geometry and b.has_geometry):
        if a.shape != b.shape:
            which = "neither image carries" if not (a.has_geometry or b.has_geometry) else "one image lacks"
            raise InputError(
                f"The images' shapes differ ({a.shape} and {b.shape}) and {which} physical geometry; "
                "give files that carry it (e.g. NIfTI) or resample one onto the other first."
            )
        b = dataclasses.replace(
            b, spacing=a.spacing, origin=a.origin, direction=a.direction, has_geometry=a.has_geometry
        )
    if register:
        return resample_to(b, a, interpolation, register_rigid(a, b))
    return b if b.same_grid(a) else resample_to(b, a, interpolation)
