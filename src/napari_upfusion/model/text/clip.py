"""CLIP ViT-B/32's text tower, from a weights file already on disk: finding it, and encoding prompts with it.

The paper network takes the 512-d code of CLIP ViT-B/32's text tower (OpenAI
weights, QuickGELU).  The authors computed it with ``clip.load("ViT-B/32",
device="cuda")``, which keeps OpenAI's fp16 weights on CUDA, then cast it to
float32; :class:`ClipTextEncoder` computes it the same way, in fp16 on a CUDA
device when there is one and in fp16 on the CPU otherwise (the two may differ in
the last bits).  The tower is built by open_clip from a local file, never
downloaded implicitly (:func:`download_clip_weights` is the one explicit download).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ...errors import PromptError, WeightsNotFoundError
from ...utils.files import cache_dir, file_sha256

__all__ = [
    "CLIP_PRECISION",
    "CLIP_WEIGHTS_ENV",
    "OPENAI_IDENTITY",
    "ClipTextEncoder",
    "clip_device",
    "clip_encoder",
    "download_clip_weights",
    "find_clip_weights",
    "prompt_cache_key",
]

#: CLIP's precision: fp16, OpenAI's released weights as ``clip.load`` keeps them on CUDA (the authors' codes).
CLIP_PRECISION = "fp16"
CLIP_WEIGHTS_ENV = "UPFUSION_CLIP_WEIGHTS"
CLIP_ARCH = "ViT-B-32-quickgelu"
#: SHA-256 of OpenAI's ``ViT-B-32.pt`` (the file ``clip.load("ViT-B/32")`` downloads).
OPENAI_VIT_B_32_SHA256 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
OPENAI_IDENTITY = "openai-clip-vit-b-32"
CONTEXT_LENGTH = 77


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
        digest = file_sha256(self.weights, remember=True)
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


_ENCODERS: dict[tuple[str, str, str, str], ClipTextEncoder] = {}


def clip_encoder(weights: Path, precision: str, device: torch.device) -> ClipTextEncoder:
    """One :class:`ClipTextEncoder` per weights file, precision and device, kept for the process's life."""
    key = (str(weights.resolve()), precision, str(device), str(weights.stat().st_mtime_ns))
    if key not in _ENCODERS:
        _ENCODERS[key] = ClipTextEncoder(weights, precision, device)
    return _ENCODERS[key]
