"""Quantized DiT weights: GGUF block dequantization (dequant), the dequantize-per-call Linear (linear), building
a model from packed weights (load). See docs/quantization.md."""
