"""Find the DiT, VAE, text encoder and tokenizer of Wan2.2 TI2V-5B in a model folder.

Three layouts are recognised:
- ComfyUI: `diffusion_models/` (or `unet/`), `text_encoders/` (or `clip/`), `vae/`, directly or under `models/`;
  files are told apart by reading their safetensors headers, so unrelated models in the same folders are ignored.
  A flat folder holding the three files is treated the same way.
- diffusers (`Wan-AI/Wan2.2-TI2V-5B-Diffusers`): `model_index.json` + `transformer/ vae/ text_encoder/ tokenizer/`.
- official (`Wan-AI/Wan2.2-TI2V-5B`): sharded `diffusion_pytorch_model*.safetensors`, `Wan2.2_VAE.pth`,
  `models_t5_umt5-xxl-enc-bf16.pth`, `google/umt5-xxl/`; the two pickles must be converted once with
  `python -m wan_core convert` (the converted `<stem>.safetensors` next to them is then picked up).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .loading import INDEX_SUFFIX, CheckpointError, detect_kind, read_header, resolve_files

logger = logging.getLogger(__name__)

COMFY_FOLDERS = {"dit": ("diffusion_models", "unet"), "t5": ("text_encoders", "clip"), "vae": ("vae",)}
OFFICIAL_PICKLES = {"vae": "Wan2.2_VAE.pth", "t5": "models_t5_umt5-xxl-enc-bf16.pth"}
OFFICIAL_TOKENIZER = "google/umt5-xxl"
LATENT_CHANNELS = 48  # TI2V-5B DiT in/out channels (Wan2.2 VAE); Wan2.1 and A14B DiTs use 16
ROLES = {"dit": "diffusion model (DiT)", "vae": "Wan2.2 VAE", "t5": "umT5 text encoder"}


@dataclass(frozen=True)
class ModelFiles:
    """Paths of one model's components; each can be passed to the matching `wan_core.loading.load_*`."""

    dit: Path  # .safetensors file or *.safetensors.index.json
    vae: Path
    text_encoder: Path
    tokenizer: Path | None = None  # tokenizer folder; None = use the `spiece_model` embedded in the text encoder
    layout: str = "comfyui"  # "comfyui" | "diffusers" | "official" | "flat" | "files" (given one by one)


class _Shape(NamedTuple):
    shape: tuple[int, ...]


def file_kind(file) -> str:
    """Kind of a safetensors file from its header only: "dit" (TI2V-5B), "dit16" (a 16-channel Wan DiT), "vae",
    "vae2.1", "t5", "unknown", or "unreadable"."""
    try:
        if Path(file).suffix.lower() == ".gguf":  # GGUF DiTs (wan_core.gguf_file): header only, as safetensors
            from .gguf_file import gguf_shapes

            shapes = gguf_shapes(file)
        else:
            header, _ = read_header(file)
            shapes = {k: _Shape(tuple(v["shape"])) for k, v in header.items()}
    except (CheckpointError, OSError, ImportError) as e:
        logger.warning("skipping %s: %s", file, e)
        return "unreadable"
    kind = detect_kind(shapes)
    if kind == "dit":
        patch = next((v.shape for k, v in shapes.items() if k.endswith("patch_embedding.weight")), None)
        if patch is not None and len(patch) > 1 and patch[1] != LATENT_CHANNELS:
            return "dit16"  # [dim, in_dim, pt, ph, pw]
    return kind


_DESCRIBE = {"dit16": "Wan DiT with 16 latent channels (Wan2.1 / A14B, not TI2V-5B)", "vae2.1": "Wan2.1 VAE",
             "dit": "TI2V-5B DiT", "vae": "Wan2.2 VAE", "t5": "umT5 text encoder"}


def _pick(role: str, candidates: dict[Path, str], where: str, base: Path) -> Path:
    hits = [p for p, k in candidates.items() if k == role]
    if len(hits) == 1:
        return hits[0]
    seen = ", ".join(f"{p.relative_to(base)} ({_DESCRIBE.get(k, k)})" for p, k in candidates.items()) or "no files"
    if not hits:
        raise CheckpointError(f"no {ROLES[role]} found in {where}; found: {seen}. Add the file (e.g. "
                              f"{'wan2.2_ti2v_5B_fp16' if role == 'dit' else 'wan2.2_vae' if role == 'vae' else 'umt5_xxl_fp16'}"
                              ".safetensors) or pass it explicitly")
    names = ", ".join(str(p.relative_to(base)) for p in hits)
    raise CheckpointError(f"several {ROLES[role]} files in {where}: {names}; pass the one to use explicitly "
                          "(dit=/vae=/text_encoder=)")


def _scan(folder: Path) -> dict[Path, str]:
    files = [*folder.rglob("*.safetensors"), *folder.rglob("*.gguf")]
    return {p: file_kind(p) for p in sorted(files) if p.is_file()}


def _comfy(root: Path) -> ModelFiles | None:
    for base in (root, root / "models"):
        folders = {role: [base / n for n in names if (base / n).is_dir()] for role, names in COMFY_FOLDERS.items()}
        if not any(folders.values()):
            continue
        picked = {}
        for role, dirs in folders.items():
            candidates = {p: k for d in dirs for p, k in _scan(d).items()}
            where = " and ".join(f"{d.relative_to(base)}/" for d in dirs) or f"{'/'.join(COMFY_FOLDERS[role])} (missing)"
            picked[role] = _pick(role, candidates, f"{base} ({where})", base)
        return ModelFiles(dit=picked["dit"], vae=picked["vae"], text_encoder=picked["t5"], layout="comfyui")
    return None


def _checkpoint_in(folder: Path, role: str, base: Path) -> Path:
    if not folder.is_dir():
        raise CheckpointError(f"{base} looks like a diffusers folder (model_index.json) but has no {folder.name}/ "
                              f"for the {ROLES[role]}; download the whole repository")
    files = resolve_files(folder)  # raises with the convert hint for pickle-only folders
    index = sorted(folder.glob(f"*.safetensors{INDEX_SUFFIX}"))
    return index[0] if index else files[0]


def _diffusers(root: Path) -> ModelFiles:
    tokenizer = root / "tokenizer"
    return ModelFiles(dit=_checkpoint_in(root / "transformer", "dit", root), vae=_checkpoint_in(root / "vae", "vae", root),
                      text_encoder=_checkpoint_in(root / "text_encoder", "t5", root),
                      tokenizer=tokenizer if tokenizer.is_dir() else None, layout="diffusers")


def _official(root: Path) -> ModelFiles:
    index = root / f"diffusion_pytorch_model.safetensors{INDEX_SUFFIX}"
    single = root / "diffusion_pytorch_model.safetensors"
    dit = index if index.is_file() else single
    if not dit.is_file():
        shards = sorted(p.name for p in root.glob("diffusion_pytorch_model*.safetensors"))
        raise CheckpointError(f"{root} has DiT shards {shards} but no {index.name}; download the index file too")
    paths, todo = {}, []
    for role, name in OFFICIAL_PICKLES.items():
        converted = (root / name).with_suffix(".safetensors")
        if converted.is_file():
            paths[role] = converted
        elif (root / name).is_file():
            todo.append(f"python -m wan_core convert {root / name} {converted}")
        else:
            todo.append(f"download {name} (the {ROLES[role]}) into {root}")
    if todo:
        raise CheckpointError(f"{root} is an official Wan2.2 folder whose VAE and text encoder are pickles (.pth), "
                              "which are not loaded for safety; convert them once:\n  " + "\n  ".join(todo))
    tokenizer = root / OFFICIAL_TOKENIZER
    return ModelFiles(dit=dit, vae=paths["vae"], text_encoder=paths["t5"],
                      tokenizer=tokenizer if tokenizer.is_dir() else None, layout="official")


def resolve_model_dir(path) -> ModelFiles:
    """Locate the model files in a ComfyUI models folder, a diffusers folder, an official folder or a flat folder."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"model folder not found: {root}")
    if (root / "model_index.json").is_file():
        files = _diffusers(root)
    elif any(root.glob("diffusion_pytorch_model*.safetensors*")):
        files = _official(root)
    elif (found := _comfy(root)) is not None:
        files = found
    else:
        candidates = _scan(root)
        if not candidates:
            raise CheckpointError(f"{root} holds no .safetensors files; expected a ComfyUI models folder "
                                  "(diffusion_models/ text_encoders/ vae/), a diffusers folder (model_index.json) "
                                  "or the official Wan2.2-TI2V-5B folder")
        files = ModelFiles(dit=_pick("dit", candidates, str(root), root), vae=_pick("vae", candidates, str(root), root),
                           text_encoder=_pick("t5", candidates, str(root), root), layout="flat")
    logger.info("model folder %s (%s): dit %s, vae %s, text encoder %s, tokenizer %s", root, files.layout,
                files.dit.name, files.vae.name, files.text_encoder.name, files.tokenizer or "embedded")
    return files


def resolve_inputs(path=None, *, dit=None, vae=None, text_encoder=None, tokenizer=None) -> ModelFiles:
    """The files to load from a model folder and/or explicit files (explicit ones win); nothing at all = the demo."""
    if path is None and dit is None and vae is None and text_encoder is None:
        from .demo import demo_files

        return demo_files()
    found = resolve_model_dir(path) if path is not None else None
    picked = {"dit": dit or (found and found.dit), "vae": vae or (found and found.vae),
              "text_encoder": text_encoder or (found and found.text_encoder)}
    missing = [n for n, v in picked.items() if not v]
    if missing:
        raise ValueError(f"missing model files for {missing}: pass a model folder or dit=/vae=/text_encoder= files")
    tokenizer = tokenizer or (found and found.tokenizer) or None
    return ModelFiles(**{k: Path(v) for k, v in picked.items()}, tokenizer=tokenizer,
                      layout=found.layout if found else "files")
