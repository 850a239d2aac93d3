"""The classical baseline fusers: exact values, the pyramid's properties, shapes, and their registration."""

from __future__ import annotations

import pytest
import torch

from napari_upfusion.engine.registry import available_fusers, build_fuser, uses_text
from napari_upfusion.errors import InputError
from napari_upfusion.fusers import classical as B


def _pair(shape=(2, 1, 32, 48)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


@pytest.mark.parametrize("name", ["average", "maximum", "laplacian"])
def test_registered_without_text_or_weights(name):
    info = available_fusers()[name]
    assert not info.needs_weights and info.description
    fuser = build_fuser(name, torch.device("cpu"))
    assert isinstance(fuser, torch.nn.Module)
    assert fuser.uses_text is False and not uses_text(fuser)
    assert not any(True for _ in fuser.parameters())


def test_average_and_maximum_are_exact():
    a, b = _pair()
    assert torch.equal(B.AverageFuser()(a, b), (a + b) / 2)
    assert torch.equal(B.MaximumFuser()(a, b), torch.maximum(a, b))


def test_text_code_is_ignored():
    a, b = _pair()
    code = torch.randn(1, 512)
    for fuser in (B.AverageFuser(), B.MaximumFuser(), B.LaplacianFuser()):
        assert torch.equal(fuser(a, b, code), fuser(a, b))


@pytest.mark.parametrize("shape", [(1, 1, 256, 256), (3, 1, 24, 40), (1, 1, 8, 8), (1, 1, 8, 16), (2, 1, 13, 9)])
def test_laplacian_of_identical_inputs_is_the_input(shape):
    a, _ = _pair(shape)
    out = B.LaplacianFuser()(a, a)
    assert out.shape == a.shape
    assert torch.allclose(out, a, atol=1e-5)


def test_laplacian_pyramid_collapses_exactly():
    a, _ = _pair((1, 1, 64, 40))
    pyramid = B.laplacian_pyramid(a, 3)
    assert [tuple(p.shape[-2:]) for p in pyramid] == [(64, 40), (32, 20), (16, 10), (8, 5)]
    assert torch.allclose(B.collapse_pyramid(pyramid), a, atol=1e-6)


def test_laplacian_keeps_the_stronger_detail_of_each_input():
    h, w = 64, 64
    checker = (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 * 0.4 - 0.2  # finest-scale texture
    a = torch.full((1, 1, h, w), 0.5)
    b = a.clone()
    a[..., :, : w // 2] += checker[:, : w // 2]  # texture on the left in A
    b[..., :, w // 2 :] += checker[:, w // 2 :]  # and on the right in B
    out = B.LaplacianFuser()(a, b)
    left, right = (slice(4, -4), slice(4, w // 2 - 4)), (slice(4, -4), slice(w // 2 + 4, -4))
    assert torch.allclose(out[0, 0][left], a[0, 0][left], atol=0.02)
    assert torch.allclose(out[0, 0][right], b[0, 0][right], atol=0.02)
    # the average halves both textures
    avg = B.AverageFuser()(a, b)
    assert out[0, 0][left].std() > 1.8 * avg[0, 0][left].std()


def test_laplacian_averages_the_base():
    a = torch.full((1, 1, 32, 32), 0.2)
    b = torch.full((1, 1, 32, 32), 0.8)
    assert torch.allclose(B.LaplacianFuser()(a, b), torch.full_like(a, 0.5), atol=1e-6)


def test_laplacian_batch_items_are_independent():
    a, b = _pair((3, 1, 32, 32))
    fused = B.LaplacianFuser()(a, b)
    for i in range(3):
        assert torch.allclose(fused[i : i + 1], B.LaplacianFuser()(a[i : i + 1], b[i : i + 1]), atol=1e-6)


def test_pyramid_levels_follow_the_size():
    assert B.pyramid_levels(256, 256) == 4
    assert B.pyramid_levels(576, 768) == 4
    assert B.pyramid_levels(16, 64) == 2
    assert B.pyramid_levels(8, 8) == 1
    assert B.pyramid_levels(6, 200) == 0
    assert B.LaplacianFuser(levels=9)(*_pair((1, 1, 16, 16))).shape == (1, 1, 16, 16)  # capped at what fits


def test_tiny_images_fall_back_to_the_average():
    a, b = _pair((1, 1, 4, 6))
    assert torch.allclose(B.LaplacianFuser()(a, b), (a + b) / 2)


def test_mismatched_shapes_raise_input_error():
    with pytest.raises(InputError, match="different shapes"):
        B.LaplacianFuser()(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 16))
    with pytest.raises(InputError):
        B.LaplacianFuser(levels=-1)
