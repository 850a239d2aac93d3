"""Training pairs: every kind, right size and range, deterministic, different but aligned; shards round-trip."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_upfusion.data import samples
from napari_upfusion.data import synthetic as td
from napari_upfusion.data.vocabulary import ANATOMIES, KINDS

SIZE = 96


@pytest.fixture(scope="module")
def pairs() -> list[tuple[np.ndarray, np.ndarray, str]]:
    return [td.make_pair(7, i, SIZE) for i in range(6 * len(KINDS))]


def _edges(x: np.ndarray) -> np.ndarray:
    x = ndi.gaussian_filter(x, 2.0)
    return np.hypot(ndi.sobel(x, 0), ndi.sobel(x, 1))


def _corr(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u - u.mean(), v - v.mean()
    return float((u * v).sum() / np.sqrt((u * u).sum() * (v * v).sum() + 1e-12))


def test_every_kind_size_range_and_quantisation(pairs) -> None:
    assert {k for _, _, k in pairs} == set(KINDS)
    for a, b, kind in pairs:
        for x in (a, b):
            assert x.shape == (SIZE, SIZE) and x.dtype == np.float32
            assert np.isfinite(x).all() and 0.0 <= x.min() and x.max() <= 1.0
            np.testing.assert_allclose(x * 255, np.rint(x * 255), atol=1e-4)
            assert x.std() > 4 / 255, f"flat {kind} image"
        assert np.abs(a - b).mean() > 0.02, f"{kind}: the two images of a pair should differ"


@pytest.mark.parametrize("kind", KINDS)
def test_pairs_are_spatially_aligned(pairs, kind: str) -> None:
    sel = [(a, b) for a, b, k in pairs if k == kind]
    same = np.mean([_corr(_edges(a), _edges(b)) for a, b in sel])
    mixed = np.mean([_corr(_edges(sel[i][0]), _edges(sel[(i + 1) % len(sel)][1])) for i in range(len(sel))])
    assert same > 0.2 and same > mixed + 0.1, (same, mixed)


def test_t1_contrast_jitter_is_quiet_when_outer_tissue_goes_negative(monkeypatch) -> None:
    """A strongly negative texture outside the brain once made the T1 gamma warn (power of a negative)."""
    model = samples.head_model()
    z = sum(model.bbox[0]) // 2
    tissue = model.tissues((z, slice(None), slice(None)))
    monkeypatch.setattr(td, "_correlated_noise", lambda shape, rng, sigma: np.full(shape, -10.0, np.float32))
    seed = next(s for s in range(100) if 0.5 <= np.random.default_rng(s).random() < 0.8)  # draws T1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = td._mri_slice(tissue, np.random.default_rng(seed))
    assert np.isfinite(img[tissue["brain"]]).all()
    assert (img[~tissue["brain"]] <= 0).any(), "the patched texture should make outer tissue negative"


def test_deterministic_per_seed_and_index(pairs) -> None:
    for i in (0, 3, 4, 11):
        a, b, kind = td.make_pair(7, i, SIZE)
        np.testing.assert_array_equal(a, pairs[i][0])
        np.testing.assert_array_equal(b, pairs[i][1])
        assert kind == pairs[i][2]
    other = td.make_pair(8, 0, SIZE)
    assert not np.array_equal(other[0], pairs[0][0])


def test_dataset_iterates_the_same_stream(pairs) -> None:
    ds = td.PairDataset(seed=7, size=SIZE, length=7)
    got = list(ds)
    assert len(got) == len(ds) == 7
    for (a, b, k), (ea, eb, ek) in zip(got, pairs):
        np.testing.assert_array_equal(a, ea)
        np.testing.assert_array_equal(b, eb)
        assert k == ek
    np.testing.assert_array_equal(ds[5][1], pairs[5][1])
    with pytest.raises(IndexError):
        ds[7]


def test_workers_split_the_stream(monkeypatch) -> None:
    import torch.utils.data as tud

    class Info:
        id, num_workers = 1, 2

    monkeypatch.setattr(tud, "get_worker_info", lambda: Info())
    ds = td.PairDataset(seed=7, size=SIZE, length=6)
    assert [k for _, _, k in ds] == [KINDS[i % len(KINDS)] for i in (1, 3, 5)]
    assert isinstance(ds, tud.IterableDataset)


def test_kind_selection_and_sizes() -> None:
    ds = td.PairDataset(seed=1, size=160, kinds=("MRI-SPECT", "IR-VIS"))
    it = iter(ds)
    got = [next(it) for _ in range(4)]
    assert [k for *_, k in got] == ["MRI-SPECT", "IR-VIS"] * 2
    assert all(a.shape == b.shape == (160, 160) for a, b, _ in got)
    with pytest.raises(ValueError):
        td.PairDataset(kinds=("MRI-XRAY",))
    with pytest.raises(TypeError):
        len(td.PairDataset())


def test_generation_is_fast() -> None:
    td.make_pair(0, 0, 128)  # warm the caches (head model, photo materials)
    for i in range(1, len(KINDS)):
        td.make_pair(0, i, 128)
    t = time.perf_counter()
    for i in range(25):
        td.make_pair(0, 100 + i, 128)
    assert time.perf_counter() - t < 10.0  # ~0.25 s on an idle core; generous for shared machines


def test_make_dataset_round_trip(tmp_path) -> None:
    manifest = td.make_dataset(tmp_path / "one", 7, seed=5, size=64, shard_size=3)
    assert [s["pairs"] for s in manifest["shards"]] == [3, 3, 1]
    saved = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert saved == manifest and saved["generator_version"] == td.GENERATOR_VERSION
    got = list(td.read_dataset(tmp_path / "one"))
    assert len(got) == 7
    for i, (a, b, k) in enumerate(got):
        ea, eb, ek = td.make_pair(5, i, 64)
        np.testing.assert_array_equal(a, ea)
        np.testing.assert_array_equal(b, eb)
        assert k == ek
    again = td.make_dataset(tmp_path / "two", 7, seed=5, size=64, shard_size=3)
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]
    assert not list((tmp_path / "one").glob("*.part"))


def test_read_dataset_detects_a_changed_shard(tmp_path) -> None:
    td.make_dataset(tmp_path, 2, seed=0, size=32)
    shard = tmp_path / "shard-00000.npz"
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")
    with pytest.raises(ValueError, match="checksum"):
        list(td.read_dataset(tmp_path))


def test_command_line(tmp_path, capsys) -> None:
    from napari_upfusion.cli import main

    assert main(["make-data", str(tmp_path), "--pairs", "3", "--size", "32", "--kinds", "IR-VIS", "generic"]) == 0
    got = list(td.read_dataset(tmp_path))
    assert [k for *_, k in got] == ["IR-VIS", "generic", "IR-VIS"]
    assert "wrote 3 pairs" in capsys.readouterr().out


def test_upfusion_make_data_subcommand(tmp_path) -> None:
    import argparse

    from napari_upfusion.cli import make_data

    parser = argparse.ArgumentParser(prog="upfusion")
    make_data.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["make-data", str(tmp_path), "--pairs", "2", "--size", "32", "--seed", "4"])
    assert make_data.run(args) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 4 and manifest["n_pairs"] == 2


def test_colin27_head_model_is_the_real_single_subject_brain() -> None:
    """Colin27's brain mask and T1 come from mricron-data's ch2bet; tissue fractions are a partition of unity."""
    import nibabel as nib

    colin, mni = samples.head_model("colin27"), samples.head_model("mni152")
    source = np.asarray(nib.load(samples.colin27_path()).dataobj).transpose(2, 1, 0)
    pad = (colin.brain.shape[0] - source.shape[0]) // 2
    inner = (slice(pad, -pad),) * 3
    assert np.array_equal(colin.brain[inner], source > 0) and not colin.brain[:pad].any()
    gm, wm = colin.gm.astype(np.float32) / 255, colin.wm.astype(np.float32) / 255
    assert (gm + wm <= 1 + 1.5 / 255).all()  # each rounded to 1/255
    assert wm[colin.brain].mean() > 0.3 and gm[colin.brain].mean() > 0.2
    # a single subject is sharper than the 152-subject average: more fine detail inside the brain
    def detail(model: samples.HeadModel) -> float:
        t1 = model.t1.astype(np.float32)
        return float(np.abs(t1 - ndi.gaussian_filter(t1, 1.0))[model.brain].mean())

    assert detail(colin) > 1.2 * detail(mni)
    for (lo, hi), n in zip(colin.bbox, colin.brain.shape):  # the simulated skull and scalp fit the grid
        assert 0 < lo and hi < n


def test_anatomies_choose_the_head_of_medical_pairs() -> None:
    both = [td.make_pair(3, i, 64, kinds=("MRI-CT",)) for i in range(4)]
    again = [td.make_pair(3, i, 64, kinds=("MRI-CT",), anatomies=ANATOMIES) for i in range(4)]
    mni_only = [td.make_pair(3, i, 64, kinds=("MRI-CT",), anatomies=("mni152",)) for i in range(4)]
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(both, again))
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(both, mni_only))
    with pytest.raises(ValueError, match="anatomies must be a non-empty selection"):
        td.make_pair(3, 0, 64, anatomies=("colin28",))
