"""Issue 17: a fuzzing pass over the readers and the checkpoint loader, on a bounded budget (a few hundred mutated
files per run).  Whatever the bytes, the answer is an image (or a network), or one sentence (an ``UPFusionError``);
never another exception.  ``fuzz/fuzz_inputs.py`` runs the same oracle for hours with atheris."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from hostile import seed_checkpoints, seed_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_upfusion.engine.io import image_header, read_image
from napari_upfusion.errors import UPFusionError
from napari_upfusion.model import load_model

_FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    return {ext: path.read_bytes() for ext, path in seed_files(tmp_path_factory.mktemp("seeds")).items()}


@pytest.fixture(scope="module")
def checkpoint_seeds(tmp_path_factory, tiny_config) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {ext: path.read_bytes() for ext, path in seed_checkpoints(folder, tiny_config).items()}


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """``original`` with a few bytes changed (mostly in its first 512, where headers are), a number of its text
    header replaced by another, and perhaps cut short."""
    data = bytearray(original)
    for _ in range(draw(st.integers(0, 6))):
        where = draw(st.integers(0, min(len(data), 512) - 1) | st.integers(0, len(data) - 1))
        data[where] = draw(st.integers(0, 255))
    numbers = list(re.finditer(rb"\d+", bytes(data[:1024])))
    if numbers and draw(st.booleans()):
        match = draw(st.sampled_from(numbers))
        value = draw(st.sampled_from([0, 1, 3, 4, 255, 256, 65535, 2**31, 2**40, 10**12]) | st.integers(0, 10**6))
        data[match.start() : match.end()] = str(value).encode()
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _fuzz(original: bytes, name: str, steps, folder_factory) -> None:
    """Write mutations of ``original`` as ``name`` and give each to ``steps``: each returns, or refuses in one
    sentence; any other exception fails the test."""

    @_FUZZ
    @given(data=mutated(original))
    def fuzz(data: bytes) -> None:
        path = folder_factory.mktemp("fuzz") / name
        path.write_bytes(data)
        for step in steps:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    step(path)
                except UPFusionError as error:
                    assert str(error).strip(), "an empty refusal"

    fuzz()


@pytest.mark.parametrize("ext", ["nii", "nii.gz", "mha", "nrrd", "dcm", "png", "jpg", "tif"])
def test_readers_answer_any_mutation_with_an_image_or_a_sentence(ext, seeds, tmp_path_factory):
    _fuzz(seeds[ext], f"input.{ext}", (image_header, read_image), tmp_path_factory)


@pytest.mark.parametrize("ext", ["safetensors", "pth", "pth.gz"])
def test_the_checkpoint_loader_answers_any_mutation_with_a_network_or_a_sentence(ext, checkpoint_seeds,
                                                                               tmp_path_factory):  # fmt: skip
    _fuzz(checkpoint_seeds[ext], f"weights.{ext}", (load_model,), tmp_path_factory)


@pytest.mark.parametrize(
    "name", ["gdcm_memory_1.dcm", "gdcm_memory_2.dcm", "gdcm_slow_3.dcm", "metaio_ndims.mha", "tiff_page_loop.tif"]
)
def test_damaged_files_found_by_fuzzing_are_refused_in_bounded_memory(name, tmp_path):
    """Files of about 1 kB found by atheris on which GDCM alone takes 2.2 GB, 1.4 GB, and 0.9 GB with 2-12 s while it
    reads the header, MetaIO 10 s on ``NDims = 999999996``, and a 284-byte TIFF whose chain of pages loops (tifffile
    walked it for ever: over a minute, then killed): refused from pydicom's reading of the tags or from
    the declared dimensions, before GDCM or MetaIO see them.  The peak resident memory of the process that reads the
    header (VmHWM: ``ru_maxrss`` would count the test process it was forked from) and of its own child is measured."""
    import subprocess
    import sys

    source = Path(__file__).parent / "data" / "fuzz" / name
    code = (
        "import resource, sys\nfrom napari_upfusion.engine.io import image_header\nfrom napari_upfusion.errors import "
        "UPFusionError\ntry:\n    image_header(sys.argv[1])\nexcept UPFusionError as error:\n    print(error)\n"
        "own = [int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM')]\n"
        "print(max(own + [resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(source)], capture_output=True, text=True, check=False,
                          timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    message, peak_kb = done.stdout.strip().splitlines()
    assert re.search(r"(is not a DICOM image|is not a readable DICOM image|is damaged|damaged file meta header|"
                     r"declares 999999996 dimensions|is a damaged TIFF)", message), message
    assert int(peak_kb) < 600 << 10, f"{int(peak_kb) >> 10} MB: the header was read without a bound"


def test_a_damaged_zip_checkpoint_found_by_fuzzing_is_one_sentence():
    """atheris found a .pth whose zip64 end record claims several disks: the standard library's ``is_zipfile`` raised
    ``BadZipFile`` (a traceback) instead of answering False."""
    from napari_upfusion.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"zip_multidisk\.pth' is truncated or corrupted; download or copy it"):
        load_model(Path(__file__).parent / "data" / "fuzz" / "zip_multidisk.pth")
