"""The vocabulary of the simulated data: kinds of training pair and head anatomies; plain data, no imports.

A module of its own so that ``upfusion make-data --help`` and ``upfusion train --help``
can offer the names without loading numpy, scipy or torch.
"""

from __future__ import annotations

__all__ = ["ANATOMIES", "KINDS"]

#: The kinds of pair the generator of :mod:`napari_upfusion.data.synthetic` makes.
KINDS: tuple[str, ...] = ("MRI-CT", "MRI-PET", "MRI-SPECT", "IR-VIS", "generic")
#: The head anatomies of its medical pairs (see :func:`napari_upfusion.data.samples.head_model`).
ANATOMIES: tuple[str, ...] = ("mni152", "colin27")
