"""Pictures and tables of a fusion result: a labelled slice montage and per-volume metrics.

Used by ``upfusion demo`` and the model card; sits beside the engine (numpy and
Pillow, no napari or Qt).  :func:`fusion_figures` makes the demo's montage: one
row per slice, labelled with its position in millimetres, one titled column per
input and fuser, and, for PET and SPECT, the fused image with the functional
image's colour put back as the field shows it.  :func:`metrics_table` and
:func:`metrics_record` write the scores with each metric's direction and a
one-line definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..engine import color as colour
from ..engine.image import ImageData
from ..engine.intensity import normalize
from ..engine.registry import available_fusers
from .metrics import METRIC_INFO, METRIC_NAMES, evaluate, round_grey

__all__ = [
    "colour_fused",
    "fusion_figures",
    "labelled_montage",
    "metrics_record",
    "metrics_table",
    "montage",
    "orientation_letters",
    "pick_slices",
    "slice_position",
    "volume_metrics",
]

#: Modalities whose images the field shows through a colour map (functional imaging).
FUNCTIONAL = ("PET", "SPECT")


def pick_slices(volume: np.ndarray, count: int = 3) -> list[int]:
    """``count`` indices along axis 0 spread over the slices that hold most of the content."""
    energy = volume.reshape(volume.shape[0], -1).astype(np.float64).sum(axis=1)
    inside = np.flatnonzero(energy > 0.25 * energy.max()) if energy.max() > 0 else np.arange(volume.shape[0])
    return [int(i) for i in np.linspace(inside[0], inside[-1], count + 2)[1:-1].round()]


def _as_rgb8(panel: np.ndarray, colormap: str | None) -> np.ndarray:
    panel = np.clip(np.asarray(panel, dtype=np.float32), 0, 1)
    if panel.ndim == 2:
        panel = colour.apply_colormap(panel, colormap) if colormap else np.repeat(panel[..., None], 3, axis=-1)
    return np.round(panel[..., :3] * 255).astype(np.uint8)


def montage(rows: Sequence[Sequence[np.ndarray]], colormaps: Sequence[str | None] | None = None, gap: int = 4) -> np.ndarray:
    """An RGB uint8 grid of 2-D panels in ``[0, 1]`` (grey or RGB): ``rows[i][j]`` is row i, column j.

    ``colormaps[j]`` colours the grey panels of column ``j`` (``None``: grey).
    """
    colormaps = list(colormaps or [None] * len(rows[0]))
    height = max(p.shape[0] for row in rows for p in row)
    width = max(p.shape[1] for row in rows for p in row)
    grid = np.zeros((len(rows) * (height + gap) + gap, len(rows[0]) * (width + gap) + gap, 3), np.uint8)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            image = _as_rgb8(panel, colormaps[j])
            top, left = gap + i * (height + gap), gap + j * (width + gap)
            grid[top : top + image.shape[0], left : left + image.shape[1]] = image
    return grid


# ---------------------------------------------------------------------------------------------- geometry of a slice
#: Patient directions of the engine's physical axes (array order, i.e. reversed LPS: z, y, x), for + and -.
_DIRECTIONS = (("S", "I"), ("P", "A"), ("L", "R"))


def slice_position(image: ImageData, index: int, axis: int = 0) -> tuple[str, float]:
    """Where slice ``index`` along array ``axis`` lies: the physical axis it moves along and its coordinate in mm.

    The coordinate is that of the slice's centre on the physical axis (``"z"``, ``"y"`` or ``"x"``
    of the reversed-LPS world) that the slicing axis follows most closely; for a NIfTI in MNI
    space and ``axis=0`` it is the MNI z of the axial slice.
    """
    centre = [(n - 1) / 2 for n in image.shape]
    centre[axis] = index
    world = image.index_to_world_affine() @ np.array([*centre, 1.0])
    physical = int(np.argmax(np.abs(image.direction[:, axis])))
    return "zyx"[physical], float(world[physical])


def orientation_letters(image: ImageData, axis: int = 0) -> dict[str, str]:
    """Patient directions at the ``top``, ``bottom``, ``left`` and ``right`` of a slice as the montage draws it.

    The montage shows the slice's first in-plane axis upwards (highest index at the top) and the
    second to the right; letters are S/I, P/A, L/R of the LPS world, or empty for an image
    without physical geometry.
    """
    if not image.has_geometry:
        return {"top": "", "bottom": "", "left": "", "right": ""}
    rows, cols = (k for k in range(image.ndim) if k != axis)

    def towards(k: int) -> tuple[str, str]:
        vector = image.direction[:, k]
        physical = int(np.argmax(np.abs(vector)))
        plus, minus = _DIRECTIONS[physical]
        return (plus, minus) if vector[physical] > 0 else (minus, plus)

    (up, down), (right, left) = towards(rows), towards(cols)
    return {"top": up, "bottom": down, "left": left, "right": right}


# ---------------------------------------------------------------------------------------------- colour
def colour_fused(luma: np.ndarray, b: np.ndarray, colormap: str = "hot") -> np.ndarray:
    """The fused brightness ``luma`` with the colour of ``b`` through ``colormap`` put back (RGB in ``[0, 1]``).

    The way the field shows a fused PET or SPECT: ``b`` (in ``[0, 1]``) is coloured by the map,
    its chroma (Cb, Cr) is kept and its brightness replaced by the fused one.
    """
    ycc = colour.rgb_to_ycbcr(colour.apply_colormap(np.clip(b, 0, 1), colormap))
    ycc[..., 0] = np.clip(luma, 0, 1)
    return colour.ycbcr_to_rgb(ycc)


# ---------------------------------------------------------------------------------------------- drawing
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # FreeType rendering of the font that ships inside Pillow


def labelled_montage(
    columns: Sequence[tuple[str, str, Sequence[np.ndarray], str | None]],
    row_labels: Sequence[str],
    *,
    title: str,
    orientation: Mapping[str, str] | None = None,
    legend: tuple[str, str] | None = None,
    tile_height: int = 300,
) -> np.ndarray:
    """An RGB uint8 figure: titled columns of 2-D panels, one labelled row per slice.

    Parameters
    ----------
    columns
        ``(heading, subheading, panels, colormap)`` per column; ``panels[i]`` (in ``[0, 1]``, grey
        or RGB) is row ``i``; ``colormap`` colours grey panels (``None``: grey).
    row_labels
        One label per row, drawn to the left of the row (e.g. the slice position).
    title
        A line above everything.
    orientation
        Letters for ``top``, ``bottom``, ``left`` and ``right`` drawn around the first panel of each row.
    legend
        ``(colormap, caption)``: a colour bar with its caption under the figure.
    tile_height
        Height in pixels each panel is scaled to (its aspect ratio is kept).

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)`` uint8.
    """
    from PIL import Image, ImageDraw

    first = columns[0][2][0]
    tile_w = round(first.shape[1] * tile_height / first.shape[0])
    head, small, label_w, gap, margin = _font(26), _font(18), 150, 14, 16
    title_h, heading_h, legend_h = 48, 64, 70 if legend else 0
    width = margin + label_w + len(columns) * (tile_w + gap) + margin
    height = title_h + heading_h + len(row_labels) * (tile_height + gap) + legend_h + margin
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    white, grey = (255, 255, 255), (190, 190, 190)
    draw.text((margin, 10), title, font=head, fill=white)
    x0 = margin + label_w
    for j, (heading, subheading, _, _) in enumerate(columns):
        x = x0 + j * (tile_w + gap) + tile_w / 2
        draw.text((x, title_h + 6), heading, font=head, fill=white, anchor="mt")
        draw.text((x, title_h + 38), subheading, font=small, fill=grey, anchor="mt")
    for i, label in enumerate(row_labels):
        y = title_h + heading_h + i * (tile_height + gap)
        draw.text((margin, y + tile_height / 2), label, font=head, fill=white, anchor="lm")
        for j, (_, _, panels, colormap) in enumerate(columns):
            tile = Image.fromarray(_as_rgb8(panels[i], colormap)).resize((tile_w, tile_height), Image.Resampling.BILINEAR)
            canvas.paste(tile, (x0 + j * (tile_w + gap), y))
        if orientation:  # patient directions around the first panel, outlined so they read on any pixel
            letter = {"font": small, "fill": white, "stroke_width": 3, "stroke_fill": (0, 0, 0)}
            cx, cy = x0 + tile_w / 2, y + tile_height / 2
            draw.text((cx, y + 3), orientation.get("top", ""), anchor="mt", **letter)
            draw.text((cx, y + tile_height - 3), orientation.get("bottom", ""), anchor="mb", **letter)
            draw.text((x0 + 4, cy), orientation.get("left", ""), anchor="lm", **letter)
            draw.text((x0 + tile_w - 4, cy), orientation.get("right", ""), anchor="rm", **letter)
    if legend:
        colormap, caption = legend
        y = height - legend_h - margin + 20
        bar = colour.apply_colormap(np.tile(np.linspace(0, 1, 300, dtype=np.float32), (16, 1)), colormap)
        canvas.paste(Image.fromarray(np.round(bar * 255).astype(np.uint8)), (x0, y))
        draw.text((x0, y + 22), "low", font=small, fill=grey, anchor="lt")
        draw.text((x0 + 300, y + 22), "high", font=small, fill=grey, anchor="rt")
        draw.text((x0 + 320, y + 8), caption, font=small, fill=white, anchor="lm")
    return np.asarray(canvas)


# ---------------------------------------------------------------------------------------------- metrics
def volume_metrics(
    fused: Mapping[str, np.ndarray], a: np.ndarray, b: np.ndarray, slices: Sequence[int]
) -> dict[str, dict[str, float]]:
    """Mean metrics over ``slices`` (axis 0) of each fused volume, all on the 0..255 grey scale of ``[0, 1]`` data."""
    def grey(x: np.ndarray) -> np.ndarray:
        return round_grey(np.clip(x, 0, 1).astype(np.float64) * 255)

    out = {}
    for name, volume in fused.items():
        scores = [evaluate(grey(volume[i]), grey(a[i]), grey(b[i])) for i in slices]
        out[name] = {m: float(np.mean([s[m] for s in scores])) for m in METRIC_NAMES}
    return out


def metrics_table(scores: Mapping[str, Mapping[str, float]], digits: int = 4) -> str:
    """A plain-text table: one row per metric with its direction, one column per fuser, then each metric's definition.

    Parameters
    ----------
    scores
        ``{fuser: {metric: value}}`` as from :func:`volume_metrics`.
    digits
        Decimals printed.

    Returns
    -------
    str
    """
    fusers = list(scores)
    metrics = [m for m in METRIC_NAMES if any(m in s for s in scores.values())]
    cells = [[f"{scores[f][m]:.{digits}f}" if m in scores[f] else "-" for f in fusers] for m in metrics]
    header = ["metric", "better", *fusers]
    body = [[m, METRIC_INFO[m][0], *row] for m, row in zip(metrics, cells)]
    widths = [max(len(line[k]) for line in [header, *body]) for k in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if k < 2 else v.rjust(w) for k, (v, w) in enumerate(zip(values, widths)))

    lines = [line(header), line(["-" * w for w in widths]), *(line(row) for row in body), ""]
    lines.append("What each metric measures (F: the fused image, A and B: the two inputs):")
    name_w = max(map(len, metrics))
    lines += [f"  {m.ljust(name_w)}  {METRIC_INFO[m][0]} is better; {METRIC_INFO[m][1]}" for m in metrics]
    return "\n".join(lines)


def metrics_record(scores: Mapping[str, Mapping[str, float]]) -> dict[str, object]:
    """The JSON form of :func:`metrics_table`: ``{"metrics": {name: {"better", "definition"}}, "scores": ...}``."""
    names = [m for m in METRIC_NAMES if any(m in s for s in scores.values())]
    return {
        "metrics": {m: {"better": METRIC_INFO[m][0], "definition": METRIC_INFO[m][1]} for m in names},
        "scores": {f: dict(s) for f, s in scores.items()},
    }


# ---------------------------------------------------------------------------------------------- the demo's figure
def _fuser_heading(name: str) -> tuple[str, str]:
    info = available_fusers().get(name)
    if info is not None and info.prompt == "none":
        return name, "classical reference"
    return name, "UP-Fusion network"


def fusion_figures(
    a: ImageData,
    b: ImageData,
    modalities: tuple[str, str],
    fused: Mapping[str, np.ndarray],
    shown: Sequence[str],
    *,
    colormap: str = "hot",
    title: str | None = None,
) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """The labelled montage and the metric scores of fused volumes of ``a`` and ``b`` (volumes ``(z, y, x)``).

    Parameters
    ----------
    a, b
        The inputs on one grid, ``a`` carrying the geometry that gives each row's position in mm.
    modalities
        ``(modality of a, modality of b)``; they set the intensity rule and the column titles.
    fused
        Fuser name -> fused luma volume in ``[0, 1]``; every one is scored.
    shown
        The fusers drawn, in order (the first is the model, the others references).  When ``b`` is
        PET or SPECT, a column after the first shows its fused brightness in ``b``'s colour.
    colormap
        The colour map of a functional ``b``.
    title
        The line above the figure.

    Returns
    -------
    tuple
        The figure (``(height, width, 3)`` uint8; three axial slices, rows head up) and
        ``{fuser: {metric: mean}}`` over the central half of the axial slices, on the inputs
        normalised by the engine's rule.
    """
    norm_a, norm_b = normalize(a.array, modalities[0]), normalize(b.array, modalities[1])
    rows = pick_slices(norm_a)

    def panels(volume: np.ndarray) -> list[np.ndarray]:
        return [np.flipud(volume[i]) for i in rows]

    functional = modalities[1] in FUNCTIONAL
    columns = [
        (modalities[0], "input A", panels(norm_a), None),
        (modalities[1], f"input B ({colormap} colour map)" if functional else "input B", panels(norm_b),
         colormap if functional else None),
    ]  # fmt: skip
    for k, name in enumerate(shown):
        columns.append((*_fuser_heading(name), panels(fused[name]), None))
        if k == 0 and functional:
            coloured = [colour_fused(fused[name][i], norm_b[i], colormap)[::-1] for i in rows]
            columns.append((f"{name} + {modalities[1]} colour", f"fused brightness, {modalities[1]}'s colour", coloured, None))
    labels = []
    for i in rows:
        physical, mm = slice_position(a, i)
        labels.append(f"{physical} = {mm:+.0f} mm")
    picture = labelled_montage(
        columns,
        labels,
        title=title or f"{modalities[0]} + {modalities[1]} fusion, axial slices",
        orientation=orientation_letters(a),
        legend=(colormap, f"{modalities[1]} uptake, {colormap} colour map (low to high)") if functional else None,
    )
    scores = volume_metrics(fused, norm_a, norm_b, range(norm_a.shape[0] // 4, 3 * norm_a.shape[0] // 4))
    return picture, scores
