"""Question records -> feature matrix: hashed n-grams or embeddings, plus length and metadata.

Two featurisers:

* `hashed` (default, dependency free): signed feature hashing of word 1-2-grams and character
  3-5-grams into fixed buckets with 64-bit FNV-1a (`optscale_jax.prior.hashing`), plus
  standardised length features and one-hot MATH `level` / `subject` when present.
* `embed:PATH`: mean-pooled last hidden states of a local transformers model
  (`optscale_jax.embeddings`), plus the same length and metadata features.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optscale_jax.prior._json_config import JsonConfig, float_tuple
from optscale_jax.prior.hashing import (
    char_ngrams,
    hashed_block,
    normalise_text,
    tokenize,
    word_ngrams,
)

_TEXT_KEYS = ("problem", "question", "prompt", "text")
_ID_KEYS = ("id", "unique_id")
_LENGTH_FEATURES = (
    "log_chars",
    "log_words",
    "log_dollars",
    "log_latex_commands",
    "log_digits",
    "digit_fraction",
    "has_asy",
)


@dataclasses.dataclass(frozen=True)
class FeaturiserConfig(JsonConfig):
    """Everything needed to recompute features: stored as JSON next to the weights.

    Attributes:
        kind: "hashed" or "embed".
        word_buckets: hash buckets for word n-grams (hashed only).
        char_buckets: hash buckets for character n-grams (hashed only).
        word_ngrams: word n-gram orders.
        char_ngrams: character n-gram orders.
        embed_model: path of the transformers model (embed only).
        embed_max_length: token limit per question (embed only).
        levels: MATH levels one-hot encoded (anything else -> the "other" column).
        subjects: subjects one-hot encoded (anything else -> the "other" column).
        length_mean: training means of the length features (standardisation).
        length_std: training standard deviations of the length features.
    """

    _json_name = "featuriser config"
    _json_types = {
        "word_ngrams": tuple,
        "char_ngrams": tuple,
        "levels": tuple,
        "subjects": tuple,
        "length_mean": float_tuple,
        "length_std": float_tuple,
    }

    kind: str = "hashed"
    word_buckets: int = 2048
    char_buckets: int = 2048
    word_ngrams: tuple[int, ...] = (1, 2)
    char_ngrams: tuple[int, ...] = (3, 4, 5)
    embed_model: str | None = None
    embed_max_length: int = 512
    levels: tuple[int, ...] = ()
    subjects: tuple[str, ...] = ()
    length_mean: tuple[float, ...] = ()
    length_std: tuple[float, ...] = ()


def parse_features(spec: str) -> tuple[str, str | None]:
    """Parses a features spec: "hashed" or "embed:PATH".

    Args:
        spec: the spec (the `--features` value on the command line).

    Returns:
        (kind, model path or None).

    Raises:
        ValueError: naming `features` if the value is neither form.
    """
    if spec == "hashed":
        return "hashed", None
    if spec.startswith("embed:") and len(spec) > len("embed:"):
        return "embed", spec[len("embed:") :]
    raise ValueError(f"features: expected 'hashed' or 'embed:PATH', got {spec!r}")


def question_text(record: Mapping[str, Any], where: str = "record") -> str:
    """The question text of a record (first of problem / question / prompt / text).

    Args:
        record: one JSON object.
        where: file and line, for the error message.

    Returns:
        The text.

    Raises:
        ValueError: naming `where` if no text field is present.
    """
    for key in _TEXT_KEYS:
        value = record.get(key)
        if isinstance(value, str):
            return value
    raise ValueError(f"{where}: no question text (one of {', '.join(_TEXT_KEYS)})")


def question_id(record: Mapping[str, Any], default: str) -> str:
    """The id of a record (`id`, else `unique_id`, else `default`)."""
    for key in _ID_KEYS:
        if record.get(key) is not None:
            return str(record[key])
    return default


def _length_features(text: str) -> list[float]:
    """The `_LENGTH_FEATURES` of one text, unscaled."""
    digits = sum(c.isdigit() for c in text)
    return [
        math.log1p(len(text)),
        math.log1p(len(text.split())),
        math.log1p(text.count("$")),
        math.log1p(len(re.findall(r"\\[A-Za-z]+", text))),
        math.log1p(digits),
        digits / max(len(text), 1),
        float("[asy]" in text),
    ]


def _is_level(value: Any) -> bool:
    try:
        int(value)
    except (TypeError, ValueError):
        return False
    return True


def fit_featuriser(
    records: Sequence[Mapping[str, Any]],
    kind: str = "hashed",
    embed_model: str | None = None,
    **options: Any,
) -> FeaturiserConfig:
    """Fits the data-dependent parts of a featuriser (metadata vocabularies, length scaling).

    Args:
        records: training question records (text plus optional `level`, `subject`).
        kind: "hashed" or "embed".
        embed_model: local transformers model path when kind is "embed".
        **options: other `FeaturiserConfig` fields (bucket counts, n-gram orders).

    Returns:
        The featuriser config.
    """
    if kind not in ("hashed", "embed"):
        raise ValueError(f"kind: expected 'hashed' or 'embed', got {kind!r}")
    if kind == "embed" and not embed_model:
        raise ValueError("embed_model: required when kind is 'embed'")
    levels = sorted({int(r["level"]) for r in records if _is_level(r.get("level"))})
    subjects = sorted({str(r["subject"]) for r in records if r.get("subject")})
    lengths = np.array([_length_features(question_text(r)) for r in records], dtype=np.float64)
    std = lengths.std(axis=0)
    return FeaturiserConfig(
        kind=kind,
        embed_model=embed_model,
        levels=tuple(levels),
        subjects=tuple(subjects),
        length_mean=tuple(lengths.mean(axis=0).tolist()),
        length_std=tuple(np.where(std > 0, std, 1.0).tolist()),
        **options,
    )


def _length_block(texts: Sequence[str], config: FeaturiserConfig) -> np.ndarray:
    """Length features standardised with the training means and standard deviations."""
    lengths = np.array([_length_features(t) for t in texts], dtype=np.float64).reshape(
        len(texts), len(_LENGTH_FEATURES)
    )
    return (lengths - np.asarray(config.length_mean)) / np.asarray(config.length_std)


def _metadata_block(records: Sequence[Mapping[str, Any]], config: FeaturiserConfig) -> np.ndarray:
    """One-hot level and subject, each with a final "other / missing" column."""
    n_levels, n_subjects = len(config.levels), len(config.subjects)
    block = np.zeros((len(records), n_levels + 1 + n_subjects + 1), dtype=np.float64)
    level_index = {level: i for i, level in enumerate(config.levels)}
    subject_index = {subject: i for i, subject in enumerate(config.subjects)}
    for row, record in enumerate(records):
        level = int(record["level"]) if _is_level(record.get("level")) else None
        block[row, level_index.get(level, n_levels)] = 1.0
        subject = record.get("subject")
        block[row, n_levels + 1 + subject_index.get(subject, n_subjects)] = 1.0
    return block


def _hashed_blocks(texts: Sequence[str], config: FeaturiserConfig) -> list[np.ndarray]:
    """The word n-gram block and the character n-gram block of the texts."""
    normalised = [normalise_text(t) for t in texts]
    tokens = [tokenize(t) for t in normalised]
    words = ([g for n in config.word_ngrams for g in word_ngrams(toks, n)] for toks in tokens)
    chars = ([g for n in config.char_ngrams for g in char_ngrams(f" {t} ", n)] for t in normalised)
    return [
        hashed_block(words, config.word_buckets, "w", len(texts)),
        hashed_block(chars, config.char_buckets, "c", len(texts)),
    ]


def _embedding_block(texts: Sequence[str], config: FeaturiserConfig, progress: bool) -> np.ndarray:
    """Unit-normalised embeddings, so the embedding scale of the model does not matter."""
    from optscale_jax.embeddings import embed_texts

    embedded = embed_texts(
        texts, config.embed_model, max_length=config.embed_max_length, progress=progress
    )
    norms = np.linalg.norm(embedded, axis=1, keepdims=True)
    return embedded / np.where(norms > 0, norms, 1.0)


def featurise(
    records: Sequence[Mapping[str, Any]],
    config: FeaturiserConfig,
    progress: bool = False,
) -> np.ndarray:
    """Feature matrix of question records: [length | metadata | hashed or embedded text].

    Args:
        records: question records (text plus optional `level`, `subject`).
        config: a fitted featuriser config.
        progress: show a progress bar while embedding (embed features only).

    Returns:
        float32 array [Q, D]; deterministic given the config and the texts.
    """
    texts = [question_text(r, where=f"record {i}") for i, r in enumerate(records)]
    blocks = [_length_block(texts, config), _metadata_block(records, config)]
    if config.kind == "hashed":
        blocks += _hashed_blocks(texts, config)
    elif config.kind == "embed":
        blocks.append(_embedding_block(texts, config, progress))
    else:
        raise ValueError(f"featuriser config: unknown kind {config.kind!r}")
    return np.concatenate(blocks, axis=1).astype(np.float32)
