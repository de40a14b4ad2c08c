# umT5-XXL text encoder of Wan-Video/Wan2.2 (wan/modules/t5.py, Apache-2.0) run through transformers
# `UMT5EncoderModel` (Apache-2.0) with eager attention; the encode semantics (clean, tokenize to 512, cut each row to
# its true length incl. EOS) follow wan/modules/t5.py `T5EncoderModel.__call__`. Re-written, not copied.
# Parity: tests/test_text_encoder.py (transformers built directly vs WanTextEncoder: bit-identical in fp32).
"""umT5 text encoder: config inference from a state dict, strict meta-device loading, true-length embeddings."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Mapping, Sequence

import torch

from . import loading
from .geometry import TEXT_LEN
from .prompts import clean_prompt
from .tokenizer import SpieceTokenizer

logger = logging.getLogger(__name__)

TOKENIZER_KEY = "spiece_model"  # ComfyUI's repackaged umT5 files embed the sentencepiece model under this key
TIED_KEY = "encoder.embed_tokens.weight"  # tied copy of shared.weight, accepted and ignored
_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.")
_ATTN = "encoder.block.{i}.layer.0.SelfAttention"
_FFN = "encoder.block.{i}.layer.1.DenseReluDense"
_FILES_WITH_TOKENIZER = "ComfyUI's umt5_xxl_fp16.safetensors or umt5_xxl_fp8_e4m3fn_scaled.safetensors"


def _transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the umT5 text encoder needs transformers>=4.46: `pip install transformers`") from e
    return transformers


def infer_t5_config(sd: Mapping[str, torch.Tensor]):
    """A transformers `UMT5Config` (encoder only, eager attention, gated-gelu) read from state-dict shapes.

    Expects transformers key names (`shared.weight`, `encoder.block.{i}.layer.0.SelfAttention.q.weight`, ...,
    `encoder.final_layer_norm.weight`); works on meta tensors. The heads come from the per-layer
    `relative_attention_bias` [buckets, heads]; d_kv = q rows // heads. The real umT5-XXL gives vocab 256384,
    d_model 4096, 64 heads x 64, d_ff 10240, 24 layers, 32 buckets.
    """
    emb_key = "shared.weight" if "shared.weight" in sd else TIED_KEY
    first = [emb_key, _ATTN.format(i=0) + ".q.weight", _ATTN.format(i=0) + ".relative_attention_bias.weight",
             _FFN.format(i=0) + ".wi_0.weight", "encoder.final_layer_norm.weight"]
    missing = [k for k in first if k not in sd]
    if missing:
        hint = ("these are official Wan .pth names: convert them first with "
                "wan_core.convert.convert(sd, 't5', 'official')" if "token_embedding.weight" in sd else
                "expected a umT5 encoder with transformers key names (e.g. ComfyUI's umt5_xxl_fp16.safetensors)")
        raise ValueError(f"not a umT5 encoder state dict: missing {missing}; {hint}")
    vocab, d_model = sd[emb_key].shape
    layers = sorted({int(m.group(1)) for k in sd if (m := _BLOCK.match(k))})
    if layers != list(range(len(layers))):
        raise ValueError(f"umT5 encoder blocks must be numbered 0..N-1, got {layers}")
    no_bias = [i for i in layers if _ATTN.format(i=i) + ".relative_attention_bias.weight" not in sd]
    if no_bias:
        raise ValueError(f"blocks {no_bias} have no relative_attention_bias: this is a T5 (one shared position "
                         "bias), not a umT5 encoder (one bias per layer); Wan needs umT5-XXL")
    buckets, heads = sd[_ATTN.format(i=0) + ".relative_attention_bias.weight"].shape
    inner = sd[_ATTN.format(i=0) + ".q.weight"].shape[0]
    if inner % heads:
        raise ValueError(f"q projection has {inner} rows, not divisible by {heads} heads "
                         "(taken from relative_attention_bias [buckets, heads])")
    if _FFN.format(i=0) + ".wi_1.weight" not in sd:
        raise ValueError("umT5 needs a gated feed-forward (wi_0 and wi_1); this state dict has no wi_1")
    t = _transformers()
    d_ff = sd[_FFN.format(i=0) + ".wi_0.weight"].shape[0]
    cfg = t.UMT5Config(vocab_size=vocab, d_model=d_model, d_kv=inner // heads, d_ff=d_ff,
                       num_layers=len(layers), num_heads=heads, relative_attention_num_buckets=buckets,
                       relative_attention_max_distance=128, layer_norm_epsilon=1e-6, feed_forward_proj="gated-gelu",
                       dropout_rate=0.0, is_encoder_decoder=False, use_cache=False)
    cfg._attn_implementation = "eager"  # SDPA differs from the official encoder by ~1 bf16 ulp
    return cfg


def _resolve_tokenizer(sd: Mapping[str, torch.Tensor], tokenizer) -> SpieceTokenizer:
    if isinstance(tokenizer, SpieceTokenizer):
        return tokenizer
    if isinstance(tokenizer, (str, Path)):
        return SpieceTokenizer.from_folder(tokenizer)
    if tokenizer is not None:
        raise TypeError(f"tokenizer must be a SpieceTokenizer, a folder path or None, got {type(tokenizer).__name__}")
    if TOKENIZER_KEY in sd:
        return SpieceTokenizer.from_tensor(sd[TOKENIZER_KEY])
    raise ValueError(f"this text-encoder state dict has no embedded tokenizer (no {TOKENIZER_KEY!r} tensor; the "
                     f"official models_t5_umt5-xxl-enc-bf16.pth has none). Use {_FILES_WITH_TOKENIZER}, which embed "
                     "it, or pass tokenizer=<folder with spiece.model>, e.g. the google/umt5-xxl folder of the "
                     "official checkpoint or tokenizer/ of Wan-AI/Wan2.2-TI2V-5B-Diffusers")


def _default_dtype(sd: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The embedding's float dtype; bf16 (the official umT5 dtype) for fp8-scaled or other non-float files."""
    w = sd.get("shared.weight", sd.get(TIED_KEY))
    floats = (torch.float32, torch.float16, torch.bfloat16)
    return w.dtype if w.dtype in floats and not loading.is_scaled_fp8(sd) else torch.bfloat16


class WanTextEncoder:
    """umT5 encoder + tokenizer: `encode(list[str]) -> list[Tensor[L_i, d_model]]` (true length incl. EOS).

    Runs on the device and dtype of its weights (`device=`/`dtype=` only at construction; use
    `dtype=torch.float32` for fp32 compute). `.model` is the transformers `UMT5EncoderModel` so a host can wrap
    or offload it; the DiT zero-pads the returned embeddings to 512 tokens itself.
    """

    def __init__(self, model, tokenizer: SpieceTokenizer, *, max_length: int = TEXT_LEN):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces but the encoder embeds only "
                             f"{model.config.vocab_size} ids; the tokenizer does not belong to this encoder")

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], *, tokenizer: SpieceTokenizer | str | Path | None = None,
                        device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None) -> "WanTextEncoder":
        """Build on the meta device and assign the state dict's tensors (no random init, strict key/shape check).

        `tokenizer`: a SpieceTokenizer, a tokenizer folder, or None to read the embedded `spiece_model` tensor.
        `device`/`dtype`: where to put the weights (default: where they are; the checkpoint's float dtype, bf16
        for fp8-scaled files). With float16 the feed-forward output projections `wo` stay fp32, as transformers does.
        """
        cfg = infer_t5_config(sd)
        tok = _resolve_tokenizer(sd, tokenizer)
        dtype = dtype or _default_dtype(sd)
        if any(v.dtype in loading.FP8_DTYPES for v in sd.values()) or loading.is_scaled_fp8(sd):
            sd = loading.dequantize_fp8(sd, dtype)  # no-op when wan_core.loading already dequantized
        t = _transformers()
        with torch.device("meta"):
            model = t.UMT5EncoderModel(cfg)
        want = {k: v.shape for k, v in model.state_dict().items() if k != TIED_KEY}
        given = {k: v for k, v in sd.items() if k not in (TOKENIZER_KEY, TIED_KEY)}
        if "shared.weight" not in given and TIED_KEY in sd:
            given["shared.weight"] = sd[TIED_KEY]  # only the tied copy was saved
        missing = sorted(set(want) - set(given))
        unexpected = sorted(set(given) - set(want))
        wrong = [f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(want[k])}"
                 for k in sorted(set(want) & set(given)) if given[k].shape != want[k]]
        if missing or unexpected or wrong:
            raise ValueError(f"umT5 state dict does not match the inferred config (d_model={cfg.d_model}, "
                             f"layers={cfg.num_layers}, heads={cfg.num_heads}): missing {missing[:8]} "
                             f"({len(missing)}), unexpected {unexpected[:8]} ({len(unexpected)}), wrong shape "
                             f"{wrong[:8]} ({len(wrong)})")

        def place(k: str, v: torch.Tensor) -> torch.Tensor:
            keep32 = dtype == torch.float16 and ".DenseReluDense.wo." in k
            return v.to(device=device or v.device, dtype=torch.float32 if keep32 else dtype)

        weights = {k: place(k, v) for k, v in given.items()}
        weights[TIED_KEY] = weights["shared.weight"]
        model.load_state_dict(weights, strict=True, assign=True)
        model.set_input_embeddings(model.shared)  # re-tie: encoder.embed_tokens is shared
        model.eval().requires_grad_(False)
        logger.info("umT5 encoder: vocab %d, d_model %d, %d layers x %d heads x %d, d_ff %d, %s on %s; tokenizer %s",
                    cfg.vocab_size, cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.d_kv, cfg.d_ff,
                    str(dtype).removeprefix("torch."), model.shared.weight.device, tok.source)
        return cls(model, tok)

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Clean, tokenize (max 512 incl. EOS), encode with the padding mask; one [L_i, d_model] tensor per prompt.

        L_i is the prompt's true token count including EOS; rows are in the model dtype on the model device.
        """
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts, not a str (wrap it: [prompt])")
        if not prompts:
            return []
        ids, mask = self.tokenizer([clean_prompt(p) for p in prompts], max_length=self.max_length)  # [B, L] each
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, d_model]
        lengths = mask.sum(dim=1).tolist()  # true lengths incl. EOS
        return [hidden[i, :n].to(self.dtype) for i, n in enumerate(lengths)]
