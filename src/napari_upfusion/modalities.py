"""The modality names understood everywhere (API, CLI, widget, manifests).

A module of its own, with no imports, so that the command line tool can offer
the names as choices without loading torch (see :mod:`napari_upfusion.cli`).
"""

from __future__ import annotations

__all__ = ["MODALITIES"]

#: Modality names understood everywhere; the first group is anatomical / visible ("a"), the second functional ("b").
MODALITIES: dict[str, str] = {
    "MRI": "magnetic resonance imaging",
    "VIS": "visible light photograph",
    "CT": "computed tomography",
    "PET": "positron emission tomography",
    "SPECT": "single-photon emission computed tomography",
    "IR": "infrared (thermal) image",
}
