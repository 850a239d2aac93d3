"""What determines a training run: plain data, no torch.

A module of its own so that ``upfusion train --help`` can show the defaults without
loading torch or scipy.  The kinds of training pair and the head anatomies are the
data's vocabulary (:mod:`napari_upfusion.data.vocabulary`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.vocabulary import ANATOMIES, KINDS

__all__ = ["LOSS_NAMES", "TrainSettings"]

#: The training losses of :mod:`napari_upfusion.training.loss` (``LOSSES``), by name.
LOSS_NAMES: tuple[str, ...] = ("authors", "edges")


@dataclass
class TrainSettings:
    """Everything that determines a training run (recorded in the weights' metadata)."""

    #: A config name (``small``, ``paper``) or the path of a JSON config file.
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
    #: Head anatomies of the medical pairs (see :func:`napari_upfusion.data.samples.head_model`).
    anatomies: tuple[str, ...] = ANATOMIES
    precision: str = "bf16"
    #: ``"authors"`` (their loss) or ``"edges"`` (its direction-aware gradient term); see :mod:`.loss`.
    loss: str = "authors"
    #: Smoothing (pixels) of the ``edges`` loss's activities: gradient decision, intensity weights.
    edges_sigmas: tuple[float, float] = (1.0, 3.0)
    #: Weights file whose tensors of matching name and shape start the run (the backbone excepted).
    init_from: str = ""
    #: Train with a randomly initialised (seeded, frozen) backbone instead of the config's pretrained one.
    random_backbone: bool = False
    threads: int = 0
    #: Where the network trains: ``cpu`` or ``cuda`` (``cuda:N``).
    device: str = "cpu"
    #: Processes that generate training pairs ahead of the network (0: in the training process).
    workers: int = 0
    #: Stop after this many seconds of training (0: no limit), saving the weights as at the last step.
    time_limit: float = 0.0
    log_every: int = 50
    save_every: int = 500
    #: CLIP ViT-B/32 weights for a CLIP-conditioned config (default: found as ``find_clip_weights`` finds them).
    clip_weights: str | None = None
    extra: dict = field(default_factory=dict)
