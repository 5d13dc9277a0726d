"""Tiny random-weight Llama / Qwen2 models for the live tests (built by `optscale_jax.live.tiny`).

`build_model(dir, family=..., head=...)` trains a byte-level BPE tokenizer in-process, gives
it a chat template and the `<extra_0>` step separator, and saves it with a 2-layer model
(hidden 64, 2 heads of dim 32, the smallest vLLM's CPU attention takes) to `dir`.
"""

from optscale_jax.live.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS, build_model, build_tokenizer

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_model", "build_tokenizer"]
