"""`torchrun --nproc-per-node N -m wan_core generate ... --ulysses U [--cfg-parallel]`: flags and process setup.

Torch-free at import (the CLI parses before importing torch). wan_core/cli.py declares the flags with
`add_distributed_args`, calls `start_session(args)` where it would pick a device (None = a normal one-process run)
and loads the pipeline with `session.load_pipeline`; ranks other than 0 stop after sampling (rank 0 decodes and
writes the mp4). The process group comes from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*);
the backend is NCCL when the ranks run on CUDA GPUs, gloo on the CPU.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

TIMEOUT_MINUTES = 30  # a rank may wait this long for another (rank 0 loads the text encoder alone)


def add_distributed_args(p) -> None:
    """--ulysses, --cfg-parallel."""
    p.add_argument("--ulysses", type=int, default=1, metavar="U",
                   help="sequence parallelism over U processes started by torchrun: each holds 1/U of the video "
                        "tokens; U must divide the DiT's attention heads (TI2V-5B: 1 2 3 4 6 8 12 24; default 1)")
    p.add_argument("--cfg-parallel", action="store_true",
                   help="run the prompt and negative-prompt branches on two groups of U processes at once "
                        "(torchrun --nproc-per-node 2U); needs guidance (cfg != 1)")


@dataclass(frozen=True)
class Session:
    """This process's place in a torchrun job: rank, world size and its device (cuda:LOCAL_RANK or the CPU)."""

    rank: int
    world: int
    device: object  # torch.device
    ulysses: int
    cfg_parallel: bool

    @property
    def writes_output(self) -> bool:
        return self.rank == 0

    def load_pipeline(self, path=None, **kwargs):
        """WanT2VPipeline.from_pretrained's arguments -> a wan_core.distributed.pipeline.DistributedPipeline."""
        from .pipeline import DistributedPipeline

        return DistributedPipeline.load(path, ulysses=self.ulysses, cfg_parallel=self.cfg_parallel, **kwargs)


def _rank_device(name: str, local_rank: int):
    import torch

    if name not in ("auto", "cuda", "cpu"):
        raise ValueError(f"--device {name}: under torchrun each process uses cuda:LOCAL_RANK (or the CPU); pass "
                         "--device auto, cuda or cpu, and pick GPUs with CUDA_VISIBLE_DEVICES")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible; use --device cpu (gloo) or check the driver")
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA GPUs are visible; "
                         "start at most that many processes per node (--nproc-per-node)")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def start_session(args):
    """None for a one-process run; else init the process group (NCCL on CUDA, gloo on the CPU) -> Session.
    Refuses a torchrun job without --ulysses/--cfg-parallel (every rank would render the same video)."""
    from .plan import check_world

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.ulysses == 1 and not args.cfg_parallel:
        if world > 1:
            raise ValueError(f"torchrun started {world} processes but neither --ulysses nor --cfg-parallel was "
                             f"given (each would render the same video); add --ulysses {world}")
        return None
    if args.ulysses < 1:
        raise ValueError(f"--ulysses must be >= 1 (got {args.ulysses})")
    if "RANK" not in os.environ:
        n = args.ulysses * (2 if args.cfg_parallel else 1)
        raise ValueError(f"--ulysses/--cfg-parallel need {n} processes: launch with `torchrun --nproc-per-node {n} "
                         "-m wan_core generate ...`")
    check_world(world, args.ulysses, args.cfg_parallel)
    if getattr(args, "compile", False):
        from .pipeline import COMPILE

        raise ValueError(COMPILE)
    import datetime

    import torch.distributed as dist

    device = _rank_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=TIMEOUT_MINUTES))
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return Session(rank=dist.get_rank(), world=world, device=device, ulysses=args.ulysses,
                   cfg_parallel=args.cfg_parallel)
