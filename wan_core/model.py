# Ported from Wan-Video/Wan2.2@42bf4cf wan/modules/model.py (WanModel, model_type "ti2v"; Apache-2.0); numerics
# cross-checked against huggingface/diffusers models/transformers/transformer_wan.py (WanTransformer3DModel;
# Apache-2.0). Parity: tests/test_dit_parity.py::test_fp32_parity_against_diffusers
"""The Wan DiT (`WanTransformer`): patch embedding, time/text conditioning, N attention blocks, head, unpatchify.

Parameter names are the official Wan key names, so an official state dict loads strictly. Layers come from an
injected `ops` namespace (default torch.nn; a host may pass e.g. comfy.ops.manual_cast). Precision policy, declared
once in KEEP_FP32: the listed parameters stay fp32 whatever the load dtype, and the matching computations (time
embedding and projection, modulation, residual stream, head) run in fp32; the attention and FFN Linears run in
`compute_dtype`. The module never picks a device: inputs follow x.device.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import attention
from .config import WanConfig, infer_config
from .rope import Rope3D, apply_rope

logger = logging.getLogger(__name__)

# Dotted-name parts whose parameters stay fp32 (loading) and whose computations run in fp32 (forward).
KEEP_FP32 = ("patch_embedding", "time_embedding", "time_projection", "modulation", "norm3", "head")
_HALF_OR_FULL = (torch.float16, torch.bfloat16, torch.float32)
FFN_CHUNK_ELEMENTS = 1 << 26  # inference FFN hidden chunk: 64 Mi elements (TI2V-5B: ~4.7k tokens per chunk)


def keep_fp32(name: str) -> bool:
    """True if the parameter/module `name` (dotted, official key) is covered by KEEP_FP32."""
    return any(part in KEEP_FP32 for part in name.split("."))


@dataclass(frozen=True)
class DiTHooks:
    """Optional per-call callbacks; with hooks=None the forward pass does no extra work.

    block(i, block, x, ctx) -> x: after block i; x is the fp32 residual stream [B, L, C]; ctx the BlockContext (the
        hook may call block(x, ctx) itself). The model may update the returned x in place: clone what you keep.
    self_attn(i, q, k, v, out, grid) -> out: inside block i's self-attention; q, k, v [B, L, heads, head_dim] after
        RoPE, out the attention output [B, L, heads, head_dim] before the output projection, grid = (F', H', W').
    attention(q, k, v) -> out: replaces SDPA in self- and cross-attention ([B, L, heads, head_dim] in and out;
        wan_core.attention.get_backend gives SageAttention / flash-attn ones).
    run_block(block, x, ctx) -> x: runs a block in place of block(x, ctx) (wan_core.compile: one compiled function).
    """

    block: Optional[Callable[[int, nn.Module, torch.Tensor, "BlockContext"], torch.Tensor]] = None
    self_attn: Optional[Callable[..., torch.Tensor]] = None
    attention: Optional[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = None
    run_block: Optional[Callable[[nn.Module, torch.Tensor, "BlockContext"], torch.Tensor]] = None


@dataclass(frozen=True)
class BlockContext:
    """Everything a block needs besides x; built once per forward."""

    context: torch.Tensor  # embedded text [B, text_len, C] in `dtype`
    e0: torch.Tensor  # fp32 time projection [B, 1 or L, 6, C] (1 when all tokens share a timestep)
    rope: torch.Tensor  # complex64 rotation table [L, 1, head_dim/2]
    grid: tuple[int, int, int]  # post-patch token grid (F', H', W')
    dtype: torch.dtype  # compute dtype of the attention/FFN Linears
    hooks: Optional[DiTHooks] = None
    attention: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = attention  # q, k, v -> out
    # self-attention only, in place of `attention` when set (wan_core.distributed: Ulysses all-to-all around it)
    self_attention: Optional[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = None


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """[cos | sin](t * 10000^(-i/(dim/2))) for t [...] -> [..., dim] fp32, computed in float64 (fp32 on MPS)."""
    half = dim // 2
    ft = torch.float32 if t.device.type == "mps" else torch.float64
    freqs = 10000.0 ** (-torch.arange(half, dtype=ft, device=t.device) / half)  # [dim/2]
    arg = t.to(ft).unsqueeze(-1) * freqs  # [..., dim/2]
    return torch.cat([arg.cos(), arg.sin()], dim=-1).float()


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm(x) * (1 + scale) + shift, all fp32 (x [B, L, C], shift/scale [B, 1 or L, C])."""
    return torch.addcmul(shift, F.layer_norm(x, x.shape[-1:], eps=eps), 1 + scale)


def _residual(x: torch.Tensor, y: torch.Tensor, gate: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x + y * gate in fp32; in place when autograd is off (x is the model's own residual stream)."""
    y = y.float()
    if torch.is_grad_enabled():
        return x + y if gate is None else x + y * gate
    return x.add_(y) if gate is None else x.addcmul_(y, gate)


def _loose(p: torch.Tensor, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A parameter used outside an ops layer (modulation tables, RMSNorm weights), moved to like's device."""
    return p.to(device=like.device, dtype=dtype)


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) (statistics in fp32, cast back to x.dtype) * weight, over the last dim."""

    def __init__(self, dim: int, eps: float, *, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _loose(self.weight, x, x.dtype)
        if x.dtype == torch.float32:
            return F.rms_norm(x, x.shape[-1:], w, self.eps)
        return F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype) * w


class SelfAttention(nn.Module):
    """q/k/v/o projections, RMSNorm on q and k across all heads, 3D RoPE, SDPA."""

    def __init__(self, dim: int, num_heads: int, eps: float, linear, *, device=None, dtype=None):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps, device=device, dtype=dtype)
        self.norm_k = RMSNorm(dim, eps, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, ctx: BlockContext, index: int) -> torch.Tensor:
        heads = self.num_heads
        q = self.norm_q(self.q(x)).unflatten(2, (heads, -1))  # [B, L, H, D]
        k = self.norm_k(self.k(x)).unflatten(2, (heads, -1))  # [B, L, H, D]
        v = self.v(x).unflatten(2, (heads, -1))  # [B, L, H, D]
        q, k = apply_rope(q, ctx.rope), apply_rope(k, ctx.rope)
        out = (ctx.self_attention or ctx.attention)(q, k, v)  # [B, L, H, D]
        if ctx.hooks is not None and ctx.hooks.self_attn is not None:
            out = ctx.hooks.self_attn(index, q, k, v, out, ctx.grid)
        return self.o(out.flatten(2))  # [B, L, C]


class CrossAttention(SelfAttention):
    """Queries from the video tokens, keys/values from the (padded) text; no RoPE, no mask."""

    def forward(self, x: torch.Tensor, context: torch.Tensor, attn=attention) -> torch.Tensor:
        heads = self.num_heads
        q = self.norm_q(self.q(x)).unflatten(2, (heads, -1))  # [B, L, H, D]
        k = self.norm_k(self.k(context)).unflatten(2, (heads, -1))  # [B, Lt, H, D]
        v = self.v(context).unflatten(2, (heads, -1))  # [B, Lt, H, D]
        return self.o(attn(q, k, v).flatten(2))  # [B, L, C]


class WanAttentionBlock(nn.Module):
    """Modulated self-attention, affine-LN cross-attention and modulated tanh-GELU FFN on an fp32 residual stream."""

    def __init__(self, cfg: WanConfig, index: int, ops, *, device=None, dtype=None):
        super().__init__()
        linear = partial(ops.Linear, device=device, dtype=dtype)
        self.index, self.eps, self.ffn_dim = index, cfg.eps, cfg.ffn_dim
        self.self_attn = SelfAttention(cfg.dim, cfg.num_heads, cfg.eps, linear, device=device, dtype=dtype)
        self.norm3 = ops.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=True, device=device, dtype=dtype)
        self.cross_attn = CrossAttention(cfg.dim, cfg.num_heads, cfg.eps, linear, device=device, dtype=dtype)
        self.ffn = nn.Sequential(linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"),
                                 linear(cfg.ffn_dim, cfg.dim))
        self.modulation = nn.Parameter(torch.empty(1, 6, cfg.dim, device=device, dtype=dtype))
        if self.modulation.device.type != "meta":
            nn.init.normal_(self.modulation, std=cfg.dim ** -0.5)

    def forward(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        m = _loose(self.modulation, x, torch.float32)[0]  # KEEP_FP32 modulation [6, C]
        e0 = ctx.e0  # [B, Lt, 6, C] fp32

        def mod(j: int) -> torch.Tensor:  # shift1, scale1, gate1, shift2, scale2, gate2 for j = 0..5
            return e0[:, :, j] + m[j]  # [B, Lt, C]

        y = self.self_attn(_modulate(x, mod(0), mod(1), self.eps).to(ctx.dtype), ctx, self.index)
        x = _residual(x, y, mod(2))
        y = self.cross_attn(self.norm3(x).to(ctx.dtype), ctx.context, ctx.attention)
        x = _residual(x, y)
        h = _modulate(x, mod(3), mod(4), self.eps).to(ctx.dtype)
        if torch.is_grad_enabled():
            return _residual(x, self.ffn(h), mod(5))
        # Inference: run the FFN over token chunks so the [B, L, ffn_dim] hidden never exists whole, and add each
        # chunk's output into the residual stream in place (same math, lower peak memory).
        gate, step = mod(5), max(1, FFN_CHUNK_ELEMENTS // (x.shape[0] * self.ffn_dim))
        for s in range(0, x.shape[1], step):
            g = gate if gate.shape[1] == 1 else gate[:, s:s + step]
            x[:, s:s + step].addcmul_(self.ffn(h[:, s:s + step]).float(), g)  # [B, chunk, C]
        return x


class Head(nn.Module):
    """Modulated LayerNorm then Linear(dim -> prod(patch) * out_dim), in fp32."""

    def __init__(self, cfg: WanConfig, ops, *, device=None, dtype=None):
        super().__init__()
        self.eps = cfg.eps
        self.head = ops.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim, device=device, dtype=dtype)
        self.modulation = nn.Parameter(torch.empty(1, 2, cfg.dim, device=device, dtype=dtype))
        if self.modulation.device.type != "meta":
            nn.init.normal_(self.modulation, std=cfg.dim ** -0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        m = _loose(self.modulation, x, torch.float32)[0]  # KEEP_FP32 modulation [2, C]
        shift, scale = e + m[0], e + m[1]  # [B, Lt, C]
        return self.head(_modulate(x, shift, scale, self.eps).to(dtype))  # [B, L, prod(patch) * out_dim]


class WanTransformer(nn.Module):
    """Wan DiT: forward(x [B, in_dim, F, H, W], t [B] or [B, L] (= sigma * 1000), context [B, Lc, text_dim])
    -> velocity [B, out_dim, F, H, W] fp32.

    `ops` supplies Linear, Conv3d and LayerNorm; `device`/`dtype` are passed to them (device="meta" allocates
    nothing). `compute_dtype` (keyword extension) fixes the dtype fed to the attention/FFN Linears, for hosts whose
    ops store weights in another dtype (e.g. fp8 with manual casting); by default it follows the block weights.
    """

    def __init__(self, cfg: WanConfig, *, ops=torch.nn, device=None, dtype=None,
                 compute_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.cfg = cfg
        self._compute_dtype = compute_dtype  # None: follow the dtype of the block weights
        linear = partial(ops.Linear, device=device, dtype=dtype)
        self.patch_embedding = ops.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size,
                                          device=device, dtype=dtype)
        self.text_embedding = nn.Sequential(linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"),
                                            linear(cfg.dim, cfg.dim))
        self.time_embedding = nn.Sequential(linear(cfg.freq_dim, cfg.dim), nn.SiLU(), linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), linear(cfg.dim, 6 * cfg.dim))
        self.blocks = nn.ModuleList(WanAttentionBlock(cfg, i, ops, device=device, dtype=dtype)
                                    for i in range(cfg.num_layers))
        self.head = Head(cfg, ops, device=device, dtype=dtype)
        self.rope = Rope3D(cfg.head_dim, cfg.rope_max_len, cfg.rope_theta, device=device)
        self._keep_fp32()

    def _keep_fp32(self) -> None:
        for name, p in self.named_parameters():
            if keep_fp32(name) and p.dtype in _HALF_OR_FULL and p.dtype != torch.float32:
                p.data = p.data.float()
        if self.rope.cos.dtype != torch.float32 and self.rope.cos.device.type != "meta":
            self.rope.materialize(self.rope.cos.device)  # RoPE tables are fp32 by definition (rebuilt exactly)

    def _apply(self, fn, recurse=True):
        """Module.to/.half/.bfloat16 on the whole model keep the KEEP_FP32 parameters fp32 (values as rounded)."""
        super()._apply(fn, recurse)
        self._keep_fp32()
        return self

    @property
    def compute_dtype(self) -> torch.dtype:
        """Dtype of the attention/FFN Linear inputs: the explicit compute_dtype, else the block weights' dtype."""
        if self._compute_dtype is not None:
            return self._compute_dtype
        w = self.blocks[0].self_attn.q.weight if len(self.blocks) else self.text_embedding[0].weight
        return w.dtype if w.dtype in _HALF_OR_FULL else torch.float32

    @staticmethod
    def dtype_for(name: str, compute_dtype: torch.dtype) -> torch.dtype:
        """fp32 for computations covered by KEEP_FP32, else the compute dtype."""
        return torch.float32 if keep_fp32(name) else compute_dtype

    def _time(self, t: torch.Tensor, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Time embedding e [B, Lt, C] and projection e0 [B, Lt, 6, C] (fp32); Lt = 1 when t is shared."""
        if t.ndim == 1:
            t = t.unsqueeze(1)  # [B, 1]
        elif t.ndim == 2 and t.shape[1] == num_tokens:
            if bool((t == t[:, :1]).all()):  # every token shares one timestep: embed it once
                t = t[:, :1]  # [B, 1]
        else:
            raise ValueError(f"t must be [B] or [B, L] with L = {num_tokens} tokens (got shape {tuple(t.shape)}); "
                             "pass sigma * 1000 per sample, or per token for image-to-video")
        fp = self.dtype_for("time_embedding", self.compute_dtype)
        e = self.time_embedding(sinusoidal_embedding(self.cfg.freq_dim, t).to(fp))  # [B, Lt, C]
        e0 = self.time_projection(e.to(self.dtype_for("time_projection", self.compute_dtype)))  # [B, Lt, 6C]
        return e.float(), e0.float().unflatten(2, (6, self.cfg.dim))  # [B, Lt, C], [B, Lt, 6, C]

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise ValueError(f"x must be a latent [B, {cfg.in_dim}, F, H, W] (got shape {tuple(x.shape)})")
        _, _, f, h, w = x.shape
        if f % cfg.patch_size[0] or h % cfg.patch_size[1] or w % cfg.patch_size[2]:
            raise ValueError(f"latent frames x height x width {f}x{h}x{w} must be divisible by the DiT patch "
                             f"{cfg.patch_size}; crop or pad the latent (pixel width/height must be multiples of "
                             "32 for TI2V-5B)")
        if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[2] != cfg.text_dim:
            raise ValueError(f"context must be [B={x.shape[0]}, Lc, {cfg.text_dim}] (got {tuple(context.shape)})")
        if context.shape[1] > cfg.text_len:
            raise ValueError(f"context has {context.shape[1]} tokens, more than text_len={cfg.text_len}; "
                             f"truncate the text encoder output to {cfg.text_len} tokens")
        if t.shape[0] != x.shape[0]:
            raise ValueError(f"t has batch {t.shape[0]} but x has batch {x.shape[0]}")
        # Zero-pad the text to text_len: cross-attention has no mask, so the padding rows count (spec 0.4).
        return F.pad(context, (0, 0, 0, cfg.text_len - context.shape[1]))  # [B, text_len, text_dim]

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, *,
                hooks: Optional[DiTHooks] = None) -> torch.Tensor:
        """Velocity for a normalised latent x [B, in_dim, F, H, W] at t [B] or [B, L] (= sigma * 1000, float) given
        text context [B, Lc <= text_len, text_dim]; returns fp32 [B, out_dim, F, H, W]."""
        cfg, cd = self.cfg, self.compute_dtype
        context = self._check_inputs(x, t, context)
        pf, ph, pw = cfg.patch_size
        grid = (x.shape[2] // pf, x.shape[3] // ph, x.shape[4] // pw)
        h = self.patch_embedding(x.to(self.dtype_for("patch_embedding", cd)))  # [B, C, F', H', W']
        h = rearrange(h, "b c f h w -> b (f h w) c").float().contiguous()  # fp32 residual stream [B, L, C]
        e, e0 = self._time(t.to(x.device), h.shape[1])
        ctx = BlockContext(context=self.text_embedding(context.to(device=x.device, dtype=cd)),  # [B, text_len, C]
                           e0=e0, rope=self.rope(grid, x.device), grid=grid, dtype=cd, hooks=hooks,
                           attention=hooks.attention if hooks is not None and hooks.attention else attention)
        block_hook = hooks.block if hooks is not None else None
        run_block = hooks.run_block if hooks is not None else None
        for i, block in enumerate(self.blocks):
            h = block(h, ctx) if run_block is None else run_block(block, h, ctx)
            if block_hook is not None:
                h = block_hook(i, block, h, ctx)
        out = self.head(h, e, self.dtype_for("head", cd))  # [B, L, pf * ph * pw * out_dim]
        return rearrange(out.float(), "b (f h w) (pf ph pw c) -> b c (f pf) (h ph) (w pw)",
                         f=grid[0], h=grid[1], w=grid[2], pf=pf, ph=ph, pw=pw)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], cfg: Optional[WanConfig] = None, *, ops=torch.nn,
                        device=None, dtype=None, strict: bool = True,
                        compute_dtype: Optional[torch.dtype] = None) -> "WanTransformer":
        """Build on the meta device and load an official-named state dict with assign=True (no random init).

        Floating tensors are cast to `dtype` (kept as stored when None) except KEEP_FP32 ones, which become fp32;
        tensors are moved to `device` when given. Missing, unexpected and wrong-shape keys are reported together in
        one ValueError (strict=False tolerates missing/unexpected keys, never wrong shapes).
        """
        cfg = cfg if cfg is not None else infer_config(sd)
        model = cls(cfg, ops=ops, device="meta", dtype=dtype, compute_dtype=compute_dtype)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(sd))
        unexpected = sorted(set(sd) - set(expected))
        shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
        problems = []
        if shapes:
            problems.append(f"{len(shapes)} wrong-shape keys: " + "; ".join(shapes[:10]))
        if strict and missing:
            problems.append(f"{len(missing)} missing keys: {missing[:10]}")
        if strict and unexpected:
            problems.append(f"{len(unexpected)} unexpected keys: {unexpected[:10]}")
        if problems:
            raise ValueError("state dict does not fit WanTransformer(" + repr(cfg) + "): " + " | ".join(problems)
                             + ". Is it a Wan DiT with official key names (convert diffusers/ComfyUI names with "
                             "wan_core.convert), and does the config match the checkpoint?")
        if missing or unexpected:
            logger.warning("non-strict load: %d missing keys left on the meta device, %d unexpected keys ignored",
                           len(missing), len(unexpected))
        loaded = {}
        for k in expected.keys() & sd.keys():
            v = sd[k]
            want = v.dtype
            if v.is_floating_point():
                want = torch.float32 if keep_fp32(k) else (dtype or v.dtype)
            loaded[k] = v.to(device=device, dtype=want)
        model.load_state_dict(loaded, strict=False, assign=True)
        first = next(iter(loaded.values()), None)
        model.rope.materialize(device if device is not None else first.device if first is not None else "cpu")
        return model
