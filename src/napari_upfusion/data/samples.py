"""Sample image pairs built from data that ships inside installed packages.

Nothing here is downloaded and nothing is read from outside the installed
``nilearn`` and ``scikit-image`` packages.  Every pair is deterministic: the
same arguments give bit-identical arrays.

Sources (files on disk inside the installed packages)
-----------------------------------------------------
* ``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``:
  the ICBM 2009a symmetric MNI152 T1 template, 1 mm isotropic, grid
  197 x 233 x 189 (x, y, z), already skull-stripped (zero outside the brain).
* ``nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz`` and
  ``..._wm_...``: the grey- and white-matter probability maps on the same grid.
* ``skimage/data/*.png`` / ``*.jpg`` (astronaut, coffee, chelsea, rocket, camera,
  motorcycle_left, ...): scikit-image's bundled sample photographs, read straight
  from the package folder (not through ``skimage.data``'s pooch fetcher).

What is real and what is simulated
----------------------------------
Only the MRI brain and the photographs are real data.  **Every functional
image (PET, SPECT), every CT, every infrared image and the whole head outside
the brain (CSF rim, skull, scalp) are simulated** by the transforms below.
They look plausible; they are not measurements and have no diagnostic meaning.

1. Head model (:func:`head_model`).  The brain mask is ``T1 > 0``.  Its
   outside distance ``d`` (mm; Euclidean distance transform on a 2 mm grid,
   trilinearly resampled to 1 mm) is mapped to a *layer coordinate* ``u``:
   layer ``k`` occupies ``k <= u < k + 1`` with, from the brain outwards,
   0 subarachnoid CSF (2.0 mm), 1 inner table of the skull (1.5 mm),
   2 diploe / marrow (3.5 mm), 3 outer table (1.5 mm), 4 muscle and galea
   (2.5 mm), 5 subcutaneous fat (4.0 mm), 6 skin (1.5 mm), 7 air.  The CSF,
   diploe, muscle and fat thicknesses vary smoothly over the head (fixed-seed
   Gaussian random fields on a 12 mm grid, smoothed by one cell and
   interpolated; standard deviations 0.6, 1.2, 1.5 and 1.2 mm).  Inside the brain, CSF is ``1 - GM - WM``.  There is no
   face, no orbit and no sinus; below the cerebellum the shell simply wraps
   the brainstem.
2. Tissue contrast (:data:`CONTRASTS`).  Each modality is a table of one value
   per tissue (GM, WM, CSF and the seven layers); a voxel's value is the
   probability-weighted mean of its tissues, with a linear ramp of a quarter
   layer between layers (partial volume).  The T1 MRI keeps the real template
   inside the brain; T2 and proton-density MRI are synthesised from the
   tissue maps (CSF bright in T2).
3. CT: Hounsfield units (GM 38, WM 27, CSF 8, cortical bone 1300, marrow 450,
   muscle 45, fat -90, skin 40, air -1000), a 0.5 mm Gaussian blur for the
   scanner's point spread, then white noise of 3 HU on the output grid.
4. PET (FDG-like glucose uptake): relative uptake GM 1.0, WM 0.28, CSF 0.02,
   muscle 0.14, marrow 0.10, skin 0.10, fat/bone 0.04, air 0; Gaussian blur of
   2.6 mm standard deviation (about 6 mm FWHM, a clinical PET resolution);
   then multiplicative, spatially correlated noise of 3 % (white noise
   smoothed by 2 mm, divided by the square root of the relative uptake, like
   counting noise); scaled to ``[0, 1]``.
5. SPECT (perfusion-like, HMPAO/ECD): GM 1.0, WM 0.40, CSF 0.05, muscle 0.28,
   skin 0.20, marrow 0.12, fat 0.10, bone 0.05; blur of 5.5 mm standard
   deviation (13 mm FWHM) and 4 % noise smoothed by 3.5 mm.
6. Infrared from a colour photograph (:func:`simulate_infrared`): a thermal
   proxy from colour and brightness.  Skin- and fur-coloured pixels (red to
   orange hues, moderate saturation) are hot; blue (sky-like) pixels are
   cold; green vegetation is lukewarm; every other surface gets a
   temperature that rises as its visible brightness falls (dark surfaces
   absorb, bright ones reflect).  Only 15 % of the fine visible texture is
   kept, the result is blurred like a low-resolution thermal camera, hot
   objects get a soft halo, and the frame gets vignetting and fixed-seed
   sensor noise.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..utils.colour import luma
from .vocabulary import ANATOMIES  # the anatomies a HeadModel can be built from (see head_model)

__all__ = [
    "ANATOMIES",
    "CONTRASTS",
    "LAYERS",
    "SKIMAGE_COLOUR_SCENES",
    "HeadModel",
    "SamplePair",
    "brain_mri_ct",
    "brain_mri_pet",
    "brain_mri_spect",
    "colin27_path",
    "head_model",
    "infrared_visible",
    "packaged_mni_paths",
    "simulate_infrared",
    "skimage_image",
    "synthesize",
]


@dataclass(frozen=True)
class SamplePair:
    """Two co-registered images of different modalities on one grid.

    ``a`` is the structural / visible image and ``b`` the other modality.
    Volumes are ``(z, y, x)`` and 2-D images ``(y, x)`` (a colour image has a
    trailing RGB axis).  ``spacing`` and ``origin`` are in mm, one value per
    spatial axis in array order; ``origin`` is the world position of the centre
    of the first voxel and the axes are not rotated (direction = identity).
    For the brain samples the world is MNI152 (RAS): axis 0 runs inferior to
    superior, axis 1 posterior to anterior, axis 2 left to right.
    """

    a: np.ndarray
    b: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    modalities: tuple[str, str]
    description: str
    units: tuple[str, str] = ("a.u.", "a.u.")
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def affine(self) -> np.ndarray:
        """The ``(n+1) x (n+1)`` index-to-world matrix, in array axis order."""
        n = len(self.spacing)
        m = np.eye(n + 1)
        m[:n, :n] = np.diag(self.spacing)
        m[:n, n] = self.origin
        return m

    def images(self):
        """``(a, b)`` as :class:`~napari_upfusion.engine.image.ImageData` with physical geometry.

        Brain volumes are converted from MNI152's RAS world to the engine's LPS
        convention (axes 1 and 2 point anterior and right, i.e. against P and L),
        so a NIfTI written from them lands in MNI space; 2-D pairs keep unit pixels.
        """
        from ..engine.image import ImageData

        if len(self.spacing) == 3:
            direction = np.diag([1.0, -1.0, -1.0])
            origin = (self.origin[0], -self.origin[1], -self.origin[2])
            geometry = {"spacing": self.spacing, "origin": origin, "direction": direction}
        else:
            geometry = {}
        return tuple(
            ImageData.from_array(array, **geometry, rgb=array.ndim == len(self.spacing) + 1,
                                 metadata={"modality": modality, "description": self.description})
            for array, modality in zip((self.a, self.b), self.modalities)
        )  # fmt: skip


# --------------------------------------------------------------------------
# Packaged sources
# --------------------------------------------------------------------------

_MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def packaged_mni_paths() -> dict[str, str]:
    """Paths of nilearn's bundled MNI152 2009a T1, GM and WM files (no download)."""
    import nilearn

    folder = os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data")
    paths = {k: os.path.join(folder, v) for k, v in _MNI_FILES.items()}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"nilearn's bundled MNI152 template is missing ({missing[0]}); reinstall nilearn>=0.10."
        )
    return paths


#: Colour photographs bundled with scikit-image that make usable visible/infrared scenes.
SKIMAGE_COLOUR_SCENES: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left")

_SKIMAGE_FILES = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "camera": "camera.png",
    "coins": "coins.png",
    "moon": "moon.png",
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "text": "text.png",
    "page": "page.png",
    "cell": "cell.png",
    "horse": "horse.png",
    "immunohistochemistry": "ihc.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
}


@functools.lru_cache(maxsize=32)
def _skimage_image_cached(name: str) -> np.ndarray:
    import skimage
    from skimage import io

    try:
        filename = _SKIMAGE_FILES[name]
    except KeyError:
        raise ValueError(f"unknown scikit-image sample {name!r}; choose one of {sorted(_SKIMAGE_FILES)}") from None
    path = os.path.join(os.path.dirname(skimage.__file__), "data", filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"scikit-image's bundled image {path} is missing; reinstall scikit-image.")
    img = io.imread(path)
    if img.dtype == bool:
        out = img.astype(np.float32)
    else:
        out = img.astype(np.float32) / float(np.iinfo(img.dtype).max)
    if out.ndim == 3 and out.shape[-1] == 4:
        out = out[..., :3]
    out.setflags(write=False)
    return out


def skimage_image(name: str) -> np.ndarray:
    """A scikit-image bundled sample as float32 in ``[0, 1]`` (grey ``(H, W)`` or RGB ``(H, W, 3)``).

    Read from the file inside the installed package; raises ``FileNotFoundError``
    rather than downloading when the file is absent.  The array is read-only.
    """
    return _skimage_image_cached(name)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma, the Y the network sees: 0.299 R + 0.587 G + 0.114 B."""
    return luma(rgb[..., 0], rgb[..., 1], rgb[..., 2]).astype(np.float32)


# --------------------------------------------------------------------------
# Head model
# --------------------------------------------------------------------------

#: Layers outside the brain, in order from the brain outwards (index = layer coordinate).
LAYERS: tuple[str, ...] = ("csf", "inner_table", "diploe", "outer_table", "muscle", "fat", "skin", "air")

#: Mean layer thickness in mm and the standard deviation of its smooth variation.
_LAYER_MM = ((2.0, 0.6), (1.5, 0.0), (3.5, 1.2), (1.5, 0.0), (2.5, 1.5), (4.0, 1.2), (1.5, 0.0))

#: Tissue values per modality: brain tissues ``gm``, ``wm``, ``csf`` and one value per entry of :data:`LAYERS`.
CONTRASTS: dict[str, dict[str, float]] = {
    # T1 keeps the real template inside the brain; these are in template units (WM ~ 0.87).
    "T1": {
        "gm": 0.65,
        "wm": 0.87,
        "csf": 0.30,
        "inner_table": 0.03,
        "diploe": 0.55,
        "outer_table": 0.03,
        "muscle": 0.40,
        "fat": 0.95,
        "skin": 0.50,
        "air": 0.0,
    },
    "T2": {
        "gm": 0.52,
        "wm": 0.36,
        "csf": 1.0,
        "inner_table": 0.03,
        "diploe": 0.20,
        "outer_table": 0.03,
        "muscle": 0.22,
        "fat": 0.70,
        "skin": 0.45,
        "air": 0.0,
    },
    "PD": {
        "gm": 0.78,
        "wm": 0.62,
        "csf": 0.85,
        "inner_table": 0.05,
        "diploe": 0.45,
        "outer_table": 0.05,
        "muscle": 0.45,
        "fat": 0.90,
        "skin": 0.60,
        "air": 0.0,
    },
    "CT": {
        "gm": 38.0,
        "wm": 27.0,
        "csf": 8.0,
        "inner_table": 1300.0,
        "diploe": 450.0,
        "outer_table": 1300.0,
        "muscle": 45.0,
        "fat": -90.0,
        "skin": 40.0,
        "air": -1000.0,
    },
    "PET": {
        "gm": 1.0,
        "wm": 0.28,
        "csf": 0.02,
        "inner_table": 0.04,
        "diploe": 0.10,
        "outer_table": 0.04,
        "muscle": 0.14,
        "fat": 0.04,
        "skin": 0.10,
        "air": 0.0,
    },
    "SPECT": {
        "gm": 1.0,
        "wm": 0.40,
        "csf": 0.05,
        "inner_table": 0.05,
        "diploe": 0.12,
        "outer_table": 0.05,
        "muscle": 0.28,
        "fat": 0.10,
        "skin": 0.20,
        "air": 0.0,
    },
}

_RAMP = 0.125  # half width of the partial-volume ramp between layers, in layer units


@dataclass(frozen=True)
class HeadModel:
    """Tissue maps of the simulated head on the template's 1 mm grid, axes ``(z, y, x)``.

    ``t1``, ``gm``, ``wm`` are the packaged template and probability maps
    (uint8, 255 = 1).  ``brain`` is ``t1 > 0``.  ``layer`` is the layer
    coordinate times 32 (uint8; 0 inside the brain, 255 = air).  ``pet`` and
    ``spect`` are the blurred, noise-free functional volumes (float16, max 1)
    that the 3-D samples and the training-data generator start from.  ``origin`` is the world (mm) position
    of voxel ``(0, 0, 0)``; ``bbox`` the index ranges holding the head.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    layer: np.ndarray
    pet: np.ndarray
    spect: np.ndarray
    origin: tuple[float, float, float]
    bbox: tuple[tuple[int, int], ...]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def tissues(self, index: tuple | slice | int = ...) -> dict[str, np.ndarray]:
        """The tissue maps of a sub-array: float32 ``t1``, ``gm``, ``wm``; bool ``brain``; uint8 ``layer``.

        ``index`` is any numpy index into the ``(z, y, x)`` arrays (a slice
        index gives 2-D maps, the default the whole volume).
        """
        scale = np.float32(1 / 255)
        return {
            "t1": self.t1[index].astype(np.float32) * scale,
            "gm": self.gm[index].astype(np.float32) * scale,
            "wm": self.wm[index].astype(np.float32) * scale,
            "brain": self.brain[index],
            "layer": self.layer[index],
        }


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian random field with unit standard deviation and correlation ``sigma`` (grid units)."""
    f = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return f / max(float(f.std()), 1e-6)


def _layer_coordinate(d_mm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map outside distance (mm) to the layer coordinate ``u`` with smoothly varying thicknesses."""
    coarse = tuple(max(2, n // 6) for n in d_mm.shape)  # fields on a 12 mm grid if d is on 2 mm
    edges = [np.zeros_like(d_mm)]
    for mean, sd in _LAYER_MM:
        if sd:
            f = _smooth_field(coarse, rng, 1.0)
            f = ndi.zoom(f, [n / c for n, c in zip(d_mm.shape, coarse)], order=1, grid_mode=True, mode="nearest")
            thick = np.maximum(mean + sd * f, 0.8)
        else:
            thick = np.full_like(d_mm, mean)
        edges.append(edges[-1] + thick)
    u = np.full_like(d_mm, float(len(_LAYER_MM)))
    for k in range(len(_LAYER_MM) - 1, -1, -1):
        inside = d_mm < edges[k + 1]
        u[inside] = (k + (d_mm - edges[k]) / (edges[k + 1] - edges[k]))[inside]
    u += (d_mm >= edges[-1]) * (d_mm - edges[-1]) / 1.0  # air: keep rising
    return u



#: Where Debian's ``mricron-data`` package puts the Colin27 files; ``$UPFUSION_MRICRON_TEMPLATES`` overrides it.
MRICRON_TEMPLATES = "/usr/share/mricron/templates"

#: Class centres of the Colin27 brain's T1 intensities (uint8 of ``ch2bet.nii.gz``): CSF, grey and white
#: matter (3-means of the brain voxels gives 52, 84, 109; CSF is set at the ventricles' level).
_COLIN27_CENTRES = (35.0, 84.0, 112.0)


def colin27_path() -> str:
    """Path of the Colin27 brain-extracted T1 (``ch2bet.nii.gz``) of Debian's ``mricron-data`` (no download)."""
    folder = os.environ.get("UPFUSION_MRICRON_TEMPLATES") or MRICRON_TEMPLATES
    path = os.path.join(folder, "ch2bet.nii.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"The Colin27 brain ({path}) is missing; install Debian's mricron-data package "
            "(`sudo apt-get install mricron-data`) or set UPFUSION_MRICRON_TEMPLATES to a folder holding ch2bet.nii.gz."
        )
    return path


def _uint8_volume(image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A 1 mm RAS NIfTI as a ``(z, y, x)`` uint8 array and the world position of voxel 0 in that order."""
    affine = image.affine
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise RuntimeError("unexpected template affine; expected 1 mm RAS without rotation")
    # nibabel arrays are (x, y, z) in RAS; the project's arrays are (z, y, x).
    array = np.ascontiguousarray(np.asarray(image.dataobj, dtype=np.uint8).transpose(2, 1, 0))
    return array, (float(affine[2, 3]), float(affine[1, 3]), float(affine[0, 3]))


def _mni152_brain() -> tuple[dict[str, np.ndarray], tuple[float, float, float]]:
    import nibabel as nib

    loaded = {k: _uint8_volume(nib.load(p)) for k, p in packaged_mni_paths().items()}
    return {k: v[0] for k, v in loaded.items()}, loaded["t1"][1]


def _colin27_brain() -> tuple[dict[str, np.ndarray], tuple[float, float, float]]:
    """Colin27's T1 brain with grey/white-matter fractions from its intensities (piecewise-linear memberships).

    Between the CSF, GM and WM class centres of :data:`_COLIN27_CENTRES` a voxel
    is a linear mix of the two neighbouring classes; the T1 is rescaled so that
    white matter sits at the MNI152 template's level (0.87).
    """
    import nibabel as nib

    t1_raw, origin = _uint8_volume(nib.load(colin27_path()))
    c, g, w = _COLIN27_CENTRES
    x = t1_raw.astype(np.float32)
    wm = np.clip((x - g) / (w - g), 0.0, 1.0)
    gm = np.where(x < g, np.clip((x - c) / (g - c), 0.0, 1.0), 1.0 - wm)
    brain = t1_raw > 0
    as_u8 = {"gm": gm, "wm": wm, "t1": np.minimum(x * (0.87 / w), 1.0)}
    arr = {k: np.where(brain, np.rint(v * 255), 0).astype(np.uint8) for k, v in as_u8.items()}
    arr["t1"][brain & (arr["t1"] == 0)] = 1  # the brain mask is t1 > 0
    # Colin27's grid ends a few mm outside the brain; pad it so the simulated skull and scalp fit.
    pad = 20
    arr = {k: np.pad(v, pad) for k, v in arr.items()}
    return arr, tuple(o - pad for o in origin)


@functools.lru_cache(maxsize=2)
def head_model(anatomy: str = "mni152") -> HeadModel:
    """Build (once per process and anatomy, a few seconds) the simulated head on a 1 mm grid.

    ``anatomy`` is ``"mni152"`` (nilearn's average template and its tissue maps)
    or ``"colin27"`` (the single-subject Colin27 brain of Debian's ``mricron-data``,
    tissue fractions from its intensities: real single-subject folding and texture).
    See the module docstring, points 1, 4 and 5, for what is simulated.
    """
    if anatomy not in ANATOMIES:
        raise ValueError(f"unknown anatomy {anatomy!r}; choose one of {ANATOMIES}")
    arr, origin = _mni152_brain() if anatomy == "mni152" else _colin27_brain()
    brain = arr["t1"] > 0
    shape = brain.shape

    rng = np.random.default_rng(20240521)
    # Outside distance on a 2 mm grid, then the layer coordinate there, then trilinear to 1 mm.
    d2 = ndi.distance_transform_edt(~brain[::2, ::2, ::2]).astype(np.float32) * 2.0
    u2 = _layer_coordinate(np.maximum(d2 - 1.0, 0.0), rng)
    u2[d2 == 0] = 0.0
    u = ndi.affine_transform(u2, [0.5, 0.5, 0.5], output_shape=shape, order=1, mode="nearest")
    u[brain] = 0.0
    u[~brain] = np.maximum(u[~brain], 0.02)
    layer = np.clip(np.rint(u * 32), 0, 255).astype(np.uint8)

    head = (layer < 7 * 32) | brain
    idx = [np.nonzero(head.any(axis=tuple(j for j in range(3) if j != i)))[0] for i in range(3)]
    bbox = tuple((int(i[0]), int(i[-1]) + 1) for i in idx)

    model = HeadModel(arr["t1"], arr["gm"], arr["wm"], brain, layer, np.empty(0), np.empty(0), origin, bbox)
    tissue = model.tissues()
    pet = ndi.gaussian_filter(synthesize(tissue, "PET"), 2.6, truncate=3.0)
    spect = ndi.gaussian_filter(synthesize(tissue, "SPECT"), 5.5, truncate=3.0)
    pet = (pet / pet.max()).astype(np.float16)
    spect = (spect / spect.max()).astype(np.float16)
    for a in (arr["t1"], arr["gm"], arr["wm"], brain, layer, pet, spect):
        a.setflags(write=False)
    return HeadModel(arr["t1"], arr["gm"], arr["wm"], brain, layer, pet, spect, origin, bbox)


def _layer_profile(layer: np.ndarray, values: list[float]) -> np.ndarray:
    """Piecewise-constant value per layer with a short linear ramp across each boundary.

    ``layer`` is the uint8 layer code (layer coordinate times 32); the profile
    is tabulated for the 256 codes and looked up.
    """
    xp, fp = [0.0], [values[0]]
    for k in range(1, len(values)):
        xp += [k - _RAMP, k + _RAMP]
        fp += [values[k - 1], values[k]]
    xp.append(float(len(values)) + 1.0)
    fp.append(values[-1])
    lut = np.interp(np.arange(256, dtype=np.float64) / 32.0, xp, fp).astype(np.float32)
    return lut[layer]


def synthesize(tissue: Mapping[str, np.ndarray], modality: str, table: Mapping[str, float] | None = None) -> np.ndarray:
    """Image of ``modality`` (a key of :data:`CONTRASTS`) from tissue maps (see :meth:`HeadModel.tissues`).

    ``table`` overrides the tissue values (the training generator jitters
    them).  Works on 2-D slices and 3-D volumes alike.  For ``"T1"`` the brain
    is the real template; for every other modality it is
    ``GM * v_gm + WM * v_wm + (1 - GM - WM) * v_csf``.  No blur or noise is
    added here.
    """
    v = dict(CONTRASTS[modality])
    if table:
        v.update(table)
    outside = _layer_profile(tissue["layer"], [v[name] for name in LAYERS])
    gm, wm = tissue["gm"], tissue["wm"]
    if modality == "T1":
        inside = tissue["t1"]
    else:
        csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
        inside = gm * v["gm"] + wm * v["wm"] + csf * v["csf"]
    return np.where(tissue["brain"], inside, outside).astype(np.float32)


# --------------------------------------------------------------------------
# 3-D brain samples
# --------------------------------------------------------------------------


def _block_mean(vol: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return vol.astype(np.float32)
    z, y, x = (n // f * f for n in vol.shape)
    v = vol[:z, :y, :x].astype(np.float32)
    return v.reshape(z // f, f, y // f, f, x // f, f).mean(axis=(1, 3, 5))


def _head_region(model: HeadModel, f: int) -> tuple[tuple[slice, ...], tuple[float, ...]]:
    """Index of the head's bounding box (4 mm margin, sizes multiple of ``f``) and the output origin."""
    sl, origin = [], []
    for (lo, hi), n, o in zip(model.bbox, model.brain.shape, model.origin):
        lo, hi = max(lo - 4, 0), min(hi + 4, n)
        hi = lo + (hi - lo) // f * f
        sl.append(slice(lo, hi))
        origin.append(o + lo + (f - 1) / 2.0)
    return tuple(sl), tuple(origin)


def _check_voxel(voxel_mm: int) -> int:
    if voxel_mm not in (1, 2, 3, 4):
        raise ValueError(f"voxel_mm must be 1, 2, 3 or 4 (mm), not {voxel_mm!r}")
    return int(voxel_mm)


@functools.lru_cache(maxsize=16)
def _noiseless(modality: str, f: int, head: bool = True) -> np.ndarray:
    """The noise-free ``modality`` volume of the head, block-averaged to ``f`` mm (read-only, cached)."""
    model = head_model()
    region, _ = _head_region(model, f)
    if modality == "MRI":
        tissue = model.tissues(region)
        vol = np.clip(_block_mean(synthesize(tissue, "T1") if head else tissue["t1"], f), 0.0, 1.0)
    elif modality == "CT":
        vol = _block_mean(ndi.gaussian_filter(synthesize(model.tissues(region), "CT"), 0.5, truncate=3.0), f)
    else:  # the head model's PET / SPECT, already blurred on the 1 mm grid
        vol = _block_mean(model.pet[region] if modality == "PET" else model.spect[region], f)
    vol.setflags(write=False)
    return vol


def _functional(modality: str, noise: float, noise_mm: float, voxel_mm: int, seed: int) -> np.ndarray:
    vol = _noiseless(modality, voxel_mm)
    rng = np.random.default_rng(seed)
    n = ndi.gaussian_filter(rng.standard_normal(vol.shape).astype(np.float32), noise_mm / voxel_mm)
    n /= max(float(n.std()), 1e-6)
    vol = vol * (1.0 + noise * n / np.sqrt(np.maximum(vol / vol.max(), 0.05)))
    vol = np.clip(vol, 0.0, None)
    return (vol / np.percentile(vol, 99.95)).clip(0.0, 1.0).astype(np.float32)


def brain_mri_pet(voxel_mm: int = 2, seed: int = 0, head: bool = True) -> SamplePair:
    """A 3-D T1 MRI and a **simulated** FDG-PET-like volume, aligned, ``(z, y, x)`` float32.

    The MRI is nilearn's bundled MNI152 2009a T1 template (values / 255, in
    ``[0, 1]``); with ``head=True`` the simulated CSF rim, skull and scalp of
    :func:`head_model` are drawn around the real brain (the template itself is
    skull-stripped).  The PET is simulated from the bundled grey/white-matter
    probability maps (module docstring, point 4): high in grey matter, about a
    quarter of that in white matter, near zero in CSF and air, 6 mm FWHM, 3 %
    noise correlated over 2 mm, drawn from ``seed``; scaled to ``[0, 1]``.  Both are
    block-averaged to ``voxel_mm`` (default 2 mm: 88 x 111 x 97 voxels, ``(z, y, x)``)
    and cropped to the head.
    """
    f = _check_voxel(voxel_mm)
    origin = _head_region(head_model(), f)[1]
    mri = np.array(_noiseless("MRI", f, head))
    pet = _functional("PET", 0.03, 2.0, f, seed)
    return SamplePair(
        mri,
        pet,
        (float(f),) * 3,
        origin,
        ("MRI", "PET"),
        "MNI152 2009a T1 template (nilearn, real) with a simulated FDG-PET-like volume "
        f"from its GM/WM maps (6 mm FWHM, 3 % noise, seed {seed}); {'simulated skull and scalp; ' if head else ''}"
        f"{f} mm voxels, MNI152 world, (z, y, x).",
        ("a.u.", "relative uptake"),
    )


def brain_mri_spect(voxel_mm: int = 2, seed: int = 0, head: bool = True) -> SamplePair:
    """A 3-D T1 MRI and a **simulated** perfusion-SPECT-like volume (13 mm FWHM, 4 % noise).

    Same MRI and geometry as :func:`brain_mri_pet`; the SPECT follows the
    module docstring, point 5.
    """
    f = _check_voxel(voxel_mm)
    origin = _head_region(head_model(), f)[1]
    mri = np.array(_noiseless("MRI", f, head))
    spect = _functional("SPECT", 0.04, 3.5, f, seed)
    return SamplePair(
        mri,
        spect,
        (float(f),) * 3,
        origin,
        ("MRI", "SPECT"),
        "MNI152 2009a T1 template (nilearn, real) with a simulated perfusion-SPECT-like volume "
        f"(13 mm FWHM, 4 % noise, seed {seed}); {'simulated skull and scalp; ' if head else ''}"
        f"{f} mm voxels, MNI152 world, (z, y, x).",
        ("a.u.", "relative perfusion"),
    )


def brain_mri_ct(voxel_mm: int = 2, seed: int = 0) -> SamplePair:
    """A 3-D T1 MRI and a **simulated** head CT in Hounsfield units, aligned, ``(z, y, x)`` float32.

    The MRI is the real MNI152 T1 brain inside the simulated CSF rim, skull
    (dark) and scalp (fat bright) of :func:`head_model`.  The CT is the same
    head in Hounsfield units (module docstring, point 3): bright bone shell
    (1300 HU tables, 450 HU marrow), soft tissue 27 to 45 HU, fat -90 HU, air
    -1000 HU; 0.5 mm blur, block-averaged to ``voxel_mm``, white noise of 3 HU
    from ``seed``.  View it with a brain window (level 40, width 80) or a bone
    window (level 400, width 1800).
    """
    f = _check_voxel(voxel_mm)
    origin = _head_region(head_model(), f)[1]
    mri = np.array(_noiseless("MRI", f, True))
    ct = _noiseless("CT", f)
    rng = np.random.default_rng(seed)
    ct = (ct + 3.0 * rng.standard_normal(ct.shape).astype(np.float32)).astype(np.float32)
    return SamplePair(
        mri,
        ct,
        (float(f),) * 3,
        origin,
        ("MRI", "CT"),
        "MNI152 2009a T1 template (nilearn, real brain) inside a simulated skull and scalp, with a "
        f"simulated CT of the same head in Hounsfield units (3 HU noise, seed {seed}); {f} mm voxels, "
        "MNI152 world, (z, y, x).",
        ("a.u.", "HU"),
    )


# --------------------------------------------------------------------------
# Infrared / visible
# --------------------------------------------------------------------------


def _hue_window(h: np.ndarray, lo: float, hi: float, soft: float = 0.03) -> np.ndarray:
    """Soft indicator of hue in ``[lo, hi]`` (hue in turns, wrapping at 1)."""
    centre, half = (lo + hi) / 2.0, (hi - lo) / 2.0
    dist = np.abs(((h - centre + 0.5) % 1.0) - 0.5)
    return np.clip((half + soft - dist) / (2 * soft), 0.0, 1.0)


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def thermal_materials(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Soft material masks of a colour photograph used by :func:`simulate_infrared`.

    Returns float32 maps in ``[0, 1]``: ``luma`` (Y), ``warm`` (skin/fur-like:
    hue 0.035-0.11 turns, saturation 0.15-0.6, value above 0.4), ``sky``
    (blue hue 0.52-0.75 with saturation above 0.2 and value above 0.2),
    ``vegetation`` (hue 0.17-0.45, saturated) and ``detail`` (Y minus
    its 3-pixel Gaussian blur).  Masks are smoothed by 1.5 pixels.
    """
    from skimage.color import rgb2hsv

    rgb = np.asarray(rgb, dtype=np.float32)
    hsv = rgb2hsv(rgb).astype(np.float32)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    y = _luma(rgb)
    warm = _hue_window(h, 0.035, 0.11, 0.015) * _ramp(s, 0.12, 0.2) * (1 - _ramp(s, 0.55, 0.65)) * _ramp(v, 0.35, 0.45)
    sky = _hue_window(h, 0.52, 0.75) * _ramp(s, 0.15, 0.3) * _ramp(v, 0.15, 0.3)
    veg = _hue_window(h, 0.17, 0.45) * _ramp(s, 0.15, 0.3) * _ramp(v, 0.08, 0.2)
    smooth = lambda m: ndi.gaussian_filter(m.astype(np.float32), 1.5)
    return {
        "luma": y,
        "warm": smooth(warm),
        "sky": smooth(sky),
        "vegetation": smooth(veg),
        "detail": y - ndi.gaussian_filter(y, 3.0),
    }


def simulate_infrared(
    rgb: np.ndarray | None,
    seed: int = 0,
    *,
    hot: float = 0.95,
    cold: float = 0.08,
    vegetation: float = 0.5,
    detail: float = 0.15,
    blur: float = 1.2,
    noise: float = 0.012,
    materials: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """A **simulated** long-wave infrared image of a colour photograph, float32 ``(H, W)`` in ``[0, 1]``.

    Apparent temperature per pixel (module docstring, point 6)::

        other = 0.35 + 0.3 * (1 - Y_blur)       # dark surfaces absorb, bright ones reflect
        T = other * (1 - warm - sky - veg) + hot * warm + cold * sky + vegetation * veg
        T = T + detail * (Y - Y_blur)           # 15 % of the visible fine texture
        T = blur(T, blur) + 0.25 * blur(hot * warm, 6)   # optics and halo around hot objects
        T = T * vignetting + noise              # fixed-seed sensor noise

    then stretched to ``[0, 1]`` between its 0.5th and 99.8th percentiles.
    ``materials`` may pass precomputed :func:`thermal_materials` of ``rgb``
    (then ``rgb`` is not read and may be ``None``).
    """
    if materials is None and rgb is None:
        raise ValueError("simulate_infrared needs an RGB image or its thermal_materials")
    m = dict(materials) if materials is not None else thermal_materials(rgb)
    y = m["luma"]
    warm, sky, veg = m["warm"], m["sky"], m["vegetation"]
    total = np.maximum(warm + sky + veg, 1.0)
    warm, sky, veg = warm / total, sky / total, veg / total
    rest = 1.0 - warm - sky - veg
    other = 0.35 + 0.3 * (1.0 - ndi.gaussian_filter(y, 4.0))
    t = other * rest + hot * warm + cold * sky + vegetation * veg + detail * m["detail"]
    t = ndi.gaussian_filter(t, blur) + 0.25 * ndi.gaussian_filter(hot * warm, 6.0)
    hh, ww = t.shape
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
    r2 = ((yy - hh / 2) / hh) ** 2 + ((xx - ww / 2) / ww) ** 2
    t = t * (1.0 - 0.35 * r2)
    rng = np.random.default_rng(seed)
    t = t + noise * rng.standard_normal(t.shape).astype(np.float32)
    lo, hi = np.percentile(t, [0.5, 99.8])
    return np.clip((t - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def infrared_visible(image: str = "astronaut", seed: int = 0) -> SamplePair:
    """A colour visible photograph and a **simulated** infrared image of the same scene, 2-D.

    ``a`` is the scikit-image bundled photograph ``image`` (one of
    :data:`SKIMAGE_COLOUR_SCENES`) as float32 RGB ``(H, W, 3)`` in ``[0, 1]``;
    ``b`` is :func:`simulate_infrared` of it, float32 ``(H, W)`` in ``[0, 1]``
    (hot skin and fur, cold sky, lukewarm vegetation, low texture, blur,
    halo, vignetting, sensor noise from ``seed``).  Pixel spacing is 1 (unit:
    pixel), origin 0.
    """
    if image not in SKIMAGE_COLOUR_SCENES:
        raise ValueError(f"image must be one of {SKIMAGE_COLOUR_SCENES}, not {image!r}")
    rgb = np.array(skimage_image(image), dtype=np.float32)
    ir = simulate_infrared(rgb, seed)
    return SamplePair(
        rgb,
        ir,
        (1.0, 1.0),
        (0.0, 0.0),
        ("VIS", "IR"),
        f"scikit-image '{image}' photograph (real, visible RGB) with a simulated infrared image "
        f"(thermal proxy from colour and brightness, seed {seed}).",
        ("RGB", "a.u."),
    )
