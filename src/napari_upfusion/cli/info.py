"""``upfusion info``: what this installation has — version, devices, weights and where they were found."""

from __future__ import annotations

import argparse
import platform


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return sub.add_parser("info", help="show the version, devices and which weights were found where")


def _status(finder) -> str:
    try:
        found = finder()
    except Exception as error:  # noqa: BLE001 - every failure here is reported as text
        return f"not found: {error}"
    return f"found: {found}" if found else "not found"


def collect() -> dict[str, str]:
    """The facts ``upfusion info`` prints, as a dict (used by tests and the widget's About text)."""
    from importlib.metadata import version

    from .._version import __version__
    from ..engine.registry import available_fusers
    from ..engine.runner import describe_devices
    from ..model.checkpoint.weights import bundled_weights, find_paper_checkpoint
    from ..model.factory import list_configs
    from ..model.runtime import config_runtime
    from ..model.text.clip import CLIP_PRECISION, clip_device, find_clip_weights
    from ..utils.files import cache_dir

    return {
        "napari-upfusion": __version__,
        "python": platform.python_version(),
        "torch": version("torch"),
        "devices": describe_devices(),
        "configs": ", ".join(list_configs()),
        "fusers": ", ".join(available_fusers()),
        "cache folder": str(cache_dir()),
        "small weights": _status(bundled_weights),
        "paper weights": _status(find_paper_checkpoint),
        "CLIP ViT-B/32": _status(find_clip_weights),
        "CLIP codes": _clip_codes(clip_device(), CLIP_PRECISION),
        "auto precision": "; ".join(f"{name}: {_auto_precisions(config_runtime(name))}" for name in list_configs()),
    }


def _clip_codes(device, precision: str) -> str:
    """Where new CLIP prompt codes are computed here, next to where the authors computed theirs."""
    if device.type == "cuda":
        return f"new codes on CUDA in {precision}, as the authors computed theirs"
    return (
        f"new codes on the CPU in {precision} (the authors used CUDA in {precision}; CPU and CUDA codes may differ "
        "in the last bits); codes cached from a CUDA run are used first"
    )


def _auto_precisions(hints) -> str:
    """What ``precision="auto"`` gives weights with runtime ``hints`` here on the CPU and on any CUDA GPU."""
    from ..engine.runner import resolve_device, resolve_precision, validated_precision

    cpu = resolve_device("cpu")
    on_cpu = resolve_precision("auto", cpu, validated_precision(hints, cpu))
    on_gpu = validated_precision(hints, "cuda")
    tf32 = " (TF32 off)" if on_gpu == "fp32" else ""
    return f"{on_cpu} on this CPU, {on_gpu} on CUDA{tf32}"


def run(args: argparse.Namespace) -> int:
    facts = collect()
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    return 0
