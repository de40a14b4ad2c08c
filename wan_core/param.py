"""Rectified-flow parameterisation (P4): x_sigma = (1 - sigma) * x0 + sigma * noise, the DiT predicts v = noise - x0.

Reimplemented after Comfy-Org/ComfyUI comfy/model_sampling.py `CONST` (GPL-3.0; idea only, no code copied).
Parity: tests/test_sampling.py::test_flow_param_round_trip.
"""
from __future__ import annotations

import torch


def _per_sample(sigma, x: torch.Tensor):
    """A float stays a float; sigma [B] becomes [B, 1, ..., 1] in x's dtype so it broadcasts over x [B, ...]."""
    if not isinstance(sigma, torch.Tensor):
        return sigma
    return sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))  # [B] -> [B, 1, 1, 1, 1]


class FlowParam:
    """Flow matching: denoised = x - sigma * v; noise_scaling = sigma * noise + (1 - sigma) * x0 (sigma in [0, 1])."""

    @staticmethod
    def denoised(x, sigma, v):
        return x - _per_sample(sigma, x) * v

    @staticmethod
    def noise_scaling(sigma, noise, x0):
        return _per_sample(sigma, x0) * noise + (1 - _per_sample(sigma, x0)) * x0

    @staticmethod
    def inverse_noise_scaling(sigma, x):  # as ComfyUI CONST: undo the (1 - sigma) signal scale; identity at 0
        return x / (1 - _per_sample(sigma, x))

    @staticmethod
    def wrap(velocity_fn):
        """velocity_fn(x, sigma[B]) -> v  becomes  model_fn(x, sigma[B]) -> denoised x0 (the sampler contract)."""
        return lambda x, sigma: FlowParam.denoised(x, sigma, velocity_fn(x, sigma))
