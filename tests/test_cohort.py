"""Cohort fusion from a CSV manifest: outputs, geometry, resuming, failures, reports, in-process and on Dask."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_upfusion.batch.cohort import (
    REPORT_NAME,
    EngineSettings,
    ManifestError,
    output_name,
    read_manifest,
    run_cohort,
)
from napari_upfusion.cli import main
from napari_upfusion.errors import InputError

RNG = np.random.default_rng(3)
AVERAGE = EngineSettings(model="average", device="cpu")


def oblique(shift: float = 0.0) -> np.ndarray:
    affine = np.array([[1.1, 0.1, 0.0, -12.0], [0.0, 0.9, 0.1, 20.0], [0.0, 0.0, 2.5, 4.0], [0.0, 0.0, 0.0, 1.0]])
    affine[:3, 3] += shift
    return affine


def save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def write_manifest(folder: Path, rows: list[str], header: str = "a,b,modality_a,modality_b,prompt,id") -> Path:
    path = folder / "cohort.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    """Three MRI/PET pairs in data/ (the third PET on another grid) and a manifest with relative paths."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        save(data / f"sub{i}_T1w.nii.gz", RNG.integers(0, 900, (24, 20, 6)).astype(np.int16), oblique())
        pet_shape, pet_affine = ((24, 20, 6), oblique()) if i < 2 else ((20, 18, 5), oblique(shift=3.0))
        save(data / f"sub{i}_pet.nii.gz", (RNG.random(pet_shape) * 7).astype(np.float32), pet_affine)
    return write_manifest(
        tmp_path,
        [
            "data/sub0_T1w.nii.gz,data/sub0_pet.nii.gz,MRI,PET,,",
            "data/sub1_T1w.nii.gz,data/sub1_pet.nii.gz,mri,pet,,second",
            f"{data}/sub2_T1w.nii.gz,data/sub2_pet.nii.gz,MRI,PET,,",
        ],
    )


def report(out: Path) -> dict:
    return json.loads((out / REPORT_NAME).read_text())


# ---------------------------------------------------------------------- names and manifests
def test_output_names_keep_the_format_family():
    assert output_name("x/sub-01_T1w.nii") == "sub-01_T1w_fused.nii.gz"
    assert output_name("x/sub-01_T1w.nii.gz", "s1") == "s1_fused.nii.gz"
    assert output_name("ct.MHD") == "ct_fused.mha"
    assert output_name("a.nhdr") == "a_fused.nrrd"
    assert output_name("vis/0001.jpg") == "0001_fused.png"
    assert output_name("vis/0001.tiff") == "0001_fused.tif"
    assert output_name("dicom/series7") == "series7_fused.nii.gz"
    assert output_name("dicom/series7", output_format="DICOM") == "series7_fused"  # a series folder
    assert output_name("x/T1w.nii.gz", "s1", "dicom") == "s1_fused"
    with pytest.raises(InputError, match="may only be 'dicom'"):
        output_name("x/T1w.nii.gz", output_format="nifti")


@pytest.mark.parametrize(
    "header, rows, expected",
    [
        ("a,b,modality", ["x.nii,y.nii,MRI"], ["lacks the columns modality_a, modality_b"]),
        ("a,b,modality_a,modality_b", ["x.nii,y.nii,MRT,PET", "z.nii,y.nii,MRI,"],
         ["Row 2: modality_a 'MRT' is unknown", "Row 3 has no modality_b"]),
        ("a,b,modality_a,modality_b,id", ["x.nii,y.nii,MRI,PET,s", "z.nii.gz,y.nii,MRI,PET,s", "s.nii,y.nii,MRI,PET,"],
         ["Rows 2, 3 and 4 would all write s_fused.nii.gz"]),
        ("a,b,modality_a,modality_b,id", ["x.nii,y.nii,MRI,PET,../up"], ["Row 2: id '../up' is not a plain file name"]),
        ("a,b,modality_a,modality_b", ["x.nii,y.nii,MRI,PET,extra"], ["Row 2 has 5 fields but the header has 4"]),
        ("a,b,modality_a,modality_b", [], ["lists no pairs"]),
    ],
    ids=["columns", "modality-and-empty", "duplicates", "id", "fields", "no-rows"],
)
def test_bad_manifests_get_one_sentence_per_problem(tmp_path, header, rows, expected):
    manifest = write_manifest(tmp_path, rows, header)
    with pytest.raises(ManifestError) as error:
        run_cohort(manifest, tmp_path / "out", settings=AVERAGE)
    assert len(error.value.problems) == len(expected)
    for problem, start in zip(error.value.problems, expected):
        assert start in problem and problem.endswith(".") and "\n" not in problem
    assert not (tmp_path / "out").exists()  # nothing done


def test_missing_manifest_and_missing_files(tmp_path, cohort):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv", tmp_path)
    manifest = write_manifest(tmp_path, ["data/sub0_T1w.nii.gz,data/gone.nii.gz,MRI,PET"],  # trailing cells left out
                              "a,b,modality_a,modality_b,prompt,id,note")
    pairs, warnings = read_manifest(manifest, tmp_path / "out")
    assert pairs[0].a == tmp_path / "data" / "sub0_T1w.nii.gz" and pairs[0].id == "sub0_T1w"
    assert warnings == [
        "The manifest column 'note' is not used and is ignored.",
        f"Row 2: file b {tmp_path / 'data' / 'gone.nii.gz'} does not exist, so this pair will fail.",
    ]


# ---------------------------------------------------------------------- running in this process
def test_batch_writes_every_pair_on_its_reference_grid_then_skips_them(tmp_path, cohort):
    out = tmp_path / "out"
    first = run_cohort(cohort, out, settings=AVERAGE)
    assert first.counts() == {"done": 3, "skipped": 0, "failed": 0, "pending": 0}
    names = ["sub0_T1w_fused.nii.gz", "second_fused.nii.gz", "sub2_T1w_fused.nii.gz"]
    for i, name in enumerate(names):
        fused, reference = nib.load(out / name), nib.load(tmp_path / "data" / f"sub{i}_T1w.nii.gz")
        assert fused.shape == reference.shape
        np.testing.assert_allclose(fused.affine, reference.affine, atol=1e-6)
        values = fused.get_fdata()
        assert values.min() >= 0 and values.max() <= 1 and values.std() > 0
    saved = report(out)
    assert saved["state"] == "finished" and saved["counts"]["done"] == 3
    assert [p["output"] for p in saved["pairs"]] == [str(out / n) for n in names]
    assert all(p["status"] == "done" and p["reason"] is None and p["seconds"] > 0 for p in saved["pairs"])
    assert saved["pairs"][2]["provenance"]["model"] == "average"
    assert saved["pairs"][2]["provenance"]["inputs"][0].endswith("sub2_T1w.nii.gz")
    stamps = {n: (out / n).stat().st_mtime_ns for n in names}

    second = run_cohort(cohort, out, settings=AVERAGE)
    assert second.counts() == {"done": 0, "skipped": 3, "failed": 0, "pending": 0}
    assert {n: (out / n).stat().st_mtime_ns for n in names} == stamps
    again = report(out)
    assert all("already exists" in p["reason"] for p in again["pairs"])
    assert again["pairs"][0]["provenance"] == saved["pairs"][0]["provenance"]  # kept from the run that made it

    assert run_cohort(cohort, out, settings=AVERAGE, force=True).counts()["done"] == 3


def test_failed_pairs_are_reported_and_the_batch_goes_on(tmp_path, cohort, capsys):
    (tmp_path / "data" / "corrupt.nii.gz").write_bytes(b"not a nifti file")
    rows = cohort.read_text().splitlines()[1:] + [
        "data/sub0_T1w.nii.gz,data/corrupt.nii.gz,MRI,PET,,bad",
        "data/absent.nii.gz,data/sub0_pet.nii.gz,MRI,PET,,lost",
    ]
    manifest = write_manifest(tmp_path, rows)
    out = tmp_path / "out"
    status = main(["batch", str(manifest), "--out", str(out), "--model", "average", "--device", "cpu"])
    assert status == 1
    printed = capsys.readouterr()
    assert "does not exist, so this pair will fail" in printed.err
    assert "done           3" in printed.out and "failed         2" in printed.out
    pairs = {p["id"]: p for p in report(out)["pairs"]}
    assert pairs["bad"]["status"] == "failed"
    assert pairs["bad"]["reason"] == (
        f"{tmp_path / 'data' / 'corrupt.nii.gz'} is not a readable NIfTI image; check that the file is complete."
    )
    absent = tmp_path / "data" / "absent.nii.gz"
    assert pairs["lost"]["reason"] == f"{absent} does not exist; check the path and try again."
    assert [p["status"] for p in pairs.values()].count("done") == 3
    assert not (out / "bad_fused.nii.gz").exists() and not (out / "lost_fused.nii.gz").exists()


def test_an_interrupted_batch_resumes(tmp_path, cohort):
    out = tmp_path / "out"

    def stop_after_first(outcome, report_so_far):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cohort(cohort, out, settings=AVERAGE, on_outcome=stop_after_first)
    saved = report(out)
    assert saved["state"] == "interrupted"
    assert [p["status"] for p in saved["pairs"]] == ["done", "pending", "pending"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["sub0_T1w_fused.nii.gz", REPORT_NAME]

    # a run killed while writing leaves a staging folder, never a partial output
    partial = out / ".second_fused.nii.gz.k1ll3d.partial"
    partial.mkdir()
    (partial / "second_fused.nii.gz").write_bytes(b"half a file")
    warnings: list[str] = []
    resumed = run_cohort(cohort, out, settings=AVERAGE, on_warning=warnings.append)
    assert [o.status for o in resumed.outcomes] == ["skipped", "done", "done"]
    assert warnings == ["Removed 1 partial output left by an interrupted run."]
    assert not partial.exists()
    assert nib.load(out / "second_fused.nii.gz").get_fdata().std() > 0
    assert report(out)["state"] == "finished"


def test_a_pair_with_the_small_model(tmp_path, cohort):
    manifest = write_manifest(tmp_path, cohort.read_text().splitlines()[1:2])
    result = run_cohort(manifest, tmp_path / "out", settings=EngineSettings(model="small", device="cpu"))
    (outcome,) = result.outcomes
    assert outcome.status == "done", outcome.reason
    assert outcome.provenance["model"] == "small" and outcome.provenance["prompt"]
    assert len(outcome.provenance["checkpoint_sha256"]) == 64
    assert nib.load(outcome.pair.output).shape == (24, 20, 6)


def test_one_batch_per_folder(tmp_path, cohort):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    descriptor = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        with pytest.raises(Exception, match="Another upfusion batch is writing into"):
            run_cohort(cohort, out, settings=AVERAGE)
    finally:
        os.close(descriptor)
    assert run_cohort(cohort, out, settings=AVERAGE).counts()["done"] == 3
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no lock file, no staging folder left


# ---------------------------------------------------------------------- on a Dask cluster
@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0",
        scheduler_kwargs={"dashboard": False}, silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster


def test_batch_on_a_dask_cluster(tmp_path, cohort, dask_cluster):
    from distributed import Client

    (tmp_path / "data" / "corrupt.nii.gz").write_bytes(b"not a nifti file")
    rows = cohort.read_text().splitlines()[1:] + ["data/sub0_T1w.nii.gz,data/corrupt.nii.gz,MRI,PET,,bad"]
    manifest = write_manifest(tmp_path, rows)
    out = tmp_path / "out"
    result = run_cohort(manifest, out, settings=AVERAGE, scheduler=dask_cluster.scheduler_address)
    assert result.counts() == {"done": 3, "skipped": 0, "failed": 1, "pending": 0}
    saved = report(out)
    workers = set(dask_cluster.scheduler_info["workers"])
    assert {p["worker"] for p in saved["pairs"]} <= workers
    assert "not a readable NIfTI image" in saved["pairs"][3]["reason"]
    fused = nib.load(out / "sub2_T1w_fused.nii.gz")
    np.testing.assert_allclose(fused.affine, oblique(), atol=1e-6)
    with Client(dask_cluster) as client:  # one engine per worker, kept for the next pairs
        cached = client.run(lambda: len(__import__("napari_upfusion.engine.api").engine.api._ENGINES))
        assert set(cached.values()) == {1}
    again = run_cohort(manifest, out, settings=AVERAGE, scheduler=dask_cluster.scheduler_address)
    assert [o.status for o in again.outcomes] == ["skipped", "skipped", "skipped", "failed"]


@pytest.mark.slow
def test_cli_runs_on_local_worker_processes(tmp_path, cohort, capsys):
    out = tmp_path / "out"
    assert main(["batch", str(cohort), "--out", str(out), "--model", "average", "--local-workers", "2", "-q"]) == 0
    assert "local cluster of 2 worker processes" in capsys.readouterr().out
    assert len({p["worker"] for p in report(out)["pairs"]}) >= 1
    assert all((out / name).is_file() for name in ("sub0_T1w_fused.nii.gz", "second_fused.nii.gz"))
