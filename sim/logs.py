"""Synthetic Best-of-N logs in the replay schema (`optscale_jax.logs.Log`).

Per question, k samples with

- scores from the score law (truncated normal by default; any `optscale_jax.sim.laws` law; a Gaussian
  copula with `rho` for correlated samples),
- tokens from a length model: lognormal around a per-question median, which is itself
  lognormal around `median_tokens` (questions differ in length, samples of one question less),
- correct from a score-to-correctness link P(correct | s) = sigmoid(slope (s - midpoint)),
- answers: the gold answer when correct, else one of `distractors` wrong answers drawn with
  weights 1/j (a few wrong answers recur, as in real sampling),
- optionally a prior (mu, sigma) per question: the true parameters plus Gaussian noise, as a
  predictor with that error would give (for OptScalet in replay).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from optscale_jax.logs import Log
from optscale_jax.sim import laws
from optscale_jax.sim.populations import noisy_prior


def synthetic_log(
    mu: ArrayLike,
    sigma: ArrayLike,
    k: int,
    seed: int,
    *,
    law: laws.Law | None = None,
    rho: float = 0.0,
    ids: list[str] | None = None,
    median_tokens: float = 600.0,
    question_token_spread: float = 0.5,
    sample_token_spread: float = 0.3,
    link_slope: float = 12.0,
    link_midpoint: float = 0.8,
    distractors: int = 3,
    prior_noise: float | None = 0.05,
) -> Log:
    """A log of `len(mu)` questions with `k` samples each, in the replay schema.

    Args:
        mu: truncated-normal location per question `[Q]`.
        sigma: truncated-normal scale per question `[Q]` (> 0).
        k: samples per question (>= 1).
        seed: seed of every random choice.
        law: score law with batch shape `[Q]` (default `TruncNormal(mu, sigma)`); mu and
            sigma still give the prior.
        rho: equicorrelation of one question's scores (Gaussian copula), in [0, 1).
        ids: question ids (default `sim-00000`, ...).
        median_tokens: median generated tokens of a sample of a typical question (> 0).
        question_token_spread: log-sd of the per-question median length.
        sample_token_spread: log-sd of a sample's length around its question's median.
        link_slope: slope of the logistic score-to-correctness link (>= 0).
        link_midpoint: score at which P(correct) = 1/2.
        distractors: wrong answers per question (>= 1).
        prior_noise: standard deviation of the prior centres' error; None = no prior.

    Returns:
        `optscale_jax.logs.Log` with scores, tokens, answers, correct, gold and (optionally)
        prior_mu / prior_sigma.
    """
    mu = np.atleast_1d(np.asarray(mu, np.float64))
    sigma = np.atleast_1d(np.asarray(sigma, np.float64))
    _check_args(mu, sigma, k, rho, ids, median_tokens, link_slope, distractors, prior_noise)
    questions = mu.shape[0]
    law = laws.TruncNormal(jnp.asarray(mu), jnp.asarray(sigma)) if law is None else law
    scores = laws.sample_exchangeable(law, jax.random.key(seed), (questions, k), rho)
    scores = np.clip(np.asarray(scores, np.float64), 0.0, 1.0)
    # One generator, drawn in a fixed order: lengths, correctness, answers, prior.
    rng = np.random.default_rng(seed)
    tokens = _token_counts(
        rng, scores.shape, median_tokens, question_token_spread, sample_token_spread
    )
    correct, gold, wrong = _correctness(rng, scores, link_slope, link_midpoint, distractors)
    prior = None if prior_noise is None else noisy_prior(mu, sigma, prior_noise, rng)
    ids = ids if ids is not None else [f"sim-{q:05d}" for q in range(questions)]
    records = _records(ids, scores, tokens, correct, gold, wrong, prior)
    return Log.from_records(records, source=f"synthetic(seed={seed})")


def _token_counts(rng, shape, median_tokens, question_spread, sample_spread) -> np.ndarray:
    """Tokens `[Q, k]`: lognormal around a per-question median, itself lognormal."""
    questions, k = shape
    question_median = median_tokens * np.exp(question_spread * rng.standard_normal(questions))
    tokens = question_median[:, None] * np.exp(sample_spread * rng.standard_normal((questions, k)))
    return np.maximum(np.rint(tokens), 1.0)


def _correctness(rng, scores, link_slope, link_midpoint, distractors):
    """(correct `[Q, k]`, gold `[Q]`, wrong answer `[Q, k]`) from the score-to-correctness link.

    Each question's gold is a distinct integer; its distractors are gold + 1 .. gold + d,
    picked with weights 1/j.
    """
    questions, k = scores.shape
    p_correct = 1.0 / (1.0 + np.exp(-link_slope * (scores - link_midpoint)))
    correct = rng.random((questions, k)) < p_correct
    wrong_weights = 1.0 / np.arange(1, distractors + 1)
    wrong_pick = rng.choice(distractors, size=(questions, k), p=wrong_weights / wrong_weights.sum())
    gold = rng.integers(10, 10_000, questions) * (distractors + 1)
    return correct, gold, gold[:, None] + 1 + wrong_pick


def _records(ids, scores, tokens, correct, gold, wrong, prior) -> list[dict]:
    """The log's lines, one per question; `prior` is None or (prior_mu, prior_sigma)."""
    records = []
    for q, question_id in enumerate(ids):
        gold_text = str(gold[q])
        answers = [gold_text if c else str(w) for c, w in zip(correct[q], wrong[q], strict=True)]
        record = {
            "id": question_id,
            "scores": scores[q].tolist(),
            "tokens": tokens[q].tolist(),
            "answers": answers,
            "correct": correct[q].tolist(),
            "gold": gold_text,
        }
        if prior is not None:
            record["prior"] = {"mu": float(prior[0][q]), "sigma": float(prior[1][q])}
        records.append(record)
    return records


def _check_args(mu, sigma, k, rho, ids, median_tokens, link_slope, distractors, prior_noise):
    if mu.ndim != 1 or mu.shape != sigma.shape:
        raise ValueError(f"mu and sigma must be 1-D of equal length, got {mu.shape}, {sigma.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma)) and np.all(sigma > 0)):
        raise ValueError("mu must be finite and sigma finite and positive")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"rho must lie in [0, 1), got {rho}")
    if ids is not None and len(ids) != mu.shape[0]:
        raise ValueError(f"ids has {len(ids)} entries for {mu.shape[0]} questions")
    if not median_tokens > 0:
        raise ValueError(f"median_tokens must be > 0, got {median_tokens}")
    if not link_slope >= 0:
        raise ValueError(f"link_slope must be >= 0, got {link_slope}")
    if int(distractors) != distractors or distractors < 1:
        raise ValueError(f"distractors must be an integer >= 1, got {distractors}")
    if prior_noise is not None and not prior_noise >= 0:
        raise ValueError(f"prior_noise must be >= 0, got {prior_noise}")
