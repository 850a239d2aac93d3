"""Loading weights: both layouts, every key accounted for, refusal with one sentence, never a download."""

from __future__ import annotations

import gzip
import os
import pickle

import pytest
import torch

from napari_upfusion.errors import CheckpointError, WeightsNotFoundError
from napari_upfusion.model import create_model, find_paper_checkpoint, load_model, save_checkpoint
from napari_upfusion.model.checkpoint.io import read_checkpoint_file
from napari_upfusion.model.checkpoint.weights import PAPER_CHECKPOINT_LINKS


@pytest.fixture()
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return create_model(tiny_config).eval()


def _forward(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(1, 1, 32, 40, generator=g), torch.rand(1, 1, 32, 40, generator=g)
    code = torch.randn(1, 512, generator=g)
    with torch.no_grad():
        return model(a, b, code)


def test_project_format_round_trip(tmp_path, tiny_model):
    path = save_checkpoint(tiny_model, tmp_path / "tiny.safetensors", metadata={"note": "test"})
    loaded = load_model(path)
    assert loaded.config == tiny_model.config
    assert loaded.load_report.layout == "napari-upfusion"
    assert loaded.load_report.metadata["note"] == "test"
    assert not loaded.training and all(p.dtype == torch.float32 for p in loaded.parameters())
    # fp16 storage: the loaded model equals the original with its weights rounded to fp16
    rounded = create_model(tiny_model.config)
    rounded.load_state_dict({k: v.half().float() for k, v in tiny_model.state_dict().items()})
    torch.testing.assert_close(_forward(loaded), _forward(rounded.eval()), rtol=1e-5, atol=1e-5)
    assert not list(tmp_path.glob("*.partial"))


def test_missing_and_unexpected_keys_are_named_and_nothing_loads(tmp_path, tiny_model):
    from safetensors.torch import load_file, save_file

    path = save_checkpoint(tiny_model, tmp_path / "tiny.safetensors")
    state = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    state.pop("output.weight")
    state["extra.weight"] = torch.zeros(3)
    save_file(state, str(tmp_path / "broken.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "broken.safetensors")
    assert info.value.missing == ["output.weight"]
    assert info.value.unexpected == ["extra.weight"]
    message = str(info.value)
    assert "'tiny'" in message and "output.weight" in message and "extra.weight" in message
    assert "nothing was loaded" in message


def test_authors_layout_with_wrong_shapes_names_the_config(tmp_path, tiny_model):
    """A file in the authors' layout but of another width is refused for the 'paper' config."""
    state = {"module.patch_embed.proj.weight": torch.zeros(8, 1, 3, 3), "module.ir_imb.proj.weight": torch.zeros(8, 1, 3, 3)}
    torch.save({"AWF": state}, tmp_path / "Fuse.pth")
    with pytest.raises(CheckpointError, match=r"does not fit the 'paper' UP-Fusion configuration") as info:
        load_model(tmp_path / "Fuse.pth")
    assert "embed_a.weight (file (8, 1, 3, 3), network (48, 1, 3, 3))" in str(info.value)
    assert len(info.value.missing) > 1000


def test_gzip_and_plain_authors_files_load_alike(tmp_path, paper_model):
    """Also accepts a state dict without the 'AWF' wrapper and the 'module.' prefix."""
    from conftest import DATA

    with gzip.open(DATA / "upfusion_paper_patterned.pth.gz") as handle:
        raw = torch.load(handle, map_location="cpu", weights_only=True)["AWF"]
    torch.save({k.removeprefix("module."): v for k, v in raw.items()}, tmp_path / "bare.pth")
    bare = load_model(tmp_path / "bare.pth")
    for key, value in paper_model.state_dict().items():
        assert torch.equal(bare.state_dict()[key], value), key


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"AWF": {"x": _Payload()}}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        read_checkpoint_file(path)
    legacy = tmp_path / "evil_legacy.pth"
    legacy.write_bytes(pickle.dumps({"x": _Payload()}))
    with pytest.raises(CheckpointError, match="could run code|not a PyTorch"):
        read_checkpoint_file(legacy)


def test_truncated_corrupt_and_foreign_files(tmp_path, tiny_model):
    good = save_checkpoint(tiny_model, tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated.safetensors.*not a readable safetensors"):
        load_model(truncated)
    torch.save({"AWF": tiny_model.state_dict()}, tmp_path / "whole.pth")
    cut = tmp_path / "cut.pth"
    cut.write_bytes((tmp_path / "whole.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.pth.*truncated or corrupted"):
        load_model(cut)
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights")
    with pytest.raises(CheckpointError, match="notes.pth.*not a PyTorch or safetensors checkpoint"):
        load_model(text)
    torch.save({"weights": [1, 2, 3]}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="neither in the authors' UP-Fusion layout"):
        load_model(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "absent.pth")


def test_paper_checkpoint_lookup_order_and_instructions(tmp_path, monkeypatch):
    with pytest.raises(WeightsNotFoundError) as info:
        find_paper_checkpoint()
    message = str(info.value)
    assert PAPER_CHECKPOINT_LINKS[0] in message and PAPER_CHECKPOINT_LINKS[1] in message
    assert os.environ["UPFUSION_CACHE_DIR"] in message and "UPFUSION_PAPER_CHECKPOINT" in message
    cached = tmp_path / "cache" / "Fuse.pth"
    monkeypatch.setenv("UPFUSION_CACHE_DIR", str(cached.parent))
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    assert find_paper_checkpoint() == cached
    env_file = tmp_path / "elsewhere.pth"
    env_file.write_bytes(b"x")
    monkeypatch.setenv("UPFUSION_PAPER_CHECKPOINT", str(env_file))
    assert find_paper_checkpoint() == env_file
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"x")
    assert find_paper_checkpoint(explicit) == explicit


def test_unknown_model_name():
    with pytest.raises(CheckpointError, match="no model named 'huge'"):
        load_model("huge")


# ---------------------------------------------------------------------------------------------- runtime hints
def test_runtime_hints_travel_in_the_metadata_not_the_config(tmp_path, tiny_model):
    import json

    from napari_upfusion.model import RuntimeHints

    assert tiny_model.runtime == RuntimeHints()  # "tiny" is not in the packaged table: the defaults
    tiny_model.runtime = RuntimeHints(cpu_precision="bf16", cpu_streams=3)
    path = save_checkpoint(tiny_model, tmp_path / "hinted.safetensors")
    _, metadata = read_checkpoint_file(path)
    assert json.loads(metadata["runtime"]) == {"cpu_precision": "bf16", "gpu_precision": "fp32", "cpu_streams": 3,
                                                "cpu_path": "onnx"}
    assert not {"cpu_precision", "gpu_precision", "cpu_streams", "cpu_path"} & set(json.loads(metadata["config"]))
    loaded = load_model(path)
    assert loaded.runtime == tiny_model.runtime and loaded.config == tiny_model.config


def test_hints_of_older_project_files_are_read_from_their_config(tmp_path, tiny_model):
    """Files written while the hints were config fields (the bundled small weights among them) keep them."""
    import json

    from safetensors.torch import save_file

    from napari_upfusion.model import RuntimeHints, bundled_weights

    _, metadata = read_checkpoint_file(bundled_weights("small"))
    assert "runtime" not in metadata and json.loads(metadata["config"])["cpu_precision"] == "bf16"
    assert load_model("small").runtime == RuntimeHints(cpu_precision="bf16", cpu_streams=2)
    legacy = {**json.loads(tiny_model.config.to_json()), "cpu_streams": 1, "gpu_precision": "bf16"}
    path = tmp_path / "legacy.safetensors"
    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "napari-upfusion", "config": json.dumps(legacy)})
    loaded = load_model(path)
    assert loaded.config == tiny_model.config
    assert loaded.runtime == RuntimeHints(gpu_precision="bf16", cpu_streams=1)


def test_authors_layout_and_new_networks_take_the_packaged_hints_of_their_config(paper_model):
    from napari_upfusion.model import config_runtime

    assert paper_model.load_report.layout == "authors"
    assert paper_model.runtime == config_runtime("paper") and paper_model.runtime.cpu_streams == 1
    assert create_model("small").runtime == config_runtime("small") and config_runtime("small").cpu_precision == "bf16"
