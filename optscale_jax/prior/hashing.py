"""Signed feature hashing of question text with 64-bit FNV-1a.

A fixed, documented hash (http://www.isthe.com/chongo/tech/comp/fnv/) rather than Python's
salted `hash()`, so features do not depend on the process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

# 64-bit FNV-1a: offset basis and prime.
_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF

# Words, numbers, LaTeX commands and single symbols: the units of MATH problem text.
_TOKEN_RE = re.compile(r"\\[a-z]+|[a-z]+|\d+|[^\sa-z\d]")


def fnv1a_64(data: bytes) -> int:
    """64-bit FNV-1a hash of `data`.

    h = offset; for each byte b: h = ((h XOR b) * prime) mod 2**64.

    Args:
        data: the bytes to hash.

    Returns:
        The hash as a Python int in [0, 2**64).
    """
    h = _FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & _MASK64
    return h


class _HashCache:
    """Memoises (namespace, gram) -> (bucket, sign); n-grams repeat a lot across questions."""

    def __init__(self, buckets: int):
        self.buckets = buckets
        self.table: dict[str, tuple[int, float]] = {}

    def __call__(self, key: str) -> tuple[int, float]:
        found = self.table.get(key)
        if found is None:
            h = fnv1a_64(key.encode("utf-8"))
            # Low bits pick the bucket, the top bit the sign (signed hashing keeps collisions
            # unbiased in expectation).
            found = (h % self.buckets, 1.0 if h >> 63 == 0 else -1.0)
            self.table[key] = found
        return found


def normalise_text(text: str) -> str:
    """Lower-cased text with runs of whitespace collapsed to one space."""
    return " ".join(text.lower().split())


def tokenize(text: str) -> list[str]:
    """Word-level tokens of a question: lower-cased words, numbers, LaTeX commands, symbols.

    Args:
        text: the question text.

    Returns:
        The tokens in order.
    """
    return _TOKEN_RE.findall(text.lower())


def word_ngrams(tokens: Sequence[str], n: int) -> Iterable[str]:
    """The `n`-grams of a token list, each joined by one space."""
    return (" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def char_ngrams(text: str, n: int) -> Iterable[str]:
    """The `n`-character substrings of `text`."""
    return (text[i : i + n] for i in range(len(text) - n + 1))


def hashed_block(
    grams_per_text: Iterable[Iterable[str]], buckets: int, namespace: str, count: int
) -> np.ndarray:
    """Signed hashed counts, squashed by sign * log1p |count| and L2-normalised per row.

    Args:
        grams_per_text: for each of `count` texts, its n-grams.
        buckets: width of the block.
        namespace: prefix that keeps blocks of different n-gram kinds apart.
        count: number of texts (rows).

    Returns:
        float64 array [count, buckets].
    """
    cache = _HashCache(buckets)
    block = np.zeros((count, buckets), dtype=np.float64)
    for row, grams in enumerate(grams_per_text):
        for gram in grams:
            bucket, sign = cache(f"{namespace}\x1f{gram}")
            block[row, bucket] += sign
    block = np.sign(block) * np.log1p(np.abs(block))
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return block / np.where(norms > 0, norms, 1.0)
