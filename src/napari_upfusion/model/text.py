"""Text prompts and the codes that condition UP-Fusion's channel perturbation.

The paper network takes the 512-d code of CLIP ViT-B/32's text tower (OpenAI
weights, QuickGELU).  The authors computed it with ``clip.load("ViT-B/32",
device="cuda")``, which keeps OpenAI's fp16 weights on CUDA, then cast it to
float32; here the code is computed the same way, in fp16 on a CUDA device when
there is one and in fp16 on the CPU otherwise (the two may differ in the last
bits).  The tower is built by open_clip from a weights file already on disk,
never downloaded implicitly, and every code is cached on disk keyed by the
encoder's identity, the device and dtype it ran in, and the prompt, so CLIP is
loaded once per new prompt and not at all for a prompt seen before.

Which prompt: the released weights were trained and tested with one prompt,
:data:`AUTHORS_PROMPT` (the authors' ``Train.py`` and ``Test.py``).  The text
code reaches the network only through ``torch.topk`` indices that reorder
channels, so no gradient ever trained the layers that read it; another prompt
gives the network a channel order it never saw.  So every CLIP-conditioned
model defaults to :data:`AUTHORS_PROMPT` (:func:`default_prompt`), and the
per-pair prompts are an experiment.

Models whose config says ``text_encoder="prompt-table"`` (the project's own
small model) carry a fixed table of codes, one per built-in prompt, were trained
with each of them, default to the pair's own prompt and accept only those prompts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PromptError, WeightsNotFoundError
from ..modalities import MODALITIES  # re-exported: the names live in a module the CLI can read without torch
from .cache import atomic_write_text, cache_dir, file_sha256
from .upfusion import UPFusion, UPFusionConfig

__all__ = [
    "AUTHORS_PROMPT",
    "CLIP_PRECISION",
    "CLIP_WEIGHTS_ENV",
    "DEFAULT_PROMPTS",
    "MODALITIES",
    "ClipTextEncoder",
    "PromptCode",
    "PromptCodeCache",
    "clip_device",
    "clip_prompt_code",
    "default_prompt",
    "download_clip_weights",
    "encode_prompt",
    "find_clip_weights",
    "is_trained_prompt",
    "pair_key",
    "prompt_cache_key",
    "prompt_code",
    "trained_prompts",
]

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

#: CLIP's precision: fp16, OpenAI's released weights as ``clip.load`` keeps them on CUDA (the authors' codes).
CLIP_PRECISION = "fp16"
CLIP_WEIGHTS_ENV = "UPFUSION_CLIP_WEIGHTS"
CLIP_ARCH = "ViT-B-32-quickgelu"
#: SHA-256 of OpenAI's ``ViT-B-32.pt`` (the file ``clip.load("ViT-B/32")`` downloads).
OPENAI_VIT_B_32_SHA256 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
OPENAI_IDENTITY = "openai-clip-vit-b-32"
CONTEXT_LENGTH = 77


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


# --------------------------------------------------------------------------- CLIP weights


def _clip_candidates() -> list[Path]:
    home = Path.home()
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", home / ".cache" / "huggingface")) / "hub")
    snapshots = sorted((hub / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots").glob("*/*"))
    return [
        cache_dir() / "clip" / "ViT-B-32.pt",
        home / ".cache" / "clip" / "ViT-B-32.pt",  # where OpenAI's clip.load keeps it
        *[p for p in snapshots if p.name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")],
    ]


def find_clip_weights(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Local CLIP ViT-B/32 weights: ``path``, ``$UPFUSION_CLIP_WEIGHTS``, the user cache, OpenAI's and HF's caches.

    Returns ``None`` if there are none; never downloads.
    """
    if path is not None:
        found = Path(path).expanduser()
        if not found.is_file():
            raise WeightsNotFoundError(f"The CLIP weights file {found} does not exist; check the path.")
        return found
    if os.environ.get(CLIP_WEIGHTS_ENV):
        found = Path(os.environ[CLIP_WEIGHTS_ENV]).expanduser()
        if not found.is_file():
            raise WeightsNotFoundError(f"${CLIP_WEIGHTS_ENV} points to {found}, which does not exist; fix or unset it.")
        return found
    return next((p for p in _clip_candidates() if p.is_file()), None)


def download_clip_weights() -> Path:
    """Fetch OpenAI's CLIP ViT-B/32 into the user cache through open_clip (user-triggered only)."""
    from open_clip.pretrained import download_pretrained_from_url, get_pretrained_url

    url = get_pretrained_url(CLIP_ARCH, "openai")
    target = cache_dir() / "clip"
    target.mkdir(parents=True, exist_ok=True)
    return Path(download_pretrained_from_url(url, cache_dir=str(target)))  # offline-ok: explicit user command


def _read_clip_state(path: Path) -> dict[str, torch.Tensor]:
    """CLIP weights as a state dict, from OpenAI's TorchScript file, a torch state dict or safetensors."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import zipfile

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            scripted = any(name.endswith("constants.pkl") for name in archive.namelist())
        if scripted:
            # OpenAI ships ViT-B-32.pt as a TorchScript archive: TorchScript, not pickle, so no Python runs.
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = {k.removeprefix("module."): v for k, v in state["state_dict"].items()}
    return state


def clip_device() -> torch.device:
    """Where new CLIP codes are computed: a CUDA device when there is one (as the authors did), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prompt_cache_key(name: str, device: str, precision: str) -> str:
    """The prompt-code cache's key for CLIP weights ``name`` run on ``device`` (``cuda``/``cpu``) at ``precision``."""
    return f"{name}-{device}-{precision}"


class ClipTextEncoder:
    """CLIP ViT-B/32's text tower (open_clip, QuickGELU) from a local weights file.

    ``precision="fp16"`` on a CUDA ``device`` reproduces the authors' codes
    (OpenAI's ``clip.load`` keeps fp16 weights on CUDA); fp16 on the CPU rounds
    the same way but may differ in the last bits; ``"fp32"`` is available for
    comparison.  Weights are read lazily, on the first :meth:`encode`.
    """

    def __init__(self, weights: str | os.PathLike[str], precision: str = CLIP_PRECISION, device: str | torch.device = "cpu"):
        if precision not in ("fp16", "fp32"):
            raise ValueError("precision must be 'fp16' or 'fp32'.")
        self.weights = Path(weights)
        self.precision = precision
        self.device = torch.device(device)
        self._model = None

    @property
    def name(self) -> str:
        """Which weights these are: OpenAI's by their hash, else ``clip-vit-b-32-sha256-`` and the file's hash."""
        digest = file_sha256(self.weights)
        return OPENAI_IDENTITY if digest == OPENAI_VIT_B_32_SHA256 else f"clip-vit-b-32-sha256-{digest[:16]}"

    @property
    def identity(self) -> str:
        """The weights' :attr:`name`, the device type and the precision: what a cached code is keyed by."""
        return prompt_cache_key(self.name, self.device.type, self.precision)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self):
        import open_clip
        from open_clip.model import build_model_from_openai_state_dict

        try:
            state = _read_clip_state(self.weights)
            cast = torch.float16 if self.precision == "fp16" else None
            model = build_model_from_openai_state_dict(state, quick_gelu=True, cast_dtype=cast)
        except Exception as error:  # noqa: BLE001 - any failure here means the file is not CLIP weights
            raise WeightsNotFoundError(
                f"{self.weights} could not be read as CLIP ViT-B/32 weights ({type(error).__name__}: {error}); "
                "use OpenAI's ViT-B-32.pt or run `upfusion download clip`."
            ) from None
        if self.precision == "fp32":
            model = model.float()
        model.visual = None  # only the text tower is needed
        self._model = model.to(self.device).eval()
        self._tokenizer = open_clip.get_tokenizer(CLIP_ARCH)

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Float32 codes ``[len(prompts), 512]`` (projected, not normalised, as the authors used them)."""
        if self._model is None:
            self._load()
        for prompt in prompts:
            n = len(self._tokenizer.encode(prompt)) + 2
            if n > CONTEXT_LENGTH:
                raise PromptError(
                    f"The prompt is {n} CLIP tokens long but CLIP reads at most {CONTEXT_LENGTH}; shorten it."
                )
        tokens = self._tokenizer(list(prompts), context_length=CONTEXT_LENGTH).to(self.device)
        with torch.no_grad():
            return self._model.encode_text(tokens).float().cpu()


@dataclass
class PromptCodeCache:
    """Prompt codes on disk: one small JSON file per (encoder identity, prompt)."""

    folder: Path

    @classmethod
    def default(cls) -> PromptCodeCache:
        return cls(cache_dir() / "prompt_codes")

    def _path(self, identity: str, prompt: str) -> Path:
        digest = hashlib.sha256(f"{identity}\0{prompt}".encode()).hexdigest()
        return self.folder / identity / f"{digest[:32]}.json"

    def get(self, identity: str, prompt: str) -> torch.Tensor | None:
        try:
            entry = json.loads(self._path(identity, prompt).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if entry.get("prompt") != prompt:
            return None
        return torch.tensor(entry["code"], dtype=torch.float32)

    def put(self, identity: str, prompt: str, code: torch.Tensor) -> None:
        entry = {"identity": identity, "prompt": prompt, "code": [float(v) for v in code.float().tolist()]}
        atomic_write_text(self._path(identity, prompt), json.dumps(entry))


@dataclass(frozen=True)
class PromptCode:
    """A prompt's ``[1, text_dim]`` float32 code and where it came from.

    ``encoder`` is ``"prompt-table"`` or the CLIP weights' name (see :attr:`ClipTextEncoder.name`);
    ``device`` (``"cuda"``/``"cpu"``) and ``dtype`` (``"fp16"``/``"fp32"``) say how CLIP ran, ``None``
    for a table; ``cached`` whether the code was read from the on-disk cache.
    """

    code: torch.Tensor
    encoder: str
    device: str | None = None
    dtype: str | None = None
    cached: bool = False

    def describe(self) -> dict[str, str | None]:
        """The provenance record of the code: encoder, device and dtype."""
        return {"encoder": self.encoder, "device": self.device, "dtype": self.dtype}


_ENCODERS: dict[tuple[str, str, str, str], ClipTextEncoder] = {}


def _clip_encoder(weights: Path, precision: str, device: torch.device) -> ClipTextEncoder:
    key = (str(weights.resolve()), precision, str(device), str(weights.stat().st_mtime_ns))
    if key not in _ENCODERS:
        _ENCODERS[key] = ClipTextEncoder(weights, precision, device)
    return _ENCODERS[key]


def prompt_code(
    model: UPFusion,
    prompt: str,
    *,
    clip_weights: str | os.PathLike[str] | None = None,
    precision: str = CLIP_PRECISION,
    device: str | torch.device | None = None,
    cache: PromptCodeCache | None = None,
) -> PromptCode:
    """The code of ``prompt`` for ``model``, with where it came from.

    For a ``prompt-table`` model, the stored code of that built-in prompt; for
    a CLIP model, :func:`clip_prompt_code`.
    """
    prompt = " ".join(prompt.split())
    if not prompt:
        raise PromptError("The prompt is empty; type a prompt or pick a default one.")
    config = model.config
    if config.text_encoder != "prompt-table":
        return clip_prompt_code(prompt, clip_weights=clip_weights, precision=precision, device=device, cache=cache)
    if prompt not in config.prompts:
        listed = "; ".join(f"'{p[:40]}...'" for p in config.prompts)
        raise PromptError(
            f"The {config.name!r} model was trained with a fixed set of prompts and does not understand free "
            f"text; pick one of its built-in prompts ({listed}) or use the 'paper' model with CLIP weights."
        )
    code = model.prompt_codes[config.prompts.index(prompt)].detach().float().cpu().unsqueeze(0)
    return PromptCode(code, "prompt-table")


def clip_prompt_code(
    prompt: str,
    *,
    clip_weights: str | os.PathLike[str] | None = None,
    precision: str = CLIP_PRECISION,
    device: str | torch.device | None = None,
    cache: PromptCodeCache | None = None,
) -> PromptCode:
    """The CLIP ViT-B/32 code of ``prompt`` closest to the authors' that is cached or can be made here.

    In this order: a cached code computed on CUDA; a new one on CUDA if this
    machine has a GPU and CLIP weights; a cached code computed on the CPU; a new
    one on the CPU.  New codes are cached.  ``device`` (``"cuda"`` or ``"cpu"``)
    pins the device instead.  Without CLIP weights and without a cached code,
    raises :class:`WeightsNotFoundError` saying what to do.
    """
    prompt = " ".join(prompt.split())
    cache = cache or PromptCodeCache.default()
    weights = find_clip_weights(clip_weights)
    name = _clip_encoder(weights, precision, torch.device("cpu")).name if weights else OPENAI_IDENTITY
    devices = [torch.device(device).type] if device is not None else ["cuda", "cpu"]
    for where in devices:
        # codes cached before the device was part of the key were all computed on the CPU
        keys = [prompt_cache_key(name, where, precision)] + ([f"{name}-{precision}"] if where == "cpu" else [])
        for key in keys:
            code = cache.get(key, prompt)
            if code is not None:
                return PromptCode(code.unsqueeze(0), name, where, precision, cached=True)
        if weights is not None and (where == "cpu" or torch.cuda.is_available()):
            encoder = _clip_encoder(weights, precision, torch.device(where))
            code = encoder.encode([prompt])[0]
            cache.put(encoder.identity, prompt, code)
            return PromptCode(code.unsqueeze(0), name, where, precision)
    if weights is not None:  # only when ``device`` pins CUDA on a machine without one
        raise WeightsNotFoundError(f"CLIP codes were asked for on {device}, which this machine does not have; use 'cpu'.")
    raise WeightsNotFoundError(
        "No CLIP ViT-B/32 weights were found and this prompt has no cached code; run `upfusion download clip` "
        f"(needs internet) or put OpenAI's ViT-B-32.pt in {cache_dir() / 'clip'} or set ${CLIP_WEIGHTS_ENV}."
    )


def encode_prompt(
    model: UPFusion,
    prompt: str,
    *,
    clip_weights: str | os.PathLike[str] | None = None,
    precision: str = CLIP_PRECISION,
    device: str | torch.device | None = None,
    cache: PromptCodeCache | None = None,
) -> torch.Tensor:
    """The ``[1, text_dim]`` float32 code of ``prompt`` for ``model`` (see :func:`prompt_code`)."""
    return prompt_code(model, prompt, clip_weights=clip_weights, precision=precision, device=device, cache=cache).code
