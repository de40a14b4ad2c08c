"""The parallel DiT forward, as DiTHooks for the unchanged wan_core.model.WanTransformer.

Every rank runs the patch embedding, time embedding, text embedding and RoPE table of the whole input (cheap), then
the `run_block` hook does, on block 0: keep this rank's CFG branch (cfg_parallel.take_branch), pad the tokens to a
multiple of U and keep this rank's contiguous 1/U of the residual stream, of the per-token time projection
(image-to-video) and of the RoPE table (so each shard rotates by its GLOBAL positions); the blocks then run on the
shard with Ulysses self-attention (cross-attention and FFN are per token: local). After the last block one
all_gather over all ranks rebuilds [2B or B, L, C]; the padding is dropped and the head runs on every rank, so
every rank returns the same full velocity and the sampler stays in lockstep without further communication.

Padding is exact: the only op mixing tokens is self-attention, and ulysses_attention cuts the padding tokens off
before it; LayerNorm/RMSNorm of the zero rows stay finite (their statistics are per token).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.distributed as dist

from ..model import DiTHooks
from ..speed import with_hooks
from .cfg_parallel import join_branches, take_branch
from .plan import ParallelPlan
from .ulysses import shard_tokens, ulysses_attention

TOKEN_HOOKS = {"block": "a per-block hook (e.g. a custom DiTHooks.block)",
               "self_attn": "a self-attention hook (--temporal enhance / Enhance-A-Video)"}


def refuse_token_hooks(hooks: Optional[DiTHooks]) -> None:
    """Hooks that must see every token of a block cannot run on a 1/U shard: refuse them by name."""
    for field, what in TOKEN_HOOKS.items():
        if hooks is not None and getattr(hooks, field) is not None:
            raise ValueError(f"{what} needs all video tokens of a block in one process, but sequence/CFG parallelism "
                             "gives each rank a shard; turn that option off for a distributed run")


def _enter(plan: ParallelPlan, x: torch.Tensor, ctx):
    """Block-0 input of the whole batch -> (this rank's shard of x, the BlockContext of that shard, token count)."""
    u, r = plan.ulysses, plan.sp_rank
    x, context, e0 = (take_branch(t, plan) for t in (x, ctx.context, ctx.e0))
    length = x.shape[1]
    if e0.shape[1] != 1:  # per-token timesteps (image-to-video): [B, L, 6, C]
        e0 = shard_tokens(e0, u, r)
    rope = shard_tokens(ctx.rope, u, r, dim=0, fill=1.0)  # padding rows rotate by 1 (identity)
    attn = ulysses_attention(ctx.attention, u, length, plan.sp_group) if u > 1 else None
    local = dataclasses.replace(ctx, context=context, e0=e0, rope=rope, self_attention=attn)
    return shard_tokens(x, u, r), local, length


def _leave(plan: ParallelPlan, x: torch.Tensor, length: int) -> torch.Tensor:
    """All ranks' shards [B, L_pad/U, C] -> the whole unpadded stream [2B or B, L, C] on every rank."""
    parts = [torch.empty_like(x) for _ in range(plan.world)]
    dist.all_gather(parts, x.contiguous())  # rank order = branch * U + sequence rank
    u = plan.ulysses
    halves = [torch.cat(parts[b * u:(b + 1) * u], dim=1)[:, :length] for b in range(plan.cfg)]
    return join_branches(halves, plan).contiguous()


def parallel_hooks(plan: ParallelPlan, num_layers: int, hooks: Optional[DiTHooks] = None) -> DiTHooks:
    """`hooks` plus the run_block that shards blocks 0..num_layers-1 over the plan's ranks (an inner run_block, e.g.
    block streaming's, still runs each block). Pass to WanTransformer.forward / sample_latents / the pipeline."""
    refuse_token_hooks(hooks)
    inner = hooks.run_block if hooks is not None else None
    state: dict = {}

    def run_block(block, x: torch.Tensor, ctx) -> torch.Tensor:
        if block.index == 0:
            refuse_token_hooks(ctx.hooks)  # hooks combined later (temporal options) are checked here
            x, local, length = _enter(plan, x, ctx)
            state.update(whole=ctx, local=local, length=length)
        elif state.get("whole") is not ctx:
            raise RuntimeError(f"parallel DiT: block {block.index} ran without block 0 of the same forward")
        local = state["local"]
        x = block(x, local) if inner is None else inner(block, x, local)
        if block.index == num_layers - 1:
            x = _leave(plan, x, state.pop("length"))
            state.clear()
        return x

    return with_hooks(hooks, run_block=run_block)
