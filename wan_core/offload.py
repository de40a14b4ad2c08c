"""Block streaming (`--offload blocks`): the DiT's transformer blocks stay on the CPU and visit the GPU one at a time.

While block i computes on the default stream, block i+1's tensors are copied to the device on a side stream (from
pinned memory, so the copy really overlaps); a block's device copies are dropped as soon as it has run. The model
keeps its CPU tensors throughout (each parameter's `.data` points at the device copy only during its block's call),
so nothing is copied back. Everything outside `blocks` (embeddings, head, RoPE tables) moves to the device for the
stage. Packed GGUF / fp8 weights stream as packed bytes. On the CPU the same code runs and copies nothing.
Works through module hooks, so it composes with DiTHooks; not with `--compile` (parameters change storage per call).
Tests: tests/test_block_offload.py.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch
from torch import nn

logger = logging.getLogger(__name__)


def _slots(block: nn.Module) -> list[tuple[dict, str]]:
    """(container dict, name) of every parameter and buffer of a block, in a fixed order."""
    out = []
    for m in block.modules():
        out += [(m._parameters, n) for n, t in m._parameters.items() if t is not None]
        out += [(m._buffers, n) for n, t in m._buffers.items() if t is not None]
    return out


def _pin(t: torch.Tensor) -> torch.Tensor:
    try:
        return t.pin_memory()
    except RuntimeError as e:  # no pinnable memory left: copies are then synchronous, results the same
        logger.warning("block streaming: could not pin %s bytes (%s); copies will not overlap compute",
                       t.nbytes, e)
        return t


class BlockStreamer:
    """Streams `model.blocks` to `device` around each block's forward (install with `attach`, undo with `detach`)."""

    def __init__(self, model: nn.Module, device, *, pin: bool = True):
        self.blocks = list(model.blocks)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.slots = [_slots(b) for b in self.blocks]
        if self.cuda and pin:
            for slots in self.slots:
                for d, n in slots:
                    if d[n].device.type == "cpu" and not d[n].is_pinned():
                        d[n].data = _pin(d[n].data)
        self._ready: dict[int, tuple[list[torch.Tensor], object]] = {}
        self._saved: dict[int, list[torch.Tensor]] = {}
        self._handles: list = []
        self.copies = 0  # blocks brought to the device (for tests and logs)

    def prefetch(self, i: int) -> None:
        """Start copying block i to the device (side stream on CUDA)."""
        if i >= len(self.blocks) or i in self._ready:
            return
        ctx = torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext()
        with ctx:
            copies = [d[n].data.to(self.device, non_blocking=True) for d, n in self.slots[i]]
            event = torch.cuda.Event() if self.cuda else None
            if event is not None:
                event.record(self.stream)
        self._ready[i] = (copies, event)

    def _enter(self, i: int) -> None:
        self.prefetch(i)
        copies, event = self._ready.pop(i)
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
            for c in copies:  # used on the compute stream: keep the allocator from reusing it early
                c.record_stream(torch.cuda.current_stream(self.device))
        self._saved[i] = [d[n].data for d, n in self.slots[i]]
        for (d, n), c in zip(self.slots[i], copies):
            d[n].data = c
        self.copies += 1
        self.prefetch(i + 1)  # overlaps this block's compute

    def _leave(self, i: int) -> None:
        for (d, n), t in zip(self.slots[i], self._saved.pop(i)):
            d[n].data = t

    def attach(self) -> "BlockStreamer":
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_pre_hook(lambda m, a, i=i: self._enter(i)))
            self._handles.append(block.register_forward_hook(lambda m, a, out, i=i: self._leave(i)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for i in list(self._saved):  # an exception inside a block: restore its CPU tensors
            self._leave(i)
        self._ready.clear()


def _outside_blocks(model: nn.Module) -> list[nn.Module]:
    return [child for name, child in model.named_children() if name != "blocks"]


@contextlib.contextmanager
def stream_blocks(model: nn.Module, device) -> Iterator[BlockStreamer]:
    """Run `model` (a WanTransformer) on `device` with its blocks streamed from the CPU, for the `with` body."""
    for child in _outside_blocks(model):
        child.to(device)
    streamer = BlockStreamer(model, device).attach()
    try:
        yield streamer
    finally:
        streamer.detach()
        for child in _outside_blocks(model):
            child.to("cpu")
        logger.debug("block streaming: %d block copies to %s", streamer.copies, device)


def block_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes of the largest block, bytes outside the blocks): what block streaming keeps on the device."""
    largest = max((sum(t.nbytes for t in list(b.parameters()) + list(b.buffers())) for b in model.blocks), default=0)
    rest = sum(t.nbytes for c in _outside_blocks(model) for t in list(c.parameters()) + list(c.buffers()))
    return largest, rest
