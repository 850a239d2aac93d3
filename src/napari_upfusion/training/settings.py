"""What determines a training run, and the kinds of training pair: plain data, no torch.

A module of its own so that ``upfusion train --help`` and ``upfusion make-data
--help`` can show the defaults without loading torch or scipy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["KINDS", "TrainSettings"]

#: The kinds of pair the generator of :mod:`napari_upfusion.training_data` makes.
KINDS: tuple[str, ...] = ("MRI-CT", "MRI-PET", "MRI-SPECT", "IR-VIS", "generic")


@dataclass
class TrainSettings:
    """Everything that determines a training run (recorded in the weights' metadata)."""

    config: str = "small"
    steps: int = 20000
    #: Length of the cosine schedule; 0 means ``steps``.  A larger value stops a run early on a longer
    #: schedule, which a later resume with ``steps`` raised continues unchanged.
    schedule_steps: int = 0
    batch_size: int = 8
    crop: int = 128
    lr: float = 5e-4
    min_lr: float = 2e-5
    warmup: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    code_seed: int = 2026
    kinds: tuple[str, ...] = KINDS
    precision: str = "bf16"
    threads: int = 0
    log_every: int = 50
    save_every: int = 500
    extra: dict = field(default_factory=dict)
