"""WanT2VPipeline on N ranks: the text encoder on rank 0 (embeddings broadcast), the DiT sharded by
wan_core.distributed.dit, the VAE decode and the frames on rank 0 only (the other ranks return the latent).

Every rank draws the same seeded noise (wan_core.noise: CPU generator) and runs the same sampler on the same gathered
velocities, so no state other than the prompt embeddings is ever sent. A start image (image-to-video) is VAE-encoded
on every rank from the same pixels (same weights, same kernels: the same latent).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from ..pipeline import WanT2VPipeline
from .cfg_parallel import branch_speed, check_guidance
from .dit import parallel_hooks
from .plan import ParallelPlan, make_plan

COMPILE = ("--compile is not supported with --ulysses/--cfg-parallel: its block runner would replace the sharding "
           "hook (wan_core.distributed.dit); drop --compile")
ENHANCE = ("--temporal enhance (Enhance-A-Video) needs every video token of a block in one process, which "
           "--ulysses shards; drop enhance (flow smoothing and correlated noise work)")


def broadcast_tensors(tensors: Optional[list[torch.Tensor]], device, src: int = 0) -> list[torch.Tensor]:
    """Rank src's tensors on every rank (on `device`: CUDA for NCCL, the CPU for gloo); others pass None."""
    meta = [None if tensors is None else [(tuple(t.shape), t.dtype) for t in tensors]]
    dist.broadcast_object_list(meta, src=src, device=device)
    out = []
    for i, (shape, dtype) in enumerate(meta[0]):
        t = tensors[i].to(device).contiguous() if tensors is not None else torch.empty(shape, dtype=dtype,
                                                                                       device=device)
        dist.broadcast(t, src=src)
        out.append(t)
    return out


@dataclass
class DistributedPipeline(WanT2VPipeline):
    """A WanT2VPipeline whose DiT forward is split by `plan`; text_encoder is None on ranks other than 0.
    __call__ takes the same arguments; ranks other than 0 return the latent (output_type forced to "latent")."""

    plan: Optional[ParallelPlan] = None

    @property
    def writes_output(self) -> bool:
        return self.plan.rank == 0

    def _modules(self):
        return [m for m in (self.dit, self.vae, getattr(self.text_encoder, "model", None)) if m is not None]

    def _comm_device(self):
        return torch.device(self.device) if self.device is not None else next(self.dit.parameters()).device

    @torch.no_grad()
    def encode_prompt(self, prompt, negative_prompt=None):
        pair = list(super().encode_prompt(prompt, negative_prompt)) if self.plan.rank == 0 else None
        ctx, neg = broadcast_tensors(pair, self._comm_device())
        return ctx, neg

    @torch.no_grad()
    def __call__(self, prompt, negative_prompt=None, *, hooks=None, speed=None, temporal=None, preset=None,
                 guidance_scale=None, output_type: str = "pt", **kwargs):
        if speed is not None and speed.compile:
            raise ValueError(COMPILE)
        if temporal is not None and temporal.enhance:
            raise ValueError(ENHANCE)
        g = guidance_scale
        if g is None and preset is not None:
            from ..few_step import get_preset

            g = get_preset(preset).cfg
        check_guidance(self.plan, self.defaults.guidance_scale if g is None else g)
        return super().__call__(prompt, negative_prompt, hooks=parallel_hooks(self.plan, len(self.dit.blocks), hooks),
                                speed=branch_speed(self.plan, speed), temporal=temporal, preset=preset,
                                guidance_scale=guidance_scale,
                                output_type=output_type if self.writes_output else "latent", **kwargs)

    @classmethod
    def load(cls, path=None, *, ulysses: int, cfg_parallel: bool, dit=None, vae=None, text_encoder=None,
             tokenizer=None, device=None, dtype=None, vae_dtype=None, offload=False,
             verify: bool = True) -> "DistributedPipeline":
        """WanT2VPipeline.from_pretrained's files and arguments; the umT5 is loaded on rank 0 only."""
        from ..loading import load_dit, load_text_encoder, load_vae, sampling_defaults
        from ..model_files import resolve_inputs

        files = resolve_inputs(path, dit=dit, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)
        defaults, source = sampling_defaults(files.dit)
        load_on = None if offload else device
        model = load_dit(files.dit, device=load_on, dtype=dtype, verify=verify)
        plan = make_plan(model.cfg.num_heads, ulysses, cfg_parallel)  # refuses a U that does not divide the heads
        te = (load_text_encoder(files.text_encoder, tokenizer=files.tokenizer, device=load_on, dtype=dtype,
                                verify=verify) if plan.rank == 0 else None)
        return cls(dit=model, vae=load_vae(files.vae, device=load_on, dtype=vae_dtype, verify=verify),
                   text_encoder=te, device=device, offload=offload, defaults=defaults, defaults_source=source,
                   plan=plan)
