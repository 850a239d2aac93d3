"""Text prompts: the authors' prompt, one editable default per modality pair, and which prompt a model uses.

The released UP-Fusion weights were trained and tested with one prompt,
:data:`AUTHORS_PROMPT` (the authors' ``Train.py`` and ``Test.py``).  The text
code reaches the network only through ``torch.topk`` indices that reorder
channels, so no gradient ever trained the layers that read it; another prompt
gives the network a channel order it never saw.  So every CLIP-conditioned
model defaults to :data:`AUTHORS_PROMPT` (:func:`default_prompt`), and the
per-pair prompts are an experiment.  Models whose config says
``text_encoder="prompt-table"`` (the project's own small model) carry a fixed
table of codes, one per built-in prompt, were trained with each of them, default
to the pair's own prompt and accept only those prompts.

Plain text, no torch: the widget and the command line read it before any model loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..upfusion import UPFusionConfig

__all__ = ["AUTHORS_PROMPT", "DEFAULT_PROMPTS", "default_prompt", "is_trained_prompt", "pair_key", "trained_prompts"]

#: The generic prompt of the authors' test and training scripts, verbatim.
AUTHORS_PROMPT = (
    "The image contains multiple views of the same scene captured from different modalities, each providing "
    "complementary information. Focus on preserving fine details, semantic structures, and key regions that "
    "contribute to understanding the scene."
)

#: One editable default per modality pair, plus ``generic`` and the authors' own prompt.
DEFAULT_PROMPTS: dict[str, str] = {
    "MRI-CT": (
        "A magnetic resonance image and a computed tomography image of the same anatomy. Keep the soft-tissue "
        "contrast of the MRI and the dense bone of the CT, with sharp edges and no artefacts."
    ),
    "MRI-PET": (
        "A magnetic resonance image and a positron emission tomography image of the same anatomy. Keep the "
        "anatomical detail of the MRI and the metabolic activity of the PET."
    ),
    "MRI-SPECT": (
        "A magnetic resonance image and a single-photon emission computed tomography image of the same anatomy. "
        "Keep the anatomical detail of the MRI and the perfusion signal of the SPECT."
    ),
    "IR-VIS": (
        "An infrared image and a visible image of the same scene. Keep the warm targets of the infrared image and "
        "the textures and fine details of the visible image."
    ),
    "generic": (
        "Two images of the same scene from different modalities. Keep the complementary details and structures "
        "of both images."
    ),
    "authors": AUTHORS_PROMPT,
}


def pair_key(modality_a: str, modality_b: str) -> str:
    """The :data:`DEFAULT_PROMPTS` key of a modality pair, in either order (``generic`` if unknown)."""
    pair = {modality_a.upper(), modality_b.upper()}
    for key in ("MRI-CT", "MRI-PET", "MRI-SPECT", "IR-VIS"):
        if pair == set(key.split("-")):
            return key
    return "generic"


def default_prompt(modality_a: str, modality_b: str, text_encoder: str = "prompt-table") -> str:
    """The prompt a model uses when none is given (the order of the modalities does not matter).

    For a CLIP-conditioned model (``text_encoder="clip-vit-b-32"``: ``paper`` and any checkpoint in
    the authors' layout) :data:`AUTHORS_PROMPT`, the one prompt its weights were trained with; for a
    ``prompt-table`` model (``small``) the pair's own built-in prompt from :data:`DEFAULT_PROMPTS`.
    """
    if text_encoder == "clip-vit-b-32":
        return AUTHORS_PROMPT
    return DEFAULT_PROMPTS[pair_key(modality_a, modality_b)]


def trained_prompts(config: UPFusionConfig) -> tuple[str, ...]:
    """The prompts whose codes ``config``'s weights were trained with.

    A ``prompt-table`` model: its whole table (each pair type was shown with its own code; the authors'
    prompt shares the generic one's).  A CLIP-conditioned model: :data:`AUTHORS_PROMPT` alone, as in the
    authors' ``Train.py`` and in ``upfusion train``.
    """
    return tuple(config.prompts) if config.text_encoder == "prompt-table" else (AUTHORS_PROMPT,)


def is_trained_prompt(config: UPFusionConfig, prompt: str) -> bool:
    """Whether ``prompt`` (whitespace aside) gives ``config``'s weights a channel order they were trained under."""
    return " ".join(prompt.split()) in trained_prompts(config)
