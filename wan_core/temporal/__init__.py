"""Temporal-consistency toolkit: optical flow, video metrics, frame interpolation (pure torch, device follows input)."""
