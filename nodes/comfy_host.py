"""The ComfyUI host: the pack's models in ComfyUI's folders, devices and dtype policy, ModelPatcher and load_models_gpu,
LoRA patches, progress with previews, interrupts. Imported by nodes.host only when ComfyUI is running; ComfyUI
modules are imported lazily inside the methods."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .host import (GGUF_EXTENSION, GGUF_FOLDER, KIND_FOLDER, MODEL_EXTENSIONS, MODEL_FOLDERS, PACK_DIR, Progress,
                   StandaloneHost, WanModel, _dtype_choice, _Holder)

log = logging.getLogger(__name__)


class ComfyHost(StandaloneHost):
    """Host backed by a running ComfyUI (imported lazily; only constructed when ComfyUI is loaded)."""

    name = "comfyui"

    def __init__(self):
        import folder_paths

        self._fp = folder_paths
        self.previews, self.last_preview = False, None
        self.register_pack_models()
        self.install_example_inputs()

    @property
    def _mm(self):
        import comfy.model_management

        return comfy.model_management

    def register_pack_models(self) -> None:
        """Make model files shipped in the pack's models/ folder appear in the dropdowns."""
        for folder in MODEL_FOLDERS:
            if (PACK_DIR / "models" / folder).is_dir():
                self._fp.add_model_folder_path(folder, str(PACK_DIR / "models" / folder))

    def install_example_inputs(self) -> None:
        """Copy the start images the shipped image-to-video workflows load (workflows/*.png) into ComfyUI's input
        folder, so LoadImage finds them; an existing file of the same name is left alone."""
        import shutil

        try:
            target = Path(self._fp.get_input_directory())
            for src in sorted((PACK_DIR / "workflows").glob("*.png")):
                if not (target / src.name).exists():
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, target / src.name)
        except OSError as e:  # a read-only input folder must not stop the pack from loading
            log.warning("WanT2V: could not copy the example start images into ComfyUI's input folder (%s); "
                        "upload workflows/*.png with LoadImage's upload button instead", e)

    def list_models(self, folder: str) -> list[str]:
        names = [n for n in self._fp.get_filename_list(folder) if n.endswith(MODEL_EXTENSIONS)]
        if folder == KIND_FOLDER["dit"]:
            names += self._fp.get_filename_list(self._gguf_folder())
        return names

    def model_path(self, folder: str, name: str) -> Path:
        if folder == KIND_FOLDER["dit"] and name.endswith(GGUF_EXTENSION):
            folder = self._gguf_folder()
        return Path(self._fp.get_full_path_or_raise(folder, name))

    def _gguf_folder(self) -> str:
        """Register (once) a folder_paths entry with the diffusion_models/unet paths and the .gguf extension, as
        ComfyUI-GGUF does for its own loader (ComfyUI's own lists filter .gguf out)."""
        fp = self._fp
        if GGUF_FOLDER not in fp.folder_names_and_paths:
            paths = list(dict.fromkeys(fp.get_folder_paths("diffusion_models") + fp.get_folder_paths("unet")))
            fp.folder_names_and_paths[GGUF_FOLDER] = (paths, {GGUF_EXTENSION})
        return GGUF_FOLDER

    def save_path(self, prefix: str, ext: str, width: int = 0, height: int = 0) -> tuple[Path, str, str]:
        out = self._fp.get_output_directory()
        folder, stem, counter, sub, _ = self._fp.get_save_image_path(prefix, out, width, height)
        filename = f"{stem}_{counter:05}_.{ext}"
        return Path(folder) / filename, filename, sub

    def metadata_enabled(self) -> bool:
        from comfy.cli_args import args

        return not args.disable_metadata

    def intermediate_device(self) -> torch.device:
        return self._mm.intermediate_device()

    def load_device(self, kind: str) -> torch.device:
        mm = self._mm
        return {"dit": mm.get_torch_device, "t5": mm.text_encoder_device, "vae": mm.vae_device}[kind]()

    def offload_device(self, kind: str) -> torch.device:
        mm = self._mm
        return {"dit": mm.unet_offload_device, "t5": mm.text_encoder_offload_device, "vae": mm.vae_offload_device}[kind]()

    def weight_policy(self, kind: str, choice: str) -> tuple[torch.dtype | None, Any]:
        import comfy.ops

        mm, device = self._mm, self.load_device(kind)
        dtype = _dtype_choice(choice)
        if dtype is None:
            dtype = {"dit": lambda: mm.unet_dtype(device), "t5": lambda: mm.text_encoder_dtype(device),
                     "vae": lambda: mm.vae_dtype(device)}[kind]()
        compute = mm.unet_manual_cast(dtype, device) if kind == "dit" else None
        return dtype, comfy.ops.pick_operations(dtype, compute, load_device=device)

    def load(self, kind: str, name: str, choice: str = "auto", verify: bool = True) -> WanModel:
        import comfy.model_patcher

        handle = super().load(kind, name, choice, verify)
        handle.module.to(self.offload_device(kind))
        module = handle.module
        if isinstance(getattr(type(module), "device", None), property):
            module = _Holder(module)  # ModelPatcher assigns module.device; transformers models make it read-only
        patcher = comfy.model_patcher.ModelPatcher(module, load_device=self.load_device(kind),
                                                   offload_device=self.offload_device(kind))
        return WanModel(kind, handle.model, patcher, name)

    def with_lora(self, handle: WanModel, lora, strength: float) -> WanModel:
        """Clone the ModelPatcher and add the LoRA as its weight patches (ComfyUI applies them at load, lowvram
        per layer, and keeps the base weights for other branches); packed wan_core.quant layers get an object patch
        (a shallow copy of the layer with the delta in its `patches`)."""
        if handle.patcher is None:
            return super().with_lora(handle, lora, strength)
        from comfy.weight_adapter import LoRAAdapter
        from wan_core.lora import LowRank, lora_deltas
        from wan_core.quant.linear import with_patches

        patcher = handle.patcher.clone()
        for name, patch in lora_deltas(handle.module, [(lora, strength)]).items():
            (a, s), = patch.terms
            owner_name, _, attr = name.rpartition(".")
            owner = handle.module.get_submodule(owner_name)
            if attr == "weight" and getattr(owner, "qtype", None) is not None:
                patcher.add_object_patch(owner_name, with_patches(patcher.object_patches.get(owner_name, owner),
                                                                  [patch]))
            elif any(any(True for _ in c.parameters()) for c in owner.children()):
                # ModelPatcher patches parameters of leaf modules only (e.g. not blocks.N.modulation): replace
                # the small table itself, merged in fp32 (ComfyUI's own Wan LoRA loading leaves it unpatched)
                cur = patcher.object_patches.get(name, getattr(owner, attr))
                merged = (cur.float() + patch(cur.float())).to(cur.dtype)
                patcher.add_object_patch(name, torch.nn.Parameter(merged, requires_grad=False))
            elif isinstance(a, LowRank):
                patcher.add_patches({name: LoRAAdapter(set(a.keys), (a.up, a.down, a.alpha, None, None, None))}, s)
            else:
                patcher.add_patches({name: ("diff", (a.diff,))}, s)
        return replace(handle, patcher=patcher, loras=handle.loras + ((lora, float(strength)),))

    def activate(self, handle: WanModel, work_shape: tuple[int, ...] | None = None) -> Any:
        """load_models_gpu right before use: evicts other models as needed; the DiT may be partially loaded.

        work_shape: the latent [B, C, T, h, w] about to be processed, for the working-memory estimate."""
        if handle.patcher is None:
            return super().activate(handle, work_shape)
        self._mm.load_models_gpu([handle.patcher], memory_required=self.memory_required(handle, work_shape),
                                 force_full_load=handle.kind != "dit")
        return handle.model

    def memory_required(self, handle: WanModel, work_shape: tuple[int, ...] | None) -> int:
        """Working memory in bytes, with ComfyUI's own heuristics for its Wan models (model_base.memory_required with
        memory_usage_factor = dim / 2222 and cond + uncond batched; the Wan2.2 VAE's memory_used_decode)."""
        if work_shape is None or handle.kind == "t5":
            return 0
        param = next(handle.module.parameters())
        size = self._mm.dtype_size(param.dtype if param.dtype.itemsize >= 2 else torch.bfloat16)
        b, _, t, h, w = work_shape
        if handle.kind == "vae":
            return int(8000 * h * w * 16 * 16 * size)
        return int(2 * b * t * h * w * size * 0.01 * (handle.model.cfg.dim / 2222) * 1024 * 1024)

    def progress(self, total: int) -> Progress:
        import comfy.utils

        bar = comfy.utils.ProgressBar(total)
        return Progress(total, lambda v, t, preview: bar.update_absolute(v, t, preview))

    def preview_factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """ComfyUI's own Wan2.2 latent->RGB factors (read at run time from ComfyUI, not copied into this pack)."""
        import comfy.latent_formats

        fmt = comfy.latent_formats.Wan22()
        if fmt.latent_rgb_factors is None:
            return None
        bias = fmt.latent_rgb_factors_bias or [0.0, 0.0, 0.0]
        return torch.tensor(fmt.latent_rgb_factors), torch.tensor(bias)

    def previews_enabled(self) -> bool:
        from comfy.cli_args import LatentPreviewMethod, args

        return args.preview_method != LatentPreviewMethod.NoPreviews

    def preview_image(self, rgb_uint8: torch.Tensor) -> Any:
        from comfy.cli_args import args
        from PIL import Image

        return ("JPEG", Image.fromarray(rgb_uint8.numpy()), args.preview_size)

    def check_interrupt(self) -> None:
        self._mm.throw_exception_if_processing_interrupted()
