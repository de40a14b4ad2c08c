"""LoRA training of a frozen Wan DiT with the flow-matching loss of inference, resumable and seeded.

Loss: x_s = (1 - s) x0 + s noise, target v = noise - x0, s = shift_sigma(u, shift) with u ~ U(0, 1) and the model
fed t = trunc(1000 s) (wan_core.schedules): the sigma / timestep convention of sampling, so a LoRA trained at the
model's sampling shift sees the noise levels in the proportions sampling visits them. Every random draw of step k
comes from generators seeded by (seed, k), so a run resumed from a checkpoint continues exactly as one that was
never interrupted (the checkpoint holds the LoRA weights, the optimizer state and the step).

Output preservation (`preserve_weight` > 0; the "differential output preservation" of ai-toolkit, a relative of
DreamBooth's prior preservation): each row also has a preservation prompt (its caption with the new concept's word
replaced by a word the model knows, or the caption itself when it names no concept), and the LoRA model fed that
prompt, on the same noisy latent and timestep, is pulled towards the frozen base model's output for it. The base
output is an exact target (no sampling noise), so any change the LoRA makes outside its trigger word is penalised.

Layers: `LoRALinear` wraps a frozen Linear, y = W x + b + (alpha / rank) * up(down(x)) (down: Kaiming-uniform,
up: zero, so training starts at the base model). Written with the official / ComfyUI names (wan_core.lora.keys).
Parity of the written file with the trained layers: tests/test_lora_train.py.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..pipeline import pad_context
from ..schedules import shift_sigma, sigma_to_timestep
from . import keys
from .data import public

log = logging.getLogger(__name__)

TARGETS = {  # --targets names -> module templates inside block i (official names)
    "self_attn": ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o"),
    "cross_attn": ("cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o"),
    "ffn": ("ffn.0", "ffn.2"),
}
TARGETS["attn"] = TARGETS["self_attn"] + TARGETS["cross_attn"]
METADATA_KEY = "wan_lora_training"  # the safetensors metadata entry holding the training settings (JSON)


@dataclass(frozen=True)
class LoraTrainConfig:
    """What determines the trained LoRA (with the data and the base model). `steps` is not part of a checkpoint's
    identity: a finished run re-run with more steps continues."""

    rank: int = 16
    alpha: float = 16.0
    targets: tuple[str, ...] = ("attn", "ffn")
    steps: int = 1000
    lr: float = 1e-4
    warmup: int = 20  # linear warm-up steps, then constant
    batch: int = 1
    shift: float = 5.0  # flow shift of the training sigmas (the CLI uses the model's sampling default)
    seed: int = 0
    caption_dropout: float = 0.0  # share of rows trained on the empty prompt
    preserve_weight: float = 0.0  # weight of the output-preservation loss (0: off; needs preservation prompts)
    weight_decay: float = 0.0
    bf16: bool = False  # bf16 autocast of the forward pass (LoRA weights and optimizer stay fp32)
    checkpointing: bool = False  # gradient checkpointing of the DiT blocks

    def __post_init__(self):
        if self.rank < 1 or self.alpha <= 0:
            raise ValueError(f"rank {self.rank} / alpha {self.alpha}: need rank >= 1 and alpha > 0 (16 / 16 is usual)")
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or not self.targets:
            raise ValueError(f"--targets {','.join(self.targets)}: unknown {bad}; choose from {sorted(TARGETS)}")
        if self.steps < 1 or self.batch < 1 or self.lr <= 0:
            raise ValueError(f"steps {self.steps}, batch {self.batch}, lr {self.lr}: all must be positive")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption dropout {self.caption_dropout} must be in [0, 1)")
        if self.preserve_weight < 0:
            raise ValueError(f"--preserve-weight {self.preserve_weight} must be >= 0 (1 is usual; 0 turns it off)")
        shift_sigma(0.5, self.shift)  # validates the shift

    def identity(self) -> dict:
        """The settings a checkpoint must share with a run that resumes it."""
        d = asdict(self)
        d.pop("steps")
        d["targets"] = list(d["targets"])
        return d


class LoRALinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update: base(x) + scale * x down^T up^T."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, gen: torch.Generator):
        super().__init__()
        out_f, in_f = getattr(base, "weight_shape", None) or base.weight.shape
        self.base = base
        self.scale = alpha / rank
        down = torch.empty(rank, in_f)
        bound = 1.0 / math.sqrt(in_f)  # kaiming_uniform_(a=sqrt(5)), as nn.Linear and PEFT initialise lora_A
        down.uniform_(-bound, bound, generator=gen)
        device = base.weight.device
        self.down = nn.Parameter(down.to(device))  # [r, in]
        self.up = nn.Parameter(torch.zeros(out_f, rank, device=device))  # [out, r]
        self.enabled = True  # off: the base layer alone (the frozen model's output for preservation targets)

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight (code that reads a Linear's dtype or device still finds it)."""
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if not self.enabled:
            return y
        h = x.to(self.down.dtype) if not torch.is_autocast_enabled(x.device.type) else x
        delta = (h @ self.down.t()) @ self.up.t()  # [..., out]
        return y + (delta * self.scale).to(y.dtype)


def add_lora(dit: nn.Module, cfg: LoraTrainConfig) -> dict[str, LoRALinear]:
    """Freeze the DiT and put LoRALinear wrappers on the target Linears -> {official module name: wrapper}."""
    for p in dit.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed)
    layers = {}
    templates = list(dict.fromkeys(t for name in cfg.targets for t in TARGETS[name]))
    for i, block in enumerate(dit.blocks):
        for t in templates:
            parent_name, attr = t.rsplit(".", 1)
            parent = block.get_submodule(parent_name)
            wrapper = LoRALinear(getattr(parent, attr) if not attr.isdigit() else parent[int(attr)], cfg.rank,
                                 cfg.alpha, gen)
            if attr.isdigit():
                parent[int(attr)] = wrapper
            else:
                setattr(parent, attr, wrapper)
            layers[f"blocks.{i}.{t}"] = wrapper
    return layers


def lora_tensors(layers: dict[str, LoRALinear], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The ComfyUI-format tensors of the layers: <module>.lora_down.weight [r, in], .lora_up.weight [out, r] and
    .alpha (0-d fp32), so that scale = alpha / rank reproduces the training scale."""
    out = {}
    for module, layer in layers.items():
        rank = layer.down.shape[0]
        out[keys.lora_key(module, "down")] = layer.down.detach().to("cpu", dtype).contiguous()
        out[keys.lora_key(module, "up")] = layer.up.detach().to("cpu", dtype).contiguous()
        out[keys.lora_key(module, "alpha")] = torch.tensor(float(layer.scale * rank), dtype=torch.float32)
    return out


def noisy_inputs(x0: torch.Tensor, gen: torch.Generator, *, shift: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised latents x0 [B, C, T', h, w] -> (x_s, timesteps [B], velocity target noise - x0); CPU generator."""
    b = x0.shape[0]
    s = shift_sigma(torch.rand(b, generator=gen, dtype=torch.float64), shift).float().clamp(0.0, 0.999)  # [B]
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    s = s.to(x0.device)
    sb = s.view(b, 1, 1, 1, 1)
    return (1 - sb) * x0 + sb * noise, sigma_to_timestep(s), noise - x0


@contextlib.contextmanager
def lora_disabled(layers: dict[str, LoRALinear]):
    """The frozen base model inside the block (the wrappers pass their base layer's output through)."""
    for layer in layers.values():
        layer.enabled = False
    try:
        yield
    finally:
        for layer in layers.values():
            layer.enabled = True


def preservation_loss(dit: nn.Module, layers: dict[str, LoRALinear], xs: torch.Tensor, t: torch.Tensor,
                      context: torch.Tensor, hooks=None) -> torch.Tensor:
    """MSE between the LoRA model's and the frozen base model's velocity for the same input and prompt."""
    with torch.no_grad(), lora_disabled(layers):
        target = dit(xs, t, context).float()
    return (dit(xs, t, context, hooks=hooks).float() - target).pow(2).mean()


def _checkpoint_hooks():
    from torch.utils.checkpoint import checkpoint

    from ..model import DiTHooks

    return DiTHooks(run_block=lambda block, x, ctx: checkpoint(block, x, ctx, use_reentrant=False))


@dataclass
class TrainData:
    """Cached training rows: latents [C, T', h, w] and, per row, its captions' embeddings [L, D]; `empty` is the
    empty prompt's embedding (caption dropout); `preserve[r][j]`: the preservation prompts' embeddings of caption j
    of row r (one is drawn with the caption; output preservation)."""

    latents: list[torch.Tensor]
    contexts: list[list[torch.Tensor]]
    empty: torch.Tensor | None = None
    preserve: list[list[list[torch.Tensor]]] | None = None
    buckets: dict[tuple, list[int]] = field(init=False)

    def __post_init__(self):
        if not self.latents or len(self.latents) != len(self.contexts):
            raise ValueError(f"{len(self.latents)} latents and {len(self.contexts)} caption sets: need one per clip")
        self.buckets = {}
        for i, z in enumerate(self.latents):
            self.buckets.setdefault(tuple(z.shape), []).append(i)
        if self.preserve is not None and [len(p) for p in self.preserve] != [len(c) for c in self.contexts]:
            raise ValueError("preservation prompts: need one list per caption of every row")

    def batch(self, step: int, cfg: LoraTrainConfig, device
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Step `step`'s batch (x0 [B, C, T', h, w], context [B, L, D], preservation context [B, L, D] or None):
        one size bucket (drawn by its share of the rows), rows and captions drawn from Random((seed, step))."""
        rng = random.Random(f"lora:{cfg.seed}:{step}")
        shapes = sorted(self.buckets)
        shape = rng.choices(shapes, weights=[len(self.buckets[s]) for s in shapes])[0]
        rows = [rng.choice(self.buckets[shape]) for _ in range(cfg.batch)]
        ctx, keep = [], []
        keep_rng = random.Random(f"lora-preserve:{cfg.seed}:{step}")  # its own stream: the other draws stay as they are
        for r in rows:
            drop = cfg.caption_dropout > 0 and rng.random() < cfg.caption_dropout
            j = rng.randrange(len(self.contexts[r]))  # the same draw as rng.choice
            ctx.append(self.empty if drop and self.empty is not None else self.contexts[r][j])
            if self.preserve is not None and cfg.preserve_weight > 0:
                keep.append(keep_rng.choice(self.preserve[r][j]))
        x0 = torch.stack([self.latents[r] for r in rows]).to(device)
        if not keep:
            return x0, pad_context(ctx).to(device), None
        both = pad_context(ctx + keep).to(device)  # one length for both (one text-padding shortcut)
        return x0, both[:len(ctx)], both[len(ctx):]


def _lr(step: int, cfg: LoraTrainConfig) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))


def save_checkpoint(path: Path, layers: dict[str, LoRALinear], opt, step: int, cfg: LoraTrainConfig,
                    fingerprint: str, losses: list[float]) -> None:
    """LoRA weights, optimizer state and step, written atomically (torch.save to a temp file, then rename)."""
    state = {"step": step, "identity": json.dumps(cfg.identity(), sort_keys=True), "fingerprint": fingerprint,
             "lora": {k: v.detach().cpu() for k, v in lora_tensors(layers).items()}, "optimizer": opt.state_dict(),
             "losses": list(losses)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        public(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, layers: dict[str, LoRALinear], opt, cfg: LoraTrainConfig,
                    fingerprint: str) -> tuple[int, list[float]]:
    """Restore a checkpoint into the layers and optimizer -> (step, losses so far); refuses another run's file."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    mine = json.dumps(cfg.identity(), sort_keys=True)
    if state["identity"] != mine or state["fingerprint"] != fingerprint:
        raise ValueError(f"checkpoint {path} belongs to another run (settings {state['identity']} / data and model "
                         f"{state['fingerprint']}; this run: {mine} / {fingerprint}); delete it to start over, or "
                         "write to another --out")
    with torch.no_grad():
        for module, layer in layers.items():
            layer.down.copy_(state["lora"][keys.lora_key(module, "down")])
            layer.up.copy_(state["lora"][keys.lora_key(module, "up")])
    opt.load_state_dict(state["optimizer"])
    return int(state["step"]), list(state["losses"])


def train_lora(dit: nn.Module, data: TrainData, cfg: LoraTrainConfig, *, checkpoint: Path | None = None,
               save_every: int = 0, fingerprint: str = "", on_step: Callable[[int, float], None] | None = None
               ) -> tuple[dict[str, LoRALinear], dict]:
    """Train a LoRA on the frozen `dit` (modified: wrappers added) -> (layers, info). With `checkpoint`, a file
    there from the same run is resumed and one is written every `save_every` steps and at the end."""
    from ..demo.compact_text import compact_text  # attends to the zero text padding as one weighted row (exact)

    layers = add_lora(dit, cfg)
    params = [p for layer in layers.values() for p in (layer.down, layer.up)]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    start, losses, kept_losses = 0, [], []
    if checkpoint is not None and checkpoint.is_file():
        start, losses = load_checkpoint(checkpoint, layers, opt, cfg, fingerprint)
        log.info("resumed %s at step %d", checkpoint, start)
    device = params[0].device
    hooks = _checkpoint_hooks() if cfg.checkpointing else None
    dit.train()
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        x0, context, keep = data.batch(step, cfg, device)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()
        compact = compact_text(dit, context.shape[1]) if context.shape[1] < dit.cfg.text_len else \
            contextlib.nullcontext()
        opt.zero_grad(set_to_none=True)
        with compact:  # backward inside: gradient checkpointing recomputes the blocks with the same forward
            with autocast:
                xs, t, target = noisy_inputs(x0, gen, shift=cfg.shift)
                loss = (dit(xs, t, context, hooks=hooks).float() - target).pow(2).mean()
            loss.backward()
            if keep is not None:
                with autocast:
                    kept = preservation_loss(dit, layers, xs, t, keep, hooks=hooks)
                (cfg.preserve_weight * kept).backward()
                kept_losses.append(kept.item())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(round(loss.item(), 6))
        if on_step is not None:
            on_step(step, losses[-1])
        done = step + 1
        if checkpoint is not None and save_every > 0 and done % save_every == 0 and done < cfg.steps:
            save_checkpoint(checkpoint, layers, opt, done, cfg, fingerprint, losses)
    if checkpoint is not None:
        save_checkpoint(checkpoint, layers, opt, max(start, cfg.steps), cfg, fingerprint, losses)
    dit.eval()
    info = {"steps": max(start, cfg.steps), "resumed_at": start, "loss_last_50": _mean(losses[-50:]),
            "loss_first_50": _mean(losses[:50]), "preserve_loss_last_50": _mean(kept_losses[-50:])}
    return layers, info


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def write_lora(path: Path, layers: dict[str, LoRALinear], metadata: dict, dtype: torch.dtype = torch.bfloat16) -> Path:
    """The LoRA as a ComfyUI-format safetensors file (training settings under METADATA_KEY) + `.sha256` sidecar."""
    from ..integrity import write_sidecar
    from .data import save_atomic

    save_atomic(lora_tensors(layers, dtype), path, {METADATA_KEY: json.dumps(metadata, ensure_ascii=False),
                                                    "format": "pt"})
    write_sidecar(path)
    return path
