# Behaviour follows Wan-Video/Wan2.2 wan/modules/tokenizers.py (`clean='whitespace'`) and the default negative
# prompt of wan/configs/shared_config.py (Apache-2.0); re-written, not copied. Tests: tests/test_tokenizer.py.
"""Prompt cleaning and the official default negative prompt."""
from __future__ import annotations

import html
import logging
import re

logger = logging.getLogger(__name__)

try:  # ftfy is a hard requirement for parity; without it the text is only html-unescaped and whitespace-cleaned
    import ftfy
except ImportError:  # pragma: no cover - depends on the environment
    ftfy = None
    logger.warning("ftfy is not installed: prompts are cleaned without ftfy.fix_text, which can change the "
                   "tokens of prompts with mojibake; `pip install ftfy` for parity with the official pipeline")

# Verbatim `sample_neg_prompt` of Wan-Video/Wan2.2 wan/configs/shared_config.py; the official pipeline uses it
# whenever the negative prompt is empty (diffusers uses "" instead, so pass this explicitly there).
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

_WHITESPACE = re.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """Clean a prompt as the official Wan pipeline does before tokenizing.

    Steps: `ftfy.fix_text` (mojibake repair), `html.unescape` twice (so `&amp;lt;` becomes `<`), strip,
    collapse every whitespace run to one space, strip again. Chinese characters pass through unchanged, but
    ftfy's defaults turn full-width punctuation into ASCII ("，" -> ",") and curly quotes into straight ones,
    exactly as the official pipeline does (so DEFAULT_NEGATIVE_PROMPT is tokenized with ASCII commas).
    ftfy is a requirement for parity with the official pipeline: without it the ftfy step is skipped (as
    diffusers does) and a warning is logged once at import.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}; pass text, not tokens or tensors")
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()
