"""The one adapter between the nodes and their host: ComfyUI when it is running, a plain standalone host otherwise.

This module holds the host contract and the standalone host (a models folder, a CPU/CUDA choice, tqdm, an output
folder); `nodes.comfy_host.ComfyHost` implements it with ComfyUI's model folders (`folder_paths`), devices and dtype
policy (`comfy.model_management`), ModelPatcher + `load_models_gpu` before each use (so our models evict and are
evicted by native ones), `comfy.ops` layers injected into wan_core models (partial/lowvram offload, fp8 storage),
ProgressBar with previews, interrupts and the output folder. ComfyUI modules are imported lazily, only when ComfyUI
is already loaded.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)

PACK_DIR = Path(__file__).resolve().parent.parent
MODEL_FOLDERS = ("diffusion_models", "text_encoders", "vae", "loras")
LORA_FOLDER = "loras"  # ComfyUI's LoRA folder (standalone: <models_dir>/loras)
KIND_FOLDER = {"dit": "diffusion_models", "t5": "text_encoders", "vae": "vae"}
MODEL_EXTENSIONS = (".safetensors", ".sft")
GGUF_EXTENSION = ".gguf"  # quantized DiTs (QuantStack's, `python -m wan_core quantize`): listed for diffusion_models
GGUF_FOLDER = "wan_t2v_gguf"  # our folder_paths key: diffusion_models/ and unet/ paths, .gguf files only
WEIGHT_DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
                 "fp8 storage": torch.float8_e4m3fn}


@dataclass(frozen=True)
class WanModel:
    """A loaded wan_core model as it travels between nodes (socket types WANT2V_DIT / WANT2V_T5 / WANT2V_VAE)."""

    kind: str  # "dit" | "t5" | "vae"
    model: Any  # WanTransformer | WanTextEncoder | WanVAE
    patcher: Any = None  # ComfyUI ModelPatcher (None in the standalone host)
    name: str = ""  # file name, for messages
    loras: tuple = ()  # ((wan_core.lora.Lora, strength), ...) on top of the base weights (WanT2V LoRA node)

    @property
    def module(self) -> torch.nn.Module:
        """The torch module holding the weights (the text encoder's transformers model for "t5")."""
        return self.model.model if self.kind == "t5" else self.model


def _loader(kind: str) -> Callable:
    from wan_core.loading import load_dit, load_text_encoder, load_vae

    return {"dit": load_dit, "t5": load_text_encoder, "vae": load_vae}[kind]


class _CastMixin:
    """Standalone stand-in for comfy.ops.manual_cast: weights stay in their storage dtype, cast per call."""

    def forward(self, x, *args, **kwargs):
        weight = self.weight.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return self._conv_forward(x, weight, bias) if hasattr(self, "_conv_forward") else \
            torch.nn.functional.linear(x, weight, bias)


class CastOps:
    """Namespace with torch.nn's names; Linear and Conv3d cast their (e.g. fp8) weights to the input dtype."""

    Linear = type("Linear", (_CastMixin, torch.nn.Linear), {})
    Conv3d = type("Conv3d", (_CastMixin, torch.nn.Conv3d), {})

    def __getattr__(self, name):
        return getattr(torch.nn, name)


class _Holder(torch.nn.Module):
    """Plain container so ComfyUI's ModelPatcher can manage a module whose `device` attribute is read-only."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner


class StandaloneHost:
    """Host for tests and scripts: `<models_dir>/{diffusion_models,text_encoders,vae}` plus the pack's own models/."""

    name = "standalone"

    def __init__(self, models_dir: str | os.PathLike | None = None, output_dir: str | os.PathLike | None = None,
                 device: str | torch.device | None = None, previews: bool = False):
        self.previews = previews
        self.last_preview = None  # the most recent preview image (for tests and scripts)
        self.models_dirs = [Path(p) for p in (models_dir, PACK_DIR / "models") if p is not None]
        self.output_dir = Path(output_dir) if output_dir is not None else Path.cwd() / "output"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._active: list[WanModel] = []

    # files --------------------------------------------------------------------------------------------------------
    def list_models(self, folder: str) -> list[str]:
        names = set()
        for root in self.models_dirs:
            base = root / folder
            if base.is_dir():
                exts = MODEL_EXTENSIONS + ((GGUF_EXTENSION,) if folder == KIND_FOLDER["dit"] else ())
                names |= {p.relative_to(base).as_posix() for p in base.rglob("*") if p.suffix in exts}
        return sorted(names)

    def model_path(self, folder: str, name: str) -> Path:
        for root in self.models_dirs:
            if (path := root / folder / name).is_file():
                return path
        raise FileNotFoundError(f"model file {name!r} not found in the {folder!r} folder of "
                                f"{[str(r) for r in self.models_dirs]}; put it there or pick one of "
                                f"{self.list_models(folder)}")

    def save_path(self, prefix: str, ext: str, width: int = 0, height: int = 0) -> tuple[Path, str, str]:
        """(full path, file name, subfolder) for a new output file `<prefix>_00001_.<ext>` (never overwrites)."""
        sub, stem = os.path.split(os.path.normpath(prefix))
        folder = (self.output_dir / sub).resolve()
        if not folder.is_relative_to(self.output_dir.resolve()):
            raise ValueError(f"filename_prefix {prefix!r} points outside the output folder; use a relative path")
        folder.mkdir(parents=True, exist_ok=True)
        counter = 1 + max((int(p.name[len(stem) + 1:].split("_")[0]) for p in folder.glob(f"{stem}_*_.{ext}")
                           if p.name[len(stem) + 1:].split("_")[0].isdigit()), default=0)
        filename = f"{stem}_{counter:05}_.{ext}"
        return folder / filename, filename, sub

    def metadata_enabled(self) -> bool:
        return True

    # devices, dtypes, model management ----------------------------------------------------------------------------
    def intermediate_device(self) -> torch.device:
        return torch.device("cpu")

    def load_device(self, kind: str) -> torch.device:
        return self.device

    def weight_policy(self, kind: str, choice: str) -> tuple[torch.dtype | None, Any]:
        """(weight dtype or None = as stored, ops namespace) for a dtype choice."""
        dtype = _dtype_choice(choice)
        if dtype == torch.float8_e4m3fn:
            return dtype, CastOps()
        if dtype is None and self.device.type == "cpu":
            dtype = torch.float32  # CPU half-precision matmuls are slow; the cast happens once at load
        return dtype, torch.nn

    def load(self, kind: str, name: str, choice: str = "auto", verify: bool = True) -> WanModel:
        dtype, ops = self.weight_policy(kind, choice)
        path = self.model_path(KIND_FOLDER[kind], name)
        kwargs = {} if kind == "t5" else {"ops": ops}
        if kind == "t5" and dtype == torch.float8_e4m3fn:
            dtype = torch.bfloat16  # transformers layers cannot compute from fp8 weights
        return WanModel(kind, _loader(kind)(path, dtype=dtype, verify=verify, **kwargs), None, name)

    def activate(self, handle: WanModel, work_shape: tuple[int, ...] | None = None) -> Any:
        """Move the model to the load device right before use; on CUDA other models go back to the CPU."""
        if self.device.type != "cpu":
            for other in self._active:
                if other is not handle:
                    other.module.to("cpu")
            self._active = [handle]
        handle.module.to(self.device)
        if handle.kind == "dit":  # branches share one base model: make exactly this handle's LoRAs merged
            from wan_core.lora import set_loras

            set_loras(handle.module, handle.loras)
        return handle.model

    def add_lora(self, handle: WanModel, name: str, strength: float, verify: bool = True) -> WanModel:
        """A new DiT handle with the LoRA file `name` (loras folder) added at `strength`; `handle` is unchanged."""
        from wan_core.lora import read_lora

        lora = read_lora(self.model_path(LORA_FOLDER, name), verify=verify)
        return self.with_lora(handle, lora, strength)

    def with_lora(self, handle: WanModel, lora, strength: float) -> WanModel:
        from wan_core.lora import check_against

        check_against(lora, handle.module)  # a LoRA that does not fit fails at this node, not at the sampler
        return replace(handle, loras=handle.loras + ((lora, float(strength)),))

    # progress ----------------------------------------------------------------------------------------------------
    def progress(self, total: int) -> "Progress":
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="WanT2V", leave=False)

        def report(value, total, preview):
            bar.update(value - bar.n)
            self.last_preview = preview if preview is not None else self.last_preview
            if value >= total:
                bar.close()

        return Progress(total, report)

    def progress_callback(self) -> Callable[[int, int], None]:
        """callback(done, total) for loops whose length is known only inside (VAE decode); honours interrupts."""
        progress = None

        def callback(done: int, total: int) -> None:
            nonlocal progress
            self.check_interrupt()
            progress = progress or self.progress(total)
            progress.report(done, total, None)

        return callback

    def sampling_callback(self, total: int) -> Callable[[dict], None]:
        """Sampler callback: interrupt check, optional latent preview, progress update (payload: i, x, sigma, denoised)."""
        from wan_core.preview import latent_to_rgb, rgb_to_uint8

        progress = self.progress(total)
        show = self.previews_enabled()
        factors, bias = (self.preview_factors() or (None, None)) if show else (None, None)

        def callback(payload: dict) -> None:
            self.check_interrupt()
            preview = None
            if show:
                preview = self.preview_image(rgb_to_uint8(latent_to_rgb(payload["denoised"], factors, bias)))
            progress.step(payload["i"] + 1, preview)

        return callback

    def preview_factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None  # standalone previews use the latent's own principal components

    def previews_enabled(self) -> bool:
        return self.previews

    def preview_image(self, rgb_uint8: torch.Tensor) -> Any:
        return rgb_uint8

    def check_interrupt(self) -> None:
        return None


@dataclass
class Progress:
    """Step progress of one node run: `step(value, preview=None)` after each step."""

    total: int
    report: Callable[[int, int, Any], None]

    def step(self, value: int, preview: Any = None) -> None:
        self.report(min(value, self.total), self.total, preview)


def _dtype_choice(choice: str) -> torch.dtype | None:
    if choice not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype {choice!r} is not one of {list(WEIGHT_DTYPES)}")
    return WEIGHT_DTYPES[choice]


def comfy_loaded() -> bool:
    """True inside a running ComfyUI (its modules are already imported); never imports ComfyUI itself."""
    return "folder_paths" in sys.modules and "comfy.model_management" in sys.modules


_HOST: StandaloneHost | None = None


def get_host() -> StandaloneHost:
    """The process-wide host: ComfyHost inside ComfyUI, otherwise a StandaloneHost (models under WANT2V_MODELS)."""
    global _HOST
    if _HOST is None and comfy_loaded():
        from .comfy_host import ComfyHost

        _HOST = ComfyHost()
    if _HOST is None:
        _HOST = StandaloneHost(os.environ.get("WANT2V_MODELS"), os.environ.get("WANT2V_OUTPUT"))
    return _HOST


def set_host(host: StandaloneHost | None) -> StandaloneHost | None:
    """Replace the host (tests); returns the previous one. None resets to automatic selection."""
    global _HOST
    previous, _HOST = _HOST, host
    return previous

