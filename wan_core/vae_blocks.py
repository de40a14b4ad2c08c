# Ported from Wan-Video/Wan2.2@42bf4cf wan/modules/vae2_2.py (Apache-2.0), rewritten (official module and key names
# kept; cross-checked against diffusers@58eb52c models/autoencoders/autoencoder_kl_wan.py, Apache-2.0).
# Parity: tests/test_vae_parity.py (encode and decode vs diffusers AutoencoderKLWan, fp32).
"""Building blocks of the Wan2.2 VAE: causal 3-D convolutions with a per-call feature cache.

Every block runs on one temporal chunk at a time. `cache` is a plain dict owned by one encode/decode call (or one tile):
`cache[conv]` holds the last input frames a causal convolution saw, so the next chunk continues the sequence exactly as
a whole-video pass would. A module absent from the cache has not run yet (the first chunk).

In-place activations and additions are used only when autograd is off, so the same modules can be trained.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def _inplace() -> bool:
    return not torch.is_grad_enabled()


def silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x, inplace=_inplace())


def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x.add_(y) if _inplace() else x + y


def _conv3d(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """conv(x); for a plain fp32 nn.Conv3d on CPU without autograd, call oneDNN (or a GEMM for 1x1x1) directly.

    PyTorch's backend heuristic sends batch-1 inputs with N*C*T*H <= 20480, and 1x1 spatial kernels, to the im2col
    `slow_conv3d` path, which is 2-5x slower here, allocates a kt*kh*kw-times im2col buffer and needs a contiguous
    (channels-first) copy of channels-last inputs. Injected ops (e.g. ComfyUI's casting layers), other devices and
    autograd always go through conv(x)."""
    if not (type(conv) is nn.Conv3d and x.device.type == "cpu" and x.dtype == conv.weight.dtype == torch.float32
            and not torch.is_grad_enabled() and torch.backends.mkldnn.enabled and torch.backends.mkldnn.is_available()):
        return conv(x)
    if conv.kernel_size == (1, 1, 1) and x.is_contiguous(memory_format=torch.channels_last_3d):
        # a 1x1x1 conv on channels-last data is a GEMM over the channel axis: [B, T, H, W, Cin] -> [B, T, H, W, Cout]
        y = F.linear(x.movedim(1, -1), conv.weight.flatten(1), conv.bias)
        return y.movedim(-1, 1)  # [B, Cout, T, H, W] view, channels-last
    return torch.mkldnn_convolution(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups)


def causal_conv(conv: nn.Module, x: torch.Tensor, cache: dict, norm: "RMSNorm | None" = None) -> torch.Tensor:
    """Causal Conv3d over time: the kt - 1 previous frames (cached, or zeros at the start) go in front of x [B,C,T,H,W].

    With `norm`, the input is silu(norm(x)); without autograd it is written straight into the padded buffer (no separate
    normalised tensor, no concatenation copy). Spatial padding is the conv's own (built with padding (0, k//2, k//2)).
    """
    pad = conv.kernel_size[0] - 1
    if pad == 0:
        return _conv3d(conv, x if norm is None else silu(norm(x)))
    prev = cache.get(conv)
    b, _, t, h, w = x.shape
    if _inplace():
        fmt = torch.channels_last_3d if x.device.type == "cpu" else torch.contiguous_format
        # [B, C, pad + T, H, W]; channels-last on CPU, where oneDNN then needs no layout conversion
        xp = torch.empty(b, x.shape[1], pad + t, h, w, dtype=x.dtype, device=x.device, memory_format=fmt)
        if prev is None:
            xp[:, :, :pad].zero_()
        else:
            xp[:, :, :pad].copy_(prev)
        if norm is None:
            xp[:, :, pad:].copy_(x)
        else:
            F.silu(norm.forward_into(x, xp[:, :, pad:]), inplace=True)
        del x  # frees a temporary input before the convolution runs
    else:
        if norm is not None:
            x = silu(norm(x))
        if prev is None:
            prev = x.new_zeros(b, x.shape[1], pad, h, w)
        xp = torch.cat([prev, x], dim=2)  # [B, C, pad + T, H, W]
    del prev
    cache[conv] = xp[:, :, -pad:].clone()  # a copy, so the cache does not keep xp alive
    return _conv3d(conv, xp)


class RMSNorm(nn.Module):
    """x / max(||x||_2 over channels, 1e-12) * sqrt(C) * gamma (an L2 normalisation, not rsqrt(mean + eps))."""

    def __init__(self, dim: int, *, images: bool = False, device=None, dtype=None):
        super().__init__()
        shape = (dim, 1, 1) if images else (dim, 1, 1, 1)  # broadcast over (H, W) or (T, H, W)
        self.gamma = nn.Parameter(torch.ones(shape, device=device, dtype=dtype))
        self.scale = dim**0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _inplace():
            return self.forward_into(x, torch.empty_like(x))
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        g = self.gamma.to(xf.dtype) * self.scale
        return (xf / torch.linalg.vector_norm(xf, dim=1, keepdim=True).clamp_min(1e-12) * g).to(x.dtype)

    def forward_into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """No-autograd forward written into `out` (same shape as x; may be a strided view of a larger buffer).

        The sum of squares over channels is ~10x faster on CPU than vector_norm's strided reduction; it is staged in
        `out` (fp32 for half inputs), so no extra full-size tensor is made."""
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        sq = out if out.dtype == xf.dtype else torch.empty_like(xf)
        torch.mul(xf, xf, out=sq)
        norm = sq.sum(dim=1, keepdim=True).sqrt_().clamp_min_(1e-12)  # [B, 1, ...]
        del sq
        g = self.gamma.to(xf.dtype) * self.scale
        if out.dtype == xf.dtype:
            return torch.div(xf, norm, out=out).mul_(g)
        return out.copy_((xf / norm).mul_(g))


class Layers:
    """Layer factories bound once to the injected `ops` namespace, device and dtype."""

    def __init__(self, ops, device, dtype):
        kw = {"device": device, "dtype": dtype}
        self.conv3d = functools.partial(ops.Conv3d, **kw)
        self.conv2d = functools.partial(ops.Conv2d, **kw)
        self.norm = functools.partial(RMSNorm, **kw)

    def causal3(self, cin: int, cout: int) -> nn.Module:  # 3x3x3, causal in time
        return self.conv3d(cin, cout, 3, padding=(0, 1, 1))

    def point(self, cin: int, cout: int) -> nn.Module:  # 1x1x1
        return self.conv3d(cin, cout, 1)


class ResidualBlock(nn.Module):
    """residual = [RMSNorm, SiLU, Conv3, RMSNorm, SiLU, Dropout, Conv3] (official indices 0..6); 1x1x1 shortcut if
    the width changes."""

    def __init__(self, cin: int, cout: int, L: Layers):
        super().__init__()
        self.residual = nn.Sequential(L.norm(cin), nn.SiLU(), L.causal3(cin, cout), L.norm(cout), nn.SiLU(),
                                      nn.Identity(), L.causal3(cout, cout))  # Identity = Dropout(0) at inference
        self.shortcut = L.point(cin, cout) if cin != cout else None

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        r = self.residual
        # nested so conv1's output is owned by the second call alone and freed once normalised into its input buffer
        h = causal_conv(r[6], causal_conv(r[2], x, cache, norm=r[0]), cache, norm=r[3])
        return add(h, x if self.shortcut is None else _conv3d(self.shortcut, x))


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions of each frame (head_dim = C)."""

    def __init__(self, dim: int, L: Layers):
        super().__init__()
        self.norm = L.norm(dim, images=True)
        self.to_qkv = L.conv2d(dim, dim * 3, 1)
        self.proj = L.conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.to_qkv(self.norm(rearrange(x, "b c t h w -> (b t) c h w")))
        # [(B T), 1, H*W, 3C] contiguous, then q/k/v as channel slices: the layout the fused (flash) kernel accepts
        q, k, v = rearrange(y, "n c h w -> n 1 (h w) c").contiguous().chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)  # [(B T), 1, H*W, C]
        y = self.proj(rearrange(y, "n 1 (h w) c -> n c h w", h=h))
        return add(rearrange(y, "(b t) c h w -> b c t h w", t=t), x)


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    t = x.shape[2]
    y = module(rearrange(x, "b c t h w -> (b t) c h w"))
    return rearrange(y, "(b t) c h w -> b c t h w", t=t)


class Downsample(nn.Module):
    """Spatial /2 (pad right/bottom, 3x3 stride 2); temporal /2 via `time_conv` over [last cached frame, x]."""

    def __init__(self, dim: int, temporal: bool, L: Layers):
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), L.conv2d(dim, dim, 3, stride=2))
        self.time_conv = L.conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        x = _per_frame(self.resample, x)
        if self.time_conv is None:
            return x
        prev = cache.get(self.time_conv)
        cache[self.time_conv] = x[:, :, -1:].clone()
        if prev is None:  # first chunk: keep the frame, no temporal reduction
            return x
        return _conv3d(self.time_conv, torch.cat([prev, x], dim=2))  # [B, C, 1 + T, H, W] -> [B, C, T/2, H, W]


class Upsample(nn.Module):
    """Temporal x2 via `time_conv` (C -> 2C, frames interleaved; skipped on the first chunk), then spatial nearest x2
    and a 3x3 conv."""

    def __init__(self, dim: int, temporal: bool, L: Layers):
        super().__init__()
        self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                      L.conv2d(dim, dim, 3, padding=1))
        self.time_conv = L.conv3d(dim, dim * 2, (3, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        if self.time_conv is not None:
            if self.time_conv not in cache:  # first chunk: mark as seen; the next chunk starts from zero padding
                cache[self.time_conv] = None
            else:
                y = causal_conv(self.time_conv, x, cache)
                x = rearrange(y, "b (two c) t h w -> b c (t two) h w", two=2)
        return _per_frame(self.resample, x)


def avg_down(x: torch.Tensor, cout: int, ft: int, fs: int) -> torch.Tensor:
    """Parameter-free shortcut: zero-pad time in front to a multiple of ft, space-to-channel, mean over channel
    groups."""
    pad_t = -x.shape[2] % ft
    if pad_t:
        x = F.pad(x, (0, 0, 0, 0, pad_t, 0))
    y = rearrange(x, "b c (t a) (h i) (w j) -> b (c a i j) t h w", a=ft, i=fs, j=fs)
    return y.unflatten(1, (cout, -1)).mean(dim=2)  # [B, cout, group, T', H', W'] -> [B, cout, T', H', W']


def dup_up_add(h: torch.Tensor, x: torch.Tensor, ft: int, fs: int, first: bool) -> torch.Tensor:
    """h + DupUp3D(x): each channel of x repeated, then channel-to-space by (ft, fs, fs); the first chunk drops ft - 1
    leading frames. Computed as a broadcast view when the repeat pattern allows it, so no repeated copy is made."""
    b, cin, t, hh, ww = x.shape
    cout = h.shape[1]
    repeats = cout * ft * fs * fs // cin
    # [B, Cin, R, T, H, W] (stride-0 expand) -> [B, Cout, ft, fs, fs, T, H, W]; a view when the split allows it
    src = x.unsqueeze(2).expand(b, cin, repeats, t, hh, ww).reshape(b, cout, ft, fs, fs, t, hh, ww)
    if first and ft > 1:
        src = src[:, :, ft - 1:]
        ft = 1
    # h [B, Cout, T*ft, H*fs, W*fs] viewed as [B, Cout, ft, fs, fs, T, H, W] (splitting dims is always a view)
    hv = h.unflatten(2, (t, ft)).unflatten(4, (hh, fs)).unflatten(6, (ww, fs)).permute(0, 1, 3, 5, 7, 2, 4, 6)
    if _inplace():
        hv.add_(src)
        return h
    return h + rearrange(src.expand(hv.shape), "b c a i j t h w -> b c (t a) (h i) (w j)")


class DownBlock(nn.Module):
    """`downsamples` = num_res_blocks ResidualBlocks (+ Downsample); plus the parameter-free avg_down shortcut."""

    def __init__(self, cin: int, cout: int, num_res: int, temporal: bool, spatial: bool, L: Layers):
        super().__init__()
        blocks = [ResidualBlock(cin if i == 0 else cout, cout, L) for i in range(num_res)]
        if spatial:
            blocks.append(Downsample(cout, temporal, L))
        self.downsamples = nn.Sequential(*blocks)
        self.cout, self.ft, self.fs = cout, 2 if temporal else 1, 2 if spatial else 1

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        h = x
        for block in self.downsamples:
            h = block(h, cache)
        return add(h, avg_down(x, self.cout, self.ft, self.fs))


class UpBlock(nn.Module):
    """`upsamples` = num_res_blocks + 1 ResidualBlocks (+ Upsample); plus the dup_up shortcut when it upsamples."""

    def __init__(self, cin: int, cout: int, num_res: int, temporal: bool, spatial: bool, L: Layers):
        super().__init__()
        blocks = [ResidualBlock(cin if i == 0 else cout, cout, L) for i in range(num_res + 1)]
        if spatial:
            blocks.append(Upsample(cout, temporal, L))
        self.upsamples = nn.Sequential(*blocks)
        self.spatial, self.ft = spatial, 2 if temporal else 1

    def forward(self, x: torch.Tensor, cache: dict, first: bool) -> torch.Tensor:
        h = x
        for block in self.upsamples:
            h = block(h, cache)
        return dup_up_add(h, x, self.ft, 2, first) if self.spatial else h


def _mid(dim: int, L: Layers) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(dim, dim, L), AttentionBlock(dim, L), ResidualBlock(dim, dim, L))


def _head(dim: int, cout: int, L: Layers) -> nn.Sequential:
    return nn.Sequential(L.norm(dim), nn.SiLU(), L.causal3(dim, cout))


def _run_head(head: nn.Sequential, x: torch.Tensor, cache: dict) -> torch.Tensor:
    return causal_conv(head[2], x, cache, norm=head[0])


class Encoder(nn.Module):
    """conv1 -> down blocks -> middle (res, attn, res) -> head; output 2 * z_dim channels (mu, log_var)."""

    def __init__(self, cin: int, dims: list[int], cout: int, num_res: int, temporal: tuple[bool, ...], L: Layers):
        super().__init__()
        self.conv1 = L.causal3(cin, dims[0])
        n = len(dims) - 1
        self.downsamples = nn.Sequential(*[
            DownBlock(dims[i], dims[i + 1], num_res, i < n - 1 and temporal[i], i < n - 1, L) for i in range(n)])
        self.middle = _mid(dims[-1], L)
        self.head = _head(dims[-1], cout, L)

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        x = causal_conv(self.conv1, x, cache)
        for block in (*self.downsamples, *self.middle):
            x = block(x, cache)
        return _run_head(self.head, x, cache)


class Decoder(nn.Module):
    """conv1 -> middle (res, attn, res) -> up blocks -> head; output patchified pixels (3 * patch^2 channels)."""

    def __init__(self, cin: int, dims: list[int], cout: int, num_res: int, temporal: tuple[bool, ...], L: Layers):
        super().__init__()
        self.conv1 = L.causal3(cin, dims[0])
        self.middle = _mid(dims[0], L)
        n = len(dims) - 1
        self.upsamples = nn.Sequential(*[
            UpBlock(dims[i], dims[i + 1], num_res, i < n - 1 and temporal[i], i < n - 1, L) for i in range(n)])
        self.head = _head(dims[-1], cout, L)

    def forward(self, x: torch.Tensor, cache: dict, first: bool) -> torch.Tensor:
        x = causal_conv(self.conv1, x, cache)
        for block in self.middle:
            x = block(x, cache)
        for block in self.upsamples:
            x = block(x, cache, first)
        return _run_head(self.head, x, cache)
