"""Question embeddings from a local transformers model: mean-pooled last hidden states.

torch and transformers are imported inside the functions (the `embed` extra), so importing
this module costs nothing. Models are loaded from a local path only (`local_files_only`,
`trust_remote_code=False`): no download, no code from the model folder runs. A `.gguf` file
is accepted too (transformers dequantises it; needs the `gguf` package).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np


def _load(model_path: str | os.PathLike):
    """(tokenizer, model) from a local folder or a local .gguf file, in eval mode on CPU.

    Errors name `features` (the "embed:PATH" spec that chose this model).
    """
    from transformers import AutoModel, AutoTokenizer

    path = pathlib.Path(model_path)
    if not path.exists():
        raise FileNotFoundError(f"features embed: no model at {path}")
    options = {"local_files_only": True, "trust_remote_code": False}
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"features embed: {path} is a file but not a .gguf model")
        options["gguf_file"] = path.name
        path = path.parent
    tokenizer = AutoTokenizer.from_pretrained(str(path), **options)
    model = AutoModel.from_pretrained(str(path), **options)
    model.eval()
    if tokenizer.pad_token is None:
        # Decoder-only tokenizers often have no pad token; padding is masked out anyway.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer, model


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Mean of the hidden states over the real (unpadded) tokens.

    Args:
        hidden: [B, T, H] last hidden states.
        attention_mask: [B, T], 1 for real tokens and 0 for padding.

    Returns:
        [B, H] float32 means (zeros for a row without tokens).
    """
    weights = np.asarray(attention_mask, np.float64)[..., None]
    total = (np.asarray(hidden, np.float64) * weights).sum(axis=1)
    count = weights.sum(axis=1)
    return (total / np.where(count > 0, count, 1.0)).astype(np.float32)


def embed_texts(
    texts: Sequence[str],
    model_path: str | os.PathLike,
    batch_size: int = 16,
    max_length: int = 512,
    progress: bool = False,
) -> np.ndarray:
    """Embeds texts with a local transformers model (CPU, batched, no gradients).

    Texts are sorted by length before batching so little padding is computed; the output is
    in the input order. Each text is embedded as the mean of its last hidden states over its
    tokens (truncated to `max_length`).

    Args:
        texts: the texts.
        model_path: a local model folder (config, weights, tokenizer) or a .gguf file.
        batch_size: texts per forward pass.
        max_length: token limit per text.
        progress: tqdm bar over batches on stderr.

    Returns:
        [len(texts), hidden] float32 embeddings.

    Raises:
        FileNotFoundError: if `model_path` does not exist.
    """
    import torch
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tokenizer, model = _load(model_path)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: np.ndarray | None = None
    starts = range(0, len(texts), batch_size)
    with torch.inference_mode():
        for start in tqdm(starts, desc="embedding", disable=not progress):
            index = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in index],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
            pooled = mean_pool(hidden.float().numpy(), batch["attention_mask"].numpy())
            if out is None:
                out = np.zeros((len(texts), pooled.shape[1]), np.float32)
            out[index] = pooled
    if out is None:
        hidden_size = int(getattr(model.config, "hidden_size", 0))
        return np.zeros((0, hidden_size), np.float32)
    return out
