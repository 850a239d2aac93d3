"""Fusing a cohort: many pairs listed in a CSV manifest, resumable, in this process or on a Dask cluster.

The manifest
------------
A CSV file with a header row.  Required columns: ``a`` and ``b`` (image paths,
absolute or relative to the CSV's folder; ``a`` is the anatomical or visible
image and the reference grid), ``modality_a`` and ``modality_b`` (``MRI, VIS,
CT, PET, SPECT, IR``, any case).  Optional: ``prompt`` (empty means the model's
default prompt: the authors' for CLIP-conditioned networks, the pair's for
``small``) and ``id`` (names the output).  Other columns are ignored with
a warning.  :func:`read_manifest` checks everything it can before any work and
raises :class:`ManifestError` with one sentence per problem; input files that
do not exist are listed as warnings, and those pairs fail with their reason
while the others run (the files may exist only where the workers run).

Output names
------------
One file per pair in the output folder: ``<id>_fused<ext>``, or
``<name of a without its extension>_fused<ext>`` when ``id`` is empty, where
``<ext>`` keeps ``a``'s format family (:func:`output_name`): NIfTI and DICOM give
``.nii.gz``, MetaImage ``.mha``, NRRD ``.nrrd``, PNG and JPEG ``.png``, TIFF
``.tif``; a pair with a colour input whose family cannot hold colour (NIfTI, DICOM)
gets ``.mha`` instead, which keeps the geometry and holds colour.  With
``output_format="dicom"`` (``--format dicom``) each output is instead a folder
``<id or name>_fused`` holding a DICOM series, linked to ``a``'s series when ``a``
is DICOM (see :mod:`napari_upfusion.engine.io.dicom`).  Two pairs that would write
the same name, a name too long for the file system and an output that would
overwrite an input are manifest problems.
The fused image has ``a``'s grid and geometry (the engine resamples ``b``).

Resuming
--------
A pair whose output exists is skipped (``--force`` / ``force=True`` fuses it
again).  Outputs are written atomically (:func:`~napari_upfusion.engine.io.write_image`), so an
output that exists is complete; a run killed mid-write leaves only a hidden
``.<output>.<random>.partial`` folder, which the next run removes (Ctrl-C, SIGTERM and
SIGHUP remove it at once, and mark the report ``interrupted``; on a cluster, what its
workers left is removed once the cluster is closed).  A failed
pair is recorded with its reason (the one-sentence message of an
:class:`~napari_upfusion.errors.UPFusionError`, or the exception's type and message) and the
batch goes on.  The JSON report :data:`REPORT_NAME` in the output folder is
rewritten as pairs finish (at most every few seconds, and at the end or on
interruption); an interrupted run is resumed by running it again.  One batch at
a time may write into a folder (an exclusive ``flock`` of the folder itself is held, so no lock file is left).

Where pairs run
---------------
By default, one after the other in this process with one loaded model.  With
``local_workers=N``, on a ``distributed.LocalCluster`` of N single-threaded
worker processes; with ``scheduler="tcp://host:port"``, on an existing Dask
cluster.  Each worker loads the model once (:func:`~napari_upfusion.engine.api.get_engine`
caches it in the worker process) and reuses it for every pair it gets;
``device="auto"`` resolves on each worker, so workers with a GPU use it.
Workers read their inputs and write their outputs themselves: only paths,
settings and small outcome records travel through the scheduler, so the paths
must mean the same on the workers as here (a shared file system).  Give GPU
workers one thread each (``dask worker --nthreads 1``) so that pairs do not
compete for GPU memory.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import glob
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._version import __version__
from ..engine.api import FusionEngine, fuse_files, get_engine
from ..engine.io import image_header
from ..engine.io.formats import FORMATS, extension, format_named, format_of
from ..engine.options import EngineOptions
from ..engine.validate import check_paths, path_kind
from ..errors import InputError, UPFusionError
from ..modalities import MODALITIES
from ..utils.files import NAME_MAX, atomic_write_text, file_sha256, os_error_sentence, partial_prefix

__all__ = [
    "COLOUR_EXTENSION",
    "REPORT_NAME",
    "CohortPair",
    "CohortReport",
    "EngineSettings",
    "ManifestError",
    "PairOutcome",
    "format_summary",
    "fuse_pair",
    "output_name",
    "read_manifest",
    "run_cohort",
]

#: The JSON report written into the output folder.
REPORT_NAME = "upfusion_batch_report.json"
REQUIRED_COLUMNS = ("a", "b", "modality_a", "modality_b")
OPTIONAL_COLUMNS = ("prompt", "id")
_REPORT_EVERY_S = 5.0

# a's extension -> the output's extension: the output extension of a's format (its family)
_OUTPUT_EXTENSIONS = {ext: fmt.output_extension for fmt in FORMATS.values() for ext in fmt.extensions}


class ManifestError(InputError):
    """A manifest that cannot be run; ``problems`` holds one sentence per problem (the message joins them)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class CohortPair:
    """One row of a manifest, resolved: absolute input paths, modalities in capitals and the output path."""

    row: int  # record number in the CSV file, the header being 1 (the line number unless cells span lines)
    id: str
    a: Path
    b: Path
    modalities: tuple[str, str]
    prompt: str | None
    output: Path
    output_format: str | None = None  # None: the output's extension; else a folder format ("dicom")


@dataclass(frozen=True)
class EngineSettings(EngineOptions):
    """How every pair is fused: the engine options and the slicing axis; picklable, so that each worker builds
    (and caches) its own engine."""

    axis: int = 0

    def engine(self) -> FusionEngine:
        """This process's engine for these settings, loaded once and then reused (:func:`get_engine`)."""
        return get_engine(**{name: getattr(self, name) for name in EngineOptions.names()})


@dataclass
class PairOutcome:
    """What happened to one pair: ``status`` is ``done``, ``skipped``, ``failed`` or ``pending`` (not run yet)."""

    pair: CohortPair
    status: str
    reason: str | None = None
    seconds: float = 0.0
    worker: str | None = None
    provenance: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The report's record of this pair."""
        p = self.pair
        return {
            "id": p.id,
            "row": p.row,
            "a": str(p.a),
            "b": str(p.b),
            "modality_a": p.modalities[0],
            "modality_b": p.modalities[1],
            "prompt": p.prompt,
            "output": str(p.output),
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "worker": self.worker,
            "provenance": self.provenance,
        }


@dataclass
class CohortReport:
    """The state of a batch: one :class:`PairOutcome` per manifest row, plus the run's settings and times."""

    manifest: Path
    out_dir: Path
    settings: dict[str, Any]
    outcomes: list[PairOutcome]
    warnings: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    state: str = "running"  # running, finished, interrupted

    @property
    def path(self) -> Path:
        """Where the JSON report is written."""
        return self.out_dir / REPORT_NAME

    def counts(self) -> dict[str, int]:
        """Number of pairs per status."""
        counts = {"done": 0, "skipped": 0, "failed": 0, "pending": 0}
        for outcome in self.outcomes:
            counts[outcome.status] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        """Everything the report file holds."""
        def stamp(t: float | None) -> str | None:
            return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()

        return {
            "package": "napari-upfusion",
            "version": __version__,
            "state": self.state,
            "manifest": str(self.manifest),
            "manifest_sha256": _sha256(self.manifest),
            "out_dir": str(self.out_dir),
            "host": socket.gethostname(),
            "settings": self.settings,
            "started": stamp(self.started),
            "finished": stamp(self.finished),
            "seconds": round((self.finished or time.time()) - self.started, 3),
            "counts": self.counts(),
            "warnings": self.warnings,
            "pairs": [outcome.to_json() for outcome in self.outcomes],
        }

    def write(self) -> Path:
        """Write the JSON report atomically (a temporary file beside it, then ``os.replace``); a failure (a full
        disk, a read-only folder) is one sentence."""
        try:
            atomic_write_text(self.path, json.dumps(self.to_json(), indent=2, default=str) + "\n")
        except OSError as error:
            reason = os_error_sentence(error, self.path)
            raise InputError(f"The batch report could not be written: {reason[:1].lower()}{reason[1:]}") from None
        return self.path


def _sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


# ---------------------------------------------------------------------- manifest
def _stem_and_extension(a: str | os.PathLike[str]) -> tuple[str, str]:
    """``a``'s name without its image extension, and the output extension of its format family."""
    name = Path(a).name
    suffix = extension(name)
    if suffix not in _OUTPUT_EXTENSIONS:  # a DICOM folder, or a DICOM file without extension
        return name, ".nii.gz"
    return name[: len(name) - len(suffix)], _OUTPUT_EXTENSIONS[suffix]


#: The output extension of a colour result whose input family cannot hold colour: MetaImage keeps geometry.
COLOUR_EXTENSION = ".mha"


def _holds_colour(suffix: str) -> bool:
    """Whether the format of extension ``suffix`` can hold a colour image (asked of the format registry)."""
    target = Path(f"x{suffix}")
    fmt = format_of(target)
    try:
        if fmt.accepts is not None:
            fmt.accepts((1, 1), True, target)
    except InputError:
        return False
    return True


def output_name(
    a: str | os.PathLike[str], id: str | None = None, output_format: str | None = None, *, colour: bool = False
) -> str:
    """The output name of a pair: ``<id or a's name without extension>_fused<ext of a's family>``.

    ``a`` without a known image extension (a DICOM folder or file) gives ``.nii.gz``; a
    ``colour`` result whose family cannot hold colour (NIfTI, DICOM) gives :data:`COLOUR_EXTENSION`;
    ``output_format="dicom"``, a format written as a folder (the only other choice), gives no extension.

    Examples
    --------
    >>> output_name("sub-01/T1w.nii"), output_name("ir/0001.jpg", "scene1"), output_name("dicom/series7")
    ('T1w_fused.nii.gz', 'scene1_fused.png', 'series7_fused.nii.gz')
    >>> output_name("rgb/photo.nii.gz", colour=True)
    'photo_fused.mha'
    """
    stem, extension = _stem_and_extension(a)
    stem, extension = _stem_and_extension(a)
    if _folder_format(output_format):
        return f"{id or stem}_fused"
    if colour and not _holds_colour(extension):
        extension = COLOUR_EXTENSION
    return f"{id or stem}_fused{extension}"


def _folder_format(output_format: str | None) -> str | None:
    """``output_format`` checked: None, or the name of a format written as a folder (batch outputs are named by
    their input's family otherwise)."""
    if output_format is not None and not format_named(output_format).folder:
        raise InputError(
            f"A batch names its outputs after a's format family, so output_format may only be 'dicom', not "
            f"{output_format!r}."
        )
    return output_format


def _is_colour(*paths: Path) -> bool:
    """Whether any of ``paths`` (that exist here) declares colour in its header; unreadable ones count as grey
    (their pair fails later with its own reason)."""
    for path in paths:
        try:
            if image_header(path).rgb:
                return True
        except UPFusionError:
            continue
    return False


def read_manifest(
    manifest: str | os.PathLike[str], out_dir: str | os.PathLike[str], output_format: str | None = None
) -> tuple[list[CohortPair], list[str]]:
    """Read and check a manifest (see the module docstring).

    Parameters
    ----------
    manifest
        The CSV file.
    out_dir
        The output folder, which the output paths are put in.
    output_format
        None, or ``"dicom"``: every output is a folder holding a DICOM series.

    Returns
    -------
    pairs, warnings
        One :class:`CohortPair` per data row, in order; and one sentence per
        missing input file or ignored column.

    Raises
    ------
    ManifestError
        With one sentence per problem: unreadable file, missing columns, empty
        cells, unknown modalities, bad ids, two pairs writing the same output.
    """
    manifest = Path(manifest).expanduser().absolute()
    out_dir = Path(out_dir).expanduser().absolute()
    output_format = _folder_format(output_format)
    if not manifest.is_file():
        raise ManifestError([f"The manifest {manifest} does not exist; check the path."])
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ManifestError([f"The manifest {manifest} is not a readable CSV file ({error})."]) from None
    rows = [(number, row) for number, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not rows:
        expected = "a header row (a, b, modality_a, modality_b) and one row per pair"
        raise ManifestError([f"The manifest {manifest} is empty; give {expected}."])
    header = [cell.strip().lower() for cell in rows[0][1]]
    repeated = sorted({c for c in header if c and header.count(c) > 1})
    if repeated:
        names = ", ".join(repr(c) for c in repeated)
        sentence = (
            f"The manifest header names the column{'s' if len(repeated) > 1 else ''} {names} more than once, so it "
            "is not clear which to use; keep one of each."
        )
        raise ManifestError([sentence])
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        columns = f"column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
        sentence = (
            f"The manifest lacks the {columns}; its header must name a, b, modality_a and modality_b (prompt "
            f"and id are optional), but it is: {', '.join(header)}."
        )
        raise ManifestError([sentence])
    known = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    warnings = [f"The manifest column {c!r} is not used and is ignored." for c in header if c not in known]
    if len(rows) == 1:
        raise ManifestError([f"The manifest {manifest} lists no pairs; add one row per pair under its header."])
    problems: list[str] = []
    pairs: list[CohortPair] = []
    for number, row in rows[1:]:
        if len(row) > len(header):
            problems.append(
                f"Row {number} has {len(row)} fields but the header has {len(header)}; quote values that hold commas."
            )
            continue
        row = row + [""] * (len(header) - len(row))  # trailing empty cells may be left out
        cells = {column: cell.strip() for column, cell in zip(header, row)}
        row_problems = [
            f"Row {number}: {column} holds a control character ({_control(cell)}); remove it."
            for column, cell in cells.items() if column in known and _control(cell)
        ]  # fmt: skip
        if row_problems:
            problems.extend(row_problems)
            continue
        for column in REQUIRED_COLUMNS:
            if not cells[column]:
                row_problems.append(f"Row {number} has no {column}; fill it in or delete the row.")
        for column in ("modality_a", "modality_b"):
            if cells[column] and cells[column].upper() not in MODALITIES:
                row_problems.append(
                    f"Row {number}: {column} {cells[column]!r} is unknown; use one of {', '.join(MODALITIES)}."
                )
        pair_id = cells.get("id", "")
        if pair_id and (pair_id in (".", "..") or any(sep in pair_id for sep in "/\\") or pair_id.startswith(".")):
            row_problems.append(f"Row {number}: id {pair_id!r} is not a plain file name; use letters, digits, - or _.")
        problems.extend(row_problems)
        if row_problems:
            continue
        a, b = (_resolve(cells[column], manifest.parent) for column in ("a", "b"))
        colour = not output_format and not _holds_colour(_stem_and_extension(a)[1]) and _is_colour(a, b)
        name = output_name(a, pair_id or None, output_format, colour=colour)
        if len(os.fsencode(name)) > NAME_MAX:
            what = "a shorter id" if pair_id else "a short id (the name of its file a is too long)"
            problems.append(
                f"Row {number}: the output name would be {len(os.fsencode(name))} bytes long, more than the "
                f"{NAME_MAX} a file name may have; give the row {what}."
            )
            continue
        pairs.append(
            CohortPair(
                row=number,
                id=pair_id or _stem_and_extension(a)[0],
                a=a,
                b=b,
                modalities=(cells["modality_a"].upper(), cells["modality_b"].upper()),
                prompt=cells.get("prompt") or None,
                output=out_dir / name,
                output_format=output_format,
            )
        )
    by_output: dict[Path, list[int]] = {}
    for pair in pairs:
        by_output.setdefault(pair.output, []).append(pair.row)
    for output, numbers in by_output.items():
        if len(numbers) > 1:
            listed = ", ".join(str(n) for n in numbers[:-1]) + f" and {numbers[-1]}"
            problems.append(f"Rows {listed} would all write {output.name}; give them different id values.")
    if not problems:
        try:
            inputs = [("the manifest", manifest)]
            inputs += [(f"input {w} of row {p.row}", path) for p in pairs for w, path in (("a", p.a), ("b", p.b))]
            outputs = [(f"the output of row {p.row}", p.output) for p in pairs]
            check_paths(inputs, [*outputs, ("the batch report", out_dir / REPORT_NAME)])
        except InputError as error:
            problems.append(str(error))
    if problems:
        raise ManifestError(problems)
    for pair in pairs:
        for which, path in (("a", pair.a), ("b", pair.b)):
            if path_kind(path) is None:
                warnings.append(f"Row {pair.row}: file {which} {path} does not exist, so this pair will fail.")
    return pairs, warnings


def _control(text: str) -> str:
    """The first control character of ``text`` (a NUL byte, a line feed...) as ``repr`` shows it, or ``""``."""
    found = next((c for c in text if ord(c) < 32 or ord(c) == 127), "")
    return repr(found)[1:-1] if found else ""


def _resolve(cell: str, folder: Path) -> Path:
    path = Path(cell).expanduser()
    return path if path.is_absolute() else folder / path


# ---------------------------------------------------------------------- one pair (runs anywhere)
def _worker_name() -> str:
    """The Dask worker's address inside a worker, else ``host:pid``."""
    distributed = sys.modules.get("distributed")  # never imported just to ask
    if distributed is not None:
        try:
            return distributed.get_worker().address
        except ValueError:
            pass
    return f"{socket.gethostname()}:{os.getpid()}"


def fuse_pair(pair: CohortPair, settings: EngineSettings, overwrite: bool = False) -> PairOutcome:
    """Read, fuse and write one pair in this process, with this process's cached engine; never raises for a bad pair.

    Parameters
    ----------
    pair
        The pair; its inputs are read here and its output written here (atomically).
    settings
        The engine settings (the engine is built once per process and reused).
    overwrite
        Replace an existing output.

    Returns
    -------
    PairOutcome
        ``done`` with the fusion's provenance, or ``failed`` with a one-line reason.
    """
    started = time.perf_counter()
    outcome = PairOutcome(pair, "failed", worker=_worker_name())
    try:
        options = {name: getattr(settings, name) for name in EngineOptions.names()}
        result, _ = fuse_files(pair.a, pair.b, pair.output, overwrite=overwrite, modalities=pair.modalities,
                               prompt=pair.prompt, axis=settings.axis, format=pair.output_format,
                               **options)  # fmt: skip
        outcome.status, outcome.provenance = "done", json.loads(json.dumps(result.info, default=str))
    except UPFusionError as error:
        outcome.reason = str(error)
    except Exception as error:  # noqa: BLE001 - one bad pair must not stop the batch
        outcome.reason = f"{type(error).__name__}: {error}"
    outcome.seconds = time.perf_counter() - started
    return outcome


def _warm_worker(settings: EngineSettings, threads: int | None) -> str:
    """Run on each worker before the pairs: set torch's threads and load the engine once."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    engine = settings.engine()
    return f"{_worker_name()} {engine.device}"


# ---------------------------------------------------------------------- the batch
@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (``flock`` of the folder; released when the process ends,
    however), so that a batch leaves no lock file behind."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError as error:
        raise InputError(os_error_sentence(error, folder)) from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UPFusionError(
                f"Another upfusion batch is writing into {folder}; wait for it to end or choose another output folder."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _remove_partials(pairs: Sequence[CohortPair]) -> int:
    """Remove the staging folders that killed runs left for these outputs; returns how many."""
    removed = 0
    for pair in pairs:
        for partial in pair.output.parent.glob(f"{glob.escape(partial_prefix(pair.output))}*.partial"):
            shutil.rmtree(partial, ignore_errors=True)
            removed += 1
    return removed


def _previous_provenance(path: Path) -> dict[str, dict[str, Any]]:
    """``output -> provenance`` of the pairs a previous report records as done (empty if there is none)."""
    try:
        pairs = json.loads(path.read_text())["pairs"]
        return {p["output"]: p["provenance"] for p in pairs if p.get("status") == "done" and p.get("provenance")}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


class _Executor:
    """Runs pairs in this process, or on a Dask cluster (:class:`~.cluster.DaskPool`), and yields outcomes as they
    finish."""

    def __init__(self, settings: EngineSettings, scheduler: str | None, local_workers: int | None) -> None:
        self.settings, self.pool = settings, None
        if scheduler is None and not local_workers:
            settings.engine()  # load the model now: a model problem stops the batch with one sentence
            self.where = "in-process"
            return
        from .cluster import DaskPool

        self.pool = DaskPool(scheduler, local_workers, functools.partial(_warm_worker, settings))
        self.where = self.pool.where

    def run(self, pairs: Sequence[CohortPair], overwrite: bool) -> Iterator[PairOutcome]:
        if self.pool is None:
            for pair in pairs:
                yield fuse_pair(pair, self.settings, overwrite)
            return
        for pair, outcome in self.pool.map(fuse_pair, pairs, settings=self.settings, overwrite=overwrite):
            if isinstance(outcome, BaseException):  # e.g. a worker died: that pair fails, the batch goes on
                outcome = PairOutcome(pair, "failed", f"{type(outcome).__name__}: {outcome}")
            yield outcome

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def run_cohort(
    manifest: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    settings: EngineSettings | None = None,
    scheduler: str | None = None,
    local_workers: int | None = None,
    force: bool = False,
    on_outcome: Callable[[PairOutcome, CohortReport], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    output_format: str | None = None,
) -> CohortReport:
    """Fuse every pair of ``manifest`` into ``out_dir``, skipping finished ones (see the module docstring).

    Parameters
    ----------
    manifest
        The CSV manifest.
    out_dir
        The output folder (created if needed); the report goes there too.
    settings
        Model, device, precision, batch size and axis for every pair.
    scheduler
        Address of a Dask scheduler to run the pairs on.
    local_workers
        Without ``scheduler``: run on a local cluster of this many worker processes;
        None or 0 runs the pairs one after the other in this process.
    force
        Fuse pairs whose output exists again, replacing it.
    on_outcome
        Called in this process after each pair with its outcome and the report so far.
    on_warning
        Called with each warning sentence (missing input files, ignored columns,
        staging folders removed) before the pairs run.
    output_format
        None (each output keeps ``a``'s format family) or ``"dicom"`` (each output is a
        DICOM series folder).

    Returns
    -------
    CohortReport
        Also written to ``out_dir/upfusion_batch_report.json``.  If the run is
        interrupted (KeyboardInterrupt), the report is written with state
        ``interrupted`` and the exception propagates.

    Raises
    ------
    ManifestError
        The manifest has problems (nothing was run).
    UPFusionError
        The model cannot be loaded, the scheduler cannot be reached, or another
        batch writes into ``out_dir``.
    """
    if scheduler is not None and local_workers:
        raise InputError("Give either a scheduler address or a number of local workers, not both.")
    settings = settings or EngineSettings()
    out_dir = Path(out_dir).expanduser().absolute()
    if path_kind(out_dir) == "file":
        raise InputError(f"The output folder {out_dir} is a file; give a folder (it is created if needed).")
    pairs, warnings = read_manifest(manifest, out_dir, output_format)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(os_error_sentence(error, out_dir)) from None
    with _folder_lock(out_dir):
        removed = _remove_partials(pairs)
        if removed:
            warnings.append(f"Removed {removed} partial output{'s' if removed > 1 else ''} left by an interrupted run.")
        for warning in warnings:
            if on_warning is not None:
                on_warning(warning)
        report = CohortReport(
            Path(manifest).expanduser().absolute(),
            out_dir,
            {**dataclasses.asdict(settings), "force": force, "scheduler": scheduler, "local_workers": local_workers,
             "output_format": output_format},
            [PairOutcome(pair, "pending") for pair in pairs],
            warnings,
        )
        previous = _previous_provenance(report.path)
        todo = []
        for outcome in report.outcomes:
            if outcome.pair.output.exists() and not force:
                outcome.status = "skipped"
                outcome.reason = f"{outcome.pair.output.name} already exists (pass --force to fuse it again)."
                outcome.provenance = previous.get(str(outcome.pair.output))
            else:
                todo.append(outcome.pair)
        index = {outcome.pair.row: i for i, outcome in enumerate(report.outcomes)}
        executor = _Executor(settings, scheduler, local_workers) if todo else None
        report.settings["where"] = executor.where if executor else "nothing to run"
        last_write = 0.0
        try:
            report.write()
            for outcome in executor.run(todo, force) if executor else ():
                report.outcomes[index[outcome.pair.row]] = outcome
                if time.monotonic() - last_write > _REPORT_EVERY_S:
                    report.write()
                    last_write = time.monotonic()
                if on_outcome is not None:
                    on_outcome(outcome, report)
            report.state = "finished"
        except BaseException:
            report.state = "interrupted"
            raise
        finally:
            report.finished = time.time()
            report.write()
            if executor is not None:
                try:
                    executor.close()
                finally:  # its workers are gone: what they had half-written can go too
                    _remove_partials(todo)
    return report


def format_summary(report: CohortReport) -> str:
    """A table of pairs and seconds per status, the failed pairs' reasons and the report's path."""
    lines = [f"{'status':<9}{'pairs':>7}{'seconds':>10}"]
    for status in ("done", "skipped", "failed", "pending"):
        chosen = [o for o in report.outcomes if o.status == status]
        if chosen or status != "pending":
            lines.append(f"{status:<9}{len(chosen):>7}{sum(o.seconds for o in chosen):>10.1f}")
    wall = (report.finished or time.time()) - report.started
    lines.append(f"{'total':<9}{len(report.outcomes):>7}{wall:>10.1f}  (wall clock, {report.settings.get('where')})")
    failed = [o for o in report.outcomes if o.status == "failed"]
    if failed:
        lines.append("failed pairs:")
        lines.extend(f"  {o.pair.id} (row {o.pair.row}): {o.reason}" for o in failed)
    lines.append(f"report: {report.path}")
    return "\n".join(lines)
