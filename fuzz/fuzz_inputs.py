"""The long fuzzing run of issue 17: atheris (libFuzzer for Python) over the image readers and the checkpoint loader.

    pip install atheris
    PYTHONPATH=src python fuzz/fuzz_inputs.py -max_total_time=3600 -rss_limit_mb=6144 -timeout=60 fuzz/corpus

The oracle is the one of ``tests/test_fuzz.py``: whatever the bytes, :func:`~napari_upfusion.engine.io.read_image`
(and :func:`~napari_upfusion.engine.io.image_header`) returns an image and
:func:`~napari_upfusion.model.load_model` a network, or each refuses in one sentence (an
:class:`~napari_upfusion.errors.UPFusionError`); any other exception, a crash, a time-out or a memory blow-up is
a finding, saved by libFuzzer as ``crash-*`` / ``timeout-*`` / ``oom-*``.  The first byte of an input chooses
the target (a file format or a checkpoint kind), the rest is the file.  The corpus folder is seeded on the first
run with one small valid file of every target (``tests/hostile.py``).
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

with atheris.instrument_imports(include=["napari_upfusion", "nibabel", "tifffile", "PIL", "safetensors"]):
    from napari_upfusion.engine.io import image_header, read_image
    from napari_upfusion.errors import UPFusionError
    from napari_upfusion.model import UPFusionConfig, load_model

import hostile

IMAGES = ["nii", "nii.gz", "mha", "nrrd", "dcm", "png", "jpg", "tif"]
WEIGHTS = ["safetensors", "pth", "pth.gz"]
TARGETS = IMAGES + WEIGHTS
TINY = UPFusionConfig(name="tiny", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2),
                      backbone="convnext_atto", backbone_input_size=32)  # fmt: skip
WORK = Path(tempfile.mkdtemp(prefix="upfusion-fuzz-"))


def seed(corpus: Path) -> None:
    """One valid file of every target, prefixed by its target byte, unless the corpus holds inputs already."""
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    files = {**hostile.seed_files(WORK / "seeds"), **hostile.seed_checkpoints(WORK / "seeds", TINY)}
    for index, target in enumerate(TARGETS):
        (corpus / f"seed-{target}").write_bytes(bytes([index]) + files[target].read_bytes())


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    target = TARGETS[data[0] % len(TARGETS)]
    path = WORK / f"input.{target}"
    path.write_bytes(data[1:])
    steps = (image_header, read_image) if target in IMAGES else (load_model,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in steps:
            try:
                step(path)
            except UPFusionError:
                pass


if __name__ == "__main__":
    corpus = [Path(a) for a in sys.argv[1:] if not a.startswith("-")]
    for folder in corpus:
        seed(folder)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
