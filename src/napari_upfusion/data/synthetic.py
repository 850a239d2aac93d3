"""Random, reproducible training pairs for UP-Fusion, built only from packaged data.

Every pair is made from the same packaged sources as :mod:`napari_upfusion.data.samples`
(nilearn's bundled MNI152 template and tissue maps, scikit-image's bundled
photographs); nothing is downloaded and no evaluation image is used.  The
second modality of every medical pair, the infrared image of every IR-VIS pair
and both degraded images of a generic pair are **simulated**.

Kinds (``a`` first, ``b`` second; both float32 ``(size, size)`` in ``[0, 1]``,
quantised to multiples of 1/255 like the 8-bit images the network sees)
--------------------------------------------------------------------------------
``"MRI-CT"``
    ``a``: a slice of the simulated head MRI (T2-like with bright CSF 50 %,
    T1 with the real template brain 30 %, proton density 20 %; tissue values
    jittered by +-15 %, tissues outside the brain modulated by a smooth +-20 %
    random field; linear bias field of up to +-15 %; Rician-like noise of
    0.3-2 %).  ``b``: the same slice
    of the simulated CT in a brain window (level 30-50 HU, width 70-140 HU; 15 %
    wider windows), bone saturated white, 2-6 HU noise, and in 40 % of pairs a
    head-rest arc below the head, as in clinical CT.
``"MRI-PET"``
    ``a`` as above.  ``b``: the simulated FDG uptake (6 mm FWHM plus up to
    1.5 px extra blur, 1-5 % correlated noise), scaled so that the slice's
    99.5th percentile is 0.65-1.0 (0.8-1.2 for the atlas curve, whose top is
    rarely reached), passed through a display
    curve: linear grey, the luma of the "hot" colour map, or the luma of the
    purple-orange-white pseudo-colour used for SPECT/PET in the Harvard atlas.
``"MRI-SPECT"``
    ``b``: the simulated perfusion SPECT (13 mm FWHM), mostly through the
    pseudo-colour luma curve, so the brain is a smooth plateau near 0.5 with
    darker ventricles and a dim halo, as the Y channel of real SPECT.
``"IR-VIS"``
    A crop of a scikit-image photograph.  ``a``: its luma, in 60 % of pairs
    degraded to a night scene (gamma 1-2, gain 0.35-1, noise); ``b``: the
    thermal proxy of :func:`napari_upfusion.data.samples.simulate_infrared` with
    jittered parameters.  In 60 % of pairs one to three procedural people
    (head, torso, arms, legs) are added, hot and bright in ``b``, darker and
    faint (30-90 % opaque) in ``a`` (they enter the thermal proxy as warm material, so they get its
    blur and halo); in 25 % small lamps, bright in both.  Scenes stay upright
    and are mirrored left-right in half of the pairs.
``"generic"``
    Two differently degraded versions of one scikit-image picture (photos and
    textures): ``a`` blurred (2-4 px) with low contrast and bright blob
    targets; ``b`` sharp, detail-boosted, with noise and no targets.  They
    teach keeping fine detail from one input and bright objects from the other.

Slices are taken at random along the three axes (axial 60 %, coronal and
sagittal 20 % each), displayed with anterior / superior up.  Each pair either
shows the whole head at 60-90 % of the frame (35 %) or a crop at 0.8-1.6 mm per
pixel (the real atlas slices are about 1 mm per pixel); both with a rotation of up to 12 degrees.  Every pair is then flipped
and/or turned by a multiple of 90 degrees (50 % of pairs keep their
orientation; IR-VIS scenes stay upright), and each image gets its own random gamma (0.75-1.35, half of the
pairs).

Pair ``i`` of seed ``s`` is drawn from ``numpy.random.default_rng([s, i])``,
so it does not depend on what was drawn before it, on the number of workers
or on the order of iteration.

Writing a dataset to disk
-------------------------
``make_dataset(out_dir, n_pairs, seed)`` writes ``shard-00000.npz``, ... (uint8
arrays ``a``, ``b``, ``kind``, ``index``) and ``manifest.json`` (parameters,
generator version and SHA-256 of every shard)::

    upfusion make-data OUT_DIR --pairs 20000 --seed 0 --size 128

which regenerates bit-identical shards for the same arguments and package version.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..utils.colour import luma
from ..utils.files import atomic_path, atomic_write_text, file_sha256
from . import samples
from .vocabulary import ANATOMIES, KINDS

try:  # torch is only used for the base class, so that a DataLoader accepts the dataset.
    from torch.utils.data import IterableDataset as _Base
except ImportError:  # pragma: no cover - torch is a dependency, but keep the data usable without it
    _Base = object  # type: ignore[assignment,misc]

__all__ = ["GENERATOR_VERSION", "PairDataset", "make_dataset", "make_pair", "read_dataset"]


#: Bumped whenever a transform changes, so that a manifest says which generator wrote it.
#: 2: the anatomy of each medical pair is drawn from ``anatomies`` (MNI152 or Colin27).
GENERATOR_VERSION = 2

_IR_SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "camera")
_GENERIC_SOURCES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "motorcycle_left",
    "camera",
    "coins",
    "moon",
    "brick",
    "grass",
    "gravel",
    "immunohistochemistry",
    "text",
    "page",
    "cell",
    "retina",
)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _quantise(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _to_float(q: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) / np.float32(255.0)


def _resample(
    img: np.ndarray, centre: tuple[float, float], step: float, angle: float, size: int, order: int = 1
) -> np.ndarray:
    """Sample ``img`` on a ``size x size`` grid of spacing ``step`` input pixels, rotated by ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    mat = np.array([[c, -s], [s, c]]) * step
    half = (size - 1) / 2.0
    offset = np.asarray(centre) - mat @ np.array([half, half])
    return ndi.affine_transform(img, mat, offset, output_shape=(size, size), order=order, mode="constant", cval=0.0)


def _orient(imgs: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Same flip / 90-degree turn for every image; half of the pairs keep their orientation."""
    if rng.random() < 0.5:
        return imgs
    k = int(rng.integers(4))
    flip = bool(rng.random() < 0.5)
    out = []
    for im in imgs:
        im = np.rot90(im, k)
        out.append(np.ascontiguousarray(im[:, ::-1] if flip else im))
    return out


def _gamma(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        return x
    return np.clip(x, 0.0, 1.0) ** np.float32(rng.uniform(0.75, 1.35))


def _correlated_noise(shape: tuple[int, ...], rng: np.random.Generator, sigma: float) -> np.ndarray:
    n = rng.standard_normal(shape).astype(np.float32)
    if sigma > 0.3:
        n = ndi.gaussian_filter(n, sigma)
        n /= max(float(n.std()), 1e-6)
    return n


def _stretch(x: np.ndarray, lo_q: float = 0.5, hi_q: float = 99.7) -> np.ndarray:
    lo, hi = np.percentile(x, [lo_q, hi_q])
    return np.clip((x - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0).astype(np.float32)


# Luma of display colour maps (value in [0, 1] -> Y in [0, 1]).

#: Purple-orange-white pseudo-colour of the Harvard atlas SPECT/PET images (anchors read off the
#: colour bar of the public atlas: black, dark teal, purple, magenta, orange, white), as luma.
_ATLAS_CURVE = (np.array([0.0, 0.12, 0.3, 0.45, 0.62, 0.8, 1.0]), np.array([0.0, 0.09, 0.17, 0.27, 0.45, 0.53, 0.95]))


def _display_curve(v: np.ndarray, name: str) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    if name == "grey":
        return v
    if name == "hot":  # luma of the classic 'hot' map: R, then G, then B ramps
        r = np.clip(v / 0.365, 0, 1)
        g = np.clip((v - 0.365) / (0.746 - 0.365), 0, 1)
        b = np.clip((v - 0.746) / (1 - 0.746), 0, 1)
        return luma(r, g, b).astype(np.float32)
    return np.interp(v, *_ATLAS_CURVE).astype(np.float32)


# --------------------------------------------------------------------------
# medical pairs
# --------------------------------------------------------------------------


def _jitter(table: dict[str, float], rng: np.random.Generator, rel: float) -> dict[str, float]:
    return {k: v * float(rng.uniform(1 - rel, 1 + rel)) for k, v in table.items()}


def _mri_slice(tissue: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    r = rng.random()
    modality = "T2" if r < 0.5 else ("T1" if r < 0.8 else "PD")
    img = samples.synthesize(tissue, modality, _jitter(samples.CONTRASTS[modality], rng, 0.15))
    # uneven extracerebral tissue: +-20 % smooth variation outside the brain
    texture = 1.0 + 0.2 * _correlated_noise(img.shape, rng, 4.0)
    img = np.where(tissue["brain"], img, img * texture)
    if modality == "T1":  # jitter the real template's own contrast a little too
        img = np.where(tissue["brain"], np.maximum(img, 0) ** np.float32(rng.uniform(0.8, 1.25)), img)
    return img


def _ct_slice(tissue: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    table = dict(samples.CONTRASTS["CT"])
    for k in ("gm", "wm", "csf", "muscle", "skin"):
        table[k] += float(rng.normal(0, 3))
    for k in ("inner_table", "outer_table", "diploe"):
        table[k] *= float(rng.uniform(0.8, 1.2))
    hu = ndi.gaussian_filter(samples.synthesize(tissue, "CT", table), 0.5)
    return hu


def _window_ct(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.85:
        level, width = rng.uniform(30, 50), rng.uniform(70, 140)
    else:
        level, width = rng.uniform(60, 400), rng.uniform(300, 2000)
    return np.clip((hu - (level - width / 2)) / width, 0.0, 1.0).astype(np.float32)


def _head_rest(size: int, head: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Thin bright arc below the head, like the head holder in axial CT (``size x size`` mask)."""
    ys, xs = np.nonzero(head)
    if ys.size == 0:
        return np.zeros((size, size), np.float32)
    cy, cx = ys.mean(), xs.mean()
    ry = (ys.max() - ys.min()) / 2 + rng.uniform(4, 12)
    rx = (xs.max() - xs.min()) / 2 + rng.uniform(4, 12)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    rho = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    arc = np.exp(-(((rho - 1.0) * min(rx, ry) / 0.8) ** 2)) * (yy > cy + 0.3 * ry)
    return arc.astype(np.float32) * np.float32(rng.uniform(0.5, 1.0))


def _functional_slice(model: samples.HeadModel, kind: str, index: tuple, rng: np.random.Generator) -> np.ndarray:
    base = (model.pet if kind == "MRI-PET" else model.spect)[index].astype(np.float32)
    extra = rng.uniform(0.0, 1.5)
    if extra > 0.3:
        base = ndi.gaussian_filter(base, extra)
    return base


def _medical_pair(
    kind: str, size: int, rng: np.random.Generator, anatomies: Sequence[str] = ANATOMIES
) -> tuple[np.ndarray, np.ndarray]:
    model = samples.head_model(anatomies[int(rng.integers(len(anatomies)))])
    axis = int(rng.choice(3, p=[0.6, 0.2, 0.2]))
    (z0, z1), (y0, y1), (x0, x1) = model.bbox
    lo, hi = [(z0 + 20, z1 - 12), (y0 + 25, y1 - 25), (x0 + 25, x1 - 25)][axis]
    k = int(rng.integers(lo, hi))
    index = [slice(None)] * 3
    index[axis] = k
    index = tuple(index)
    tissue = model.tissues(index)
    mri = _mri_slice(tissue, rng)
    if kind == "MRI-CT":
        other = _ct_slice(tissue, rng)
        other = (other + 1000.0) / 1000.0  # keep air at 0 for the resampling's zero padding
    else:
        other = _functional_slice(model, kind, index, rng)
    head = (tissue["layer"] < 7 * 32) | tissue["brain"]
    mri, other, head = np.flipud(mri), np.flipud(other), np.flipud(head)  # anterior / superior up

    ys, xs = np.nonzero(head)
    angle = math.radians(rng.uniform(-12, 12))
    if rng.random() < 0.35:
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        step = extent / (size * rng.uniform(0.6, 0.9))
        centre = ((ys.max() + ys.min()) / 2 + rng.normal(0, 4), (xs.max() + xs.min()) / 2 + rng.normal(0, 4))
    else:
        step = rng.uniform(0.8, 1.6)
        j = int(rng.integers(ys.size))
        centre = (float(ys[j]), float(xs[j]))
    a = _resample(mri, centre, step, angle, size)
    b = _resample(other, centre, step, angle, size)
    head_out = _resample(head.astype(np.float32), centre, step, angle, size) > 0.5

    # MRI: bias field, scaling to the slice's bright end, Rician-like noise.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    bias = 1.0 + rng.uniform(-0.15, 0.15) * yy + rng.uniform(-0.15, 0.15) * xx
    a = a * bias.astype(np.float32)
    top = np.percentile(a[head_out], 99.5) if head_out.sum() > 20 else a.max()
    a = a / max(float(top) * rng.uniform(0.9, 1.15), 1e-3)
    sd = rng.uniform(0.003, 0.02)
    a = np.sqrt((a + sd * rng.standard_normal(a.shape)) ** 2 + (sd * rng.standard_normal(a.shape)) ** 2)

    if kind == "MRI-CT":
        hu = b * 1000.0 - 1000.0
        hu = hu + rng.uniform(2, 6) * rng.standard_normal(hu.shape) / math.sqrt(max(step, 0.5))
        b = _window_ct(hu.astype(np.float32), rng)
        if rng.random() < 0.4:
            b = np.maximum(b, _head_rest(size, head_out, rng))
    else:
        rel = b / max(float(np.percentile(b, 99.5)), 0.05)  # scaled per slice, as the atlas images are
        amp = rng.uniform(0.01, 0.05)
        noise = _correlated_noise(b.shape, rng, (2.0 if kind == "MRI-PET" else 3.5) / step)
        v = rel * (1 + amp * noise / np.sqrt(np.maximum(rel, 0.05)))
        r = rng.random()
        if kind == "MRI-SPECT":
            curve = "atlas" if r < 0.7 else ("hot" if r < 0.85 else "grey")
        else:
            curve = "atlas" if r < 0.4 else ("hot" if r < 0.7 else "grey")
        gain = rng.uniform(0.8, 1.2) if curve == "atlas" else rng.uniform(0.65, 1.0)  # little saturation
        b = _display_curve(v * gain, curve)
    return a.astype(np.float32), b.astype(np.float32)


# --------------------------------------------------------------------------
# IR-VIS and generic pairs
# --------------------------------------------------------------------------


@functools.cache
def _materials(name: str) -> dict[str, np.ndarray]:
    img = samples.skimage_image(name)
    rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=-1)
    return samples.thermal_materials(np.asarray(rgb, dtype=np.float32))


@functools.cache
def _luma_of(name: str) -> np.ndarray:
    img = samples.skimage_image(name)
    return samples._luma(img) if img.ndim == 3 else np.asarray(img, dtype=np.float32)


def _scene_window(
    shape: tuple[int, int], size: int, rng: np.random.Generator, step_range: tuple[float, float]
) -> tuple[tuple[float, float], float, float]:
    h, w = shape
    max_step = min(h, w) / (size * 1.05)
    step = float(rng.uniform(min(step_range[0], max_step), min(step_range[1], max_step)))
    angle = math.radians(rng.uniform(-8, 8)) if rng.random() < 0.3 else 0.0
    reach = (size * step) / 2 * (abs(math.cos(angle)) + abs(math.sin(angle)))
    cy = rng.uniform(min(reach, h / 2), max(h - reach, h / 2))
    cx = rng.uniform(min(reach, w / 2), max(w - reach, w / 2))
    return (cy, cx), step, angle


def _person(size: int, rng: np.random.Generator) -> np.ndarray:
    """A soft mask of a standing person (head, torso, arms, legs) somewhere in the frame."""
    height = rng.uniform(0.15, 0.45) * size
    cy = rng.uniform(0.3 * size, 0.95 * size - height / 2)
    cx = rng.uniform(0.1 * size, 0.9 * size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u, v = (yy - cy) / height, (xx - cx) / height  # person coordinates: u from -0.5 (top) to 0.5 (feet)
    head = (u + 0.42) ** 2 / 0.07**2 + v**2 / 0.055**2 < 1
    torso = (np.abs(u + 0.12) < 0.23) & (np.abs(v) < 0.11 - 0.02 * (u + 0.12))
    arms = (np.abs(u + 0.1) < 0.2) & (np.abs(np.abs(v) - 0.135) < 0.03)
    legs = (u > 0.08) & (u < 0.5) & (np.abs(np.abs(v) - 0.05) < 0.035)
    mask = (head | torso | arms | legs).astype(np.float32)
    return ndi.gaussian_filter(mask, 0.6)


def _lamp(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(0, size, 2)
    r = rng.uniform(1.0, 3.5)
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2)).astype(np.float32)


def _ir_vis_pair(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    name = _IR_SOURCES[int(rng.integers(len(_IR_SOURCES)))]
    mats = _materials(name)
    centre, step, angle = _scene_window(mats["luma"].shape, size, rng, (0.6, 3.0))
    crop = {k: _resample(v, centre, step, angle, size) for k, v in mats.items()}
    if rng.random() < 0.5:
        crop = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in crop.items()}
    if rng.random() < 0.6:  # people: warm material in the thermal proxy, dark and faint in the visible image
        for _ in range(int(rng.integers(1, 4))):
            p = _person(size, rng)
            local = float(np.sum(crop["luma"] * p) / max(float(p.sum()), 1e-6))
            p_vis = p * rng.uniform(0.3, 0.9)  # partly transparent: the scene's texture shows through
            crop["luma"] = crop["luma"] * (1 - p_vis) + p_vis * local * rng.uniform(0.5, 0.9)
            crop["warm"] = np.maximum(crop["warm"], p * rng.uniform(0.8, 1.0))
            for k in ("sky", "vegetation", "detail"):
                crop[k] = crop[k] * (1 - p)
    ir = samples.simulate_infrared(
        None,
        seed=int(rng.integers(2**31)),
        hot=rng.uniform(0.8, 1.0),
        cold=rng.uniform(0.0, 0.3),
        vegetation=rng.uniform(0.35, 0.65),
        detail=rng.uniform(0.05, 0.25),
        blur=rng.uniform(0.6, 1.8),
        noise=rng.uniform(0.005, 0.02),
        materials=crop,
    )
    vis = crop["luma"]
    if rng.random() < 0.6:  # night scene: dark, low contrast, noisy
        vis = rng.uniform(0.35, 1.0) * vis ** rng.uniform(1.0, 2.0)
        vis = vis + rng.uniform(0.003, 0.02) * rng.standard_normal(vis.shape)
    if rng.random() < 0.25:
        for _ in range(int(rng.integers(1, 4))):
            lamp = _lamp(size, rng)
            vis = np.maximum(vis, lamp)
            ir = np.maximum(ir, lamp * rng.uniform(0.6, 1.0))
    return np.clip(vis, 0, 1).astype(np.float32), np.clip(ir, 0, 1).astype(np.float32)


def _generic_pair(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    name = _GENERIC_SOURCES[int(rng.integers(len(_GENERIC_SOURCES)))]
    y = _luma_of(name)
    centre, step, angle = _scene_window(y.shape, size, rng, (0.5, 2.5))
    base = _stretch(_resample(y, centre, step, angle, size), 0.5, 99.5)
    # a: blurred, low contrast, bright targets
    a = ndi.gaussian_filter(base, rng.uniform(2.0, 4.0))
    a = 0.2 + rng.uniform(0.3, 0.6) * (a - 0.2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(1, 5))):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(2, size / 8, 2)
        blob = np.exp(-((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) ** rng.uniform(1, 3)))
        a = np.maximum(a, blob * rng.uniform(0.7, 1.0))
    # b: sharp, detail boosted, noisy
    detail = base - ndi.gaussian_filter(base, 1.5)
    b = base + rng.uniform(0.3, 1.5) * detail
    b = b + rng.uniform(0.0, 0.02) * rng.standard_normal(b.shape)
    return np.clip(a, 0, 1).astype(np.float32), np.clip(b, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def _check_anatomies(anatomies: Sequence[str]) -> None:
    unknown = [a for a in anatomies if a not in ANATOMIES]
    if unknown or not anatomies:
        raise ValueError(f"anatomies must be a non-empty selection of {ANATOMIES}, not {list(anatomies)}")


def make_pair(
    seed: int, index: int, size: int = 128, kinds: Sequence[str] = KINDS, anatomies: Sequence[str] = ANATOMIES
) -> tuple[np.ndarray, np.ndarray, str]:
    """Pair ``index`` of the stream ``seed``: ``(a, b, kind)``, float32 ``(size, size)`` in ``[0, 1]``.

    The kind is ``kinds[index % len(kinds)]`` (repeat a kind in ``kinds`` to
    weight it); everything else is drawn from
    ``numpy.random.default_rng([seed, index])``.  Values are multiples of
    1/255.  A pair whose images are nearly flat is redrawn from the same
    generator, so the result stays deterministic.  Medical pairs take their
    anatomy from one of ``anatomies`` (see :func:`~napari_upfusion.data.samples.head_model`),
    drawn with equal chances.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, not {size}")
    kind = kinds[index % len(kinds)]
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    _check_anatomies(anatomies)
    rng = np.random.default_rng([int(seed), int(index)])
    for _ in range(8):
        if kind in ("MRI-CT", "MRI-PET", "MRI-SPECT"):
            a, b = _medical_pair(kind, size, rng, anatomies)
        elif kind == "IR-VIS":
            a, b = _ir_vis_pair(size, rng)
        else:
            a, b = _generic_pair(size, rng)
        a, b = _gamma(a, rng), _gamma(b, rng)
        if kind != "IR-VIS":  # scenes stay upright (IR-VIS crops are mirrored at random instead)
            a, b = _orient([a, b], rng)
        qa, qb = _quantise(a), _quantise(b)
        if qa.std() > 4 and qb.std() > 4:
            break
    return _to_float(qa), _to_float(qb), kind


class PairDataset(_Base):
    """Endless (or ``length``-long) stream of ``(a, b, kind)`` training pairs; see :func:`make_pair`.

    A ``torch.utils.data.IterableDataset``: with a ``DataLoader`` of several
    workers each worker takes every n-th index, so the stream is the same for
    any number of workers (up to the order in which batches arrive).  Indexing
    ``dataset[i]`` gives pair ``i`` directly.
    """

    def __init__(
        self,
        seed: int = 0,
        size: int = 128,
        kinds: Sequence[str] = KINDS,
        length: int | None = None,
        start: int = 0,
        anatomies: Sequence[str] = ANATOMIES,
    ) -> None:
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"kinds must be a non-empty selection of {KINDS}, not {list(kinds)}")
        _check_anatomies(anatomies)
        self.seed, self.size, self.kinds, self.anatomies = int(seed), int(size), tuple(kinds), tuple(anatomies)
        self.length, self.start = length, int(start)

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("this PairDataset is endless; give length= to make it finite")
        return int(self.length)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, str]:
        if self.length is not None and not 0 <= i < self.length:
            raise IndexError(i)
        return make_pair(self.seed, self.start + int(i), self.size, self.kinds, self.anatomies)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        worker, workers = 0, 1
        try:
            from torch.utils.data import get_worker_info

            info = get_worker_info()
            if info is not None:
                worker, workers = info.id, info.num_workers
        except ImportError:  # pragma: no cover
            pass
        i = worker
        while self.length is None or i < self.length:
            yield make_pair(self.seed, self.start + i, self.size, self.kinds, self.anatomies)
            i += workers


def make_dataset(
    out_dir: str | os.PathLike,
    n_pairs: int,
    seed: int = 0,
    size: int = 128,
    kinds: Sequence[str] = KINDS,
    shard_size: int = 1000,
    progress: bool = False,
    anatomies: Sequence[str] = ANATOMIES,
) -> dict:
    """Write ``n_pairs`` pairs of the stream ``seed`` to ``out_dir`` as ``.npz`` shards; return the manifest.

    Each shard ``shard-NNNNN.npz`` holds uint8 ``a`` and ``b`` (``[n, size,
    size]``, value x 255), the ``kind`` strings and the pair ``index``;
    ``manifest.json`` records the arguments, :data:`GENERATOR_VERSION` and the
    SHA-256 of every shard.  Shards are written to a temporary name and
    renamed, so an interrupted run leaves no half-written shard.
    """
    if n_pairs < 1:
        raise ValueError("n_pairs must be at least 1")
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    shards = []
    for s0 in range(0, n_pairs, shard_size):
        idx = range(s0, min(s0 + shard_size, n_pairs))
        a = np.empty((len(idx), size, size), np.uint8)
        b = np.empty_like(a)
        kind = []
        for j, i in enumerate(idx):
            pa, pb, k = make_pair(seed, i, size, kinds, anatomies)
            a[j], b[j] = _quantise(pa), _quantise(pb)
            kind.append(k)
        name = f"shard-{s0 // shard_size:05d}.npz"
        with atomic_path(os.path.join(out, name)) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, a=a, b=b, kind=np.array(kind), index=np.array(list(idx), np.int64))
        shards.append({"file": name, "pairs": len(idx), "sha256": file_sha256(os.path.join(out, name))})
        if progress:
            print(f"{name}: pairs {idx.start}-{idx.stop - 1}", file=sys.stderr)
    manifest = {
        "format": "napari-upfusion training pairs",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "size": int(size),
        "kinds": list(kinds),
        "anatomies": list(anatomies),
        "n_pairs": int(n_pairs),
        "shard_size": int(shard_size),
        "shards": shards,
        "command": f"upfusion make-data OUT_DIR --pairs {n_pairs} --seed {seed} --size {size} "
        f"--shard-size {shard_size} --kinds {' '.join(kinds)} --anatomies {' '.join(anatomies)}",
    }
    atomic_write_text(os.path.join(out, "manifest.json"), json.dumps(manifest, indent=2))
    return manifest


def read_dataset(out_dir: str | os.PathLike, verify: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
    """Yield the ``(a, b, kind)`` pairs written by :func:`make_dataset`, as float32 in ``[0, 1]``.

    With ``verify`` the SHA-256 of each shard is checked against the manifest
    first.  The pairs equal those of :func:`make_pair` exactly.
    """
    out = os.fspath(out_dir)
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    for shard in manifest["shards"]:
        path = os.path.join(out, shard["file"])
        if verify and file_sha256(path) != shard["sha256"]:
            raise ValueError(f"{path} does not match its checksum in manifest.json; regenerate it with make_dataset.")
        with np.load(path, allow_pickle=False) as z:
            a, b, kind = z["a"], z["b"], z["kind"]
        for j in range(a.shape[0]):
            yield _to_float(a[j]), _to_float(b[j]), str(kind[j])
