"""timm's ConvNeXt with weights mapped from torchvision's layout computes torchvision's ConvNeXt."""

from __future__ import annotations

import torch
import torchvision
from conftest import rel_l2

from napari_upfusion.model import torchvision_convnext_to_timm
from napari_upfusion.model.backbones import build_backbone


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
