"""The OptScalet prior predictor: question text -> (mu, sigma) of its verifier-score law.

Pipeline (each arrow one function):

    question records -> features (`fit_featuriser`, `featurise`)
                     -> an ensemble of small MLPs (`init_mlp`, `mlp_forward`)
                     -> trained with optax on per-question PRM statistics (`train_prior`)
                     -> saved as safetensors + JSON (`save_prior`, `load_prior`)
                     -> (mu, sigma) per question (`predict_prior`).

Targets are the sample mean (`prm_mean`) and standard deviation (`prm_std`) of each training
question's PRM scores: the same quantities the shipped anchors (the constant training median
and the predictor released with the paper) predict, so mean absolute errors are comparable.

Two featurisers:

* `hashed` (default, dependency free): signed feature hashing of word 1-2-grams and character
  3-5-grams into fixed buckets with 64-bit FNV-1a (a fixed, documented hash, so features do
  not depend on the process or on Python's salted `hash()`), plus standardised length
  features and one-hot MATH `level` / `subject` when present.
* `embed:PATH`: mean-pooled last hidden states of a local transformers model
  (`optscale_jax.embeddings`), plus the same length and metadata features.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

FORMAT_VERSION = 1
CONFIG_FILE = "prior_config.json"
WEIGHTS_FILE = "prior_weights.safetensors"

# 64-bit FNV-1a (http://www.isthe.com/chongo/tech/comp/fnv/): offset basis and prime.
_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF

# Words, numbers, LaTeX commands and single symbols: the units of MATH problem text.
_TOKEN_RE = re.compile(r"\\[a-z]+|[a-z]+|\d+|[^\sa-z\d]")
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


# --------------------------------------------------------------------------- hashing


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


def _normalise_text(text: str) -> str:
    return " ".join(text.lower().split())


def tokenize(text: str) -> list[str]:
    """Word-level tokens of a question: lower-cased words, numbers, LaTeX commands, symbols.

    Args:
        text: the question text.

    Returns:
        The tokens in order.
    """
    return _TOKEN_RE.findall(text.lower())


def _ngrams(items: Sequence[str], n: int) -> Iterable[str]:
    return (" ".join(items[i : i + n]) for i in range(len(items) - n + 1))


def _char_ngrams(text: str, n: int) -> Iterable[str]:
    return (text[i : i + n] for i in range(len(text) - n + 1))


def _hashed_block(
    grams_per_text: Iterable[Iterable[str]], buckets: int, namespace: str, count: int
) -> np.ndarray:
    """Signed hashed counts, squashed by sign * log1p |count| and L2-normalised per row."""
    cache = _HashCache(buckets)
    block = np.zeros((count, buckets), dtype=np.float64)
    for row, grams in enumerate(grams_per_text):
        for gram in grams:
            bucket, sign = cache(f"{namespace}\x1f{gram}")
            block[row, bucket] += sign
    block = np.sign(block) * np.log1p(np.abs(block))
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return block / np.where(norms > 0, norms, 1.0)


def _length_features(text: str) -> list[float]:
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


# --------------------------------------------------------------------------- featuriser


@dataclasses.dataclass(frozen=True)
class FeaturiserConfig:
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

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeaturiserConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"featuriser config: unknown field(s) {sorted(unknown)}")
        values = dict(data)
        for key in ("word_ngrams", "char_ngrams", "levels", "subjects"):
            if key in values:
                values[key] = tuple(values[key])
        for key in ("length_mean", "length_std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


def parse_features(spec: str) -> tuple[str, str | None]:
    """Parses the `--features` value: "hashed" or "embed:PATH".

    Args:
        spec: the command-line value.

    Returns:
        (kind, model path or None).

    Raises:
        ValueError: naming `--features` if the value is neither form.
    """
    if spec == "hashed":
        return "hashed", None
    if spec.startswith("embed:") and len(spec) > len("embed:"):
        return "embed", spec[len("embed:") :]
    raise ValueError(f"--features: expected 'hashed' or 'embed:PATH', got {spec!r}")


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


def _is_level(value: Any) -> bool:
    try:
        int(value)
    except (TypeError, ValueError):
        return False
    return True


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


def featurise(
    records: Sequence[Mapping[str, Any]],
    config: FeaturiserConfig,
    progress: bool = False,
) -> np.ndarray:
    """Feature matrix of question records.

    Args:
        records: question records (text plus optional `level`, `subject`).
        config: a fitted featuriser config.
        progress: show a progress bar while embedding (embed features only).

    Returns:
        float32 array [Q, D]; deterministic given the config and the texts.
    """
    texts = [question_text(r, where=f"record {i}") for i, r in enumerate(records)]
    lengths = np.array([_length_features(t) for t in texts], dtype=np.float64).reshape(
        len(texts), len(_LENGTH_FEATURES)
    )
    lengths = (lengths - np.asarray(config.length_mean)) / np.asarray(config.length_std)
    blocks = [lengths, _metadata_block(records, config)]
    if config.kind == "hashed":
        normalised = [_normalise_text(t) for t in texts]
        tokens = [tokenize(t) for t in normalised]
        words = ([g for n in config.word_ngrams for g in _ngrams(toks, n)] for toks in tokens)
        chars = (
            [g for n in config.char_ngrams for g in _char_ngrams(f" {t} ", n)] for t in normalised
        )
        blocks.append(_hashed_block(words, config.word_buckets, "w", len(texts)))
        blocks.append(_hashed_block(chars, config.char_buckets, "c", len(texts)))
    elif config.kind == "embed":
        from optscale_jax.embeddings import embed_texts

        embedded = embed_texts(
            texts, config.embed_model, max_length=config.embed_max_length, progress=progress
        )
        # Unit-normalised so the embedding scale of the model does not matter.
        norms = np.linalg.norm(embedded, axis=1, keepdims=True)
        blocks.append(embedded / np.where(norms > 0, norms, 1.0))
    else:
        raise ValueError(f"featuriser config: unknown kind {config.kind!r}")
    return np.concatenate(blocks, axis=1).astype(np.float32)


# --------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and training settings of the predictor (stored as JSON).

    Attributes:
        hidden: widths of the hidden layers.
        members: ensemble size (members differ by initialisation and batch order).
        loss: "l1" (the evaluation metric; targets have a long left tail) or "huber".
        huber_delta: Huber transition, in units of each target's spread (huber only).
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        input_dropout: probability of dropping an input feature during training.
        epochs: maximum epochs (the cosine learning-rate decay spans them); the best epoch
            on the validation split is kept.
        patience: stop after this many epochs without any member improving.
        batch_size: minibatch size.
        val_fraction: share of training questions held out for early stopping.
        seed: seed of the split, initialisation and batch order.
        mu_scale: target spread of mu (normalises the loss; set by training).
        sigma_scale: target spread of sigma (normalises the loss; set by training).
    """

    hidden: tuple[int, ...] = (64,)
    members: int = 5
    loss: str = "l1"
    huber_delta: float = 0.5
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    input_dropout: float = 0.2
    epochs: int = 8
    patience: int = 3
    batch_size: int = 64
    val_fraction: float = 0.1
    seed: int = 0
    mu_scale: float = 1.0
    sigma_scale: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"model config: unknown field(s) {sorted(unknown)}")
        values = dict(data)
        if "hidden" in values:
            values["hidden"] = tuple(int(h) for h in values["hidden"])
        return cls(**values)


class PriorPredictor(NamedTuple):
    """A trained predictor.

    Attributes:
        featuriser: how question records become features.
        model: architecture and training settings.
        params: pytree of float32 arrays, each with a leading ensemble axis.
        info: training record (validation MAE per member, best epochs, sizes).
    """

    featuriser: FeaturiserConfig
    model: ModelConfig
    params: dict[str, Any]
    info: dict[str, Any]


def init_mlp(key, n_features: int, hidden: Sequence[int], mu0: float, sigma0: float):
    """Parameters of one MLP with a mu head and a sigma head.

    The heads' biases start at the inverse link of the training medians, so an untrained
    network predicts the constant-median anchor.

    Args:
        key: a `jax.random` key.
        n_features: input width.
        hidden: hidden-layer widths.
        mu0: initial mu prediction, in (0, 1).
        sigma0: initial sigma prediction, > 0.

    Returns:
        {"layers": [{"w", "b"}, ...], "head": {"w", "b"}} with float32 leaves.
    """
    import jax
    import jax.numpy as jnp

    widths = [n_features, *hidden]
    keys = jax.random.split(key, len(widths))
    layers = []
    for k, (fan_in, fan_out) in zip(
        keys[:-1], zip(widths[:-1], widths[1:], strict=True), strict=True
    ):
        w = jax.random.normal(k, (fan_in, fan_out), jnp.float32) * jnp.sqrt(2.0 / fan_in)
        layers.append({"w": w, "b": jnp.zeros((fan_out,), jnp.float32)})
    head_w = jax.random.normal(keys[-1], (widths[-1], 2), jnp.float32) * (
        0.01 / math.sqrt(widths[-1])
    )
    # Inverse links: logit for mu, inverse softplus for sigma.
    head_b = jnp.array([math.log(mu0 / (1 - mu0)), math.log(math.expm1(sigma0))], jnp.float32)
    return {"layers": layers, "head": {"w": head_w, "b": head_b}}


def mlp_forward(params, features):
    """(mu, sigma) of one MLP: mu = sigmoid(head_0), sigma = softplus(head_1) + 1e-4.

    Args:
        params: one member's parameters (`init_mlp`).
        features: [..., D] inputs.

    Returns:
        (mu, sigma), each [...], mu in (0, 1) and sigma > 0.
    """
    import jax
    import jax.numpy as jnp

    x = features
    for layer in params["layers"]:
        x = jax.nn.gelu(x @ layer["w"] + layer["b"])
    out = x @ params["head"]["w"] + params["head"]["b"]
    return jax.nn.sigmoid(out[..., 0]), jax.nn.softplus(out[..., 1]) + jnp.asarray(1e-4, out.dtype)


def _ensemble_forward(params, features):
    """Members' predictions [E, Q] for each head (vmap over the leading ensemble axis)."""
    import jax

    return jax.vmap(mlp_forward, in_axes=(0, None))(params, features)


def _jitted_ensemble_forward():
    import jax

    global _ENSEMBLE_FORWARD
    if _ENSEMBLE_FORWARD is None:
        _ENSEMBLE_FORWARD = jax.jit(_ensemble_forward)
    return _ENSEMBLE_FORWARD


_ENSEMBLE_FORWARD = None


def prior_loss(params, features, mu, sigma, config: ModelConfig, keep_mask=None):
    """Training loss of one member: the two heads' errors, each divided by its target spread.

    l1: |mu_hat - mu| / mu_scale + |sigma_hat - sigma| / sigma_scale (the evaluation metric).
    huber: the same with Huber(delta) on the scaled errors.

    Args:
        params: one member's parameters.
        features: [B, D].
        mu: [B] target means.
        sigma: [B] target standard deviations.
        config: the model config (loss kind and scales).
        keep_mask: optional [B, D] input-dropout mask (already divided by the keep rate).

    Returns:
        Scalar loss.
    """
    import jax.numpy as jnp
    import optax

    x = features if keep_mask is None else features * keep_mask
    mu_hat, sigma_hat = mlp_forward(params, x)
    err_mu = (mu_hat - mu) / config.mu_scale
    err_sigma = (sigma_hat - sigma) / config.sigma_scale
    if config.loss == "l1":
        return jnp.mean(jnp.abs(err_mu)) + jnp.mean(jnp.abs(err_sigma))
    delta = config.huber_delta
    return (
        jnp.mean(optax.huber_loss(err_mu, delta=delta) + optax.huber_loss(err_sigma, delta=delta))
        / delta
    )


def _keep_improved(improved, new_params, old_params):
    """Per member (leading axis), the new parameters where `improved`, else the old ones."""
    import jax
    import jax.numpy as jnp

    def pick(new, old):
        return jnp.where(improved.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

    return jax.tree_util.tree_map(pick, new_params, old_params)


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train_prior(
    features: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    featuriser: FeaturiserConfig,
    config: ModelConfig | None = None,
    progress: bool = True,
) -> PriorPredictor:
    """Trains an ensemble of MLPs with AdamW, keeping each member's best validation epoch.

    The validation split (`config.val_fraction` of the rows, chosen by `config.seed`) is
    used only for early stopping. Members are trained together with `jax.vmap`.

    Args:
        features: [Q, D] float32 training features (`featurise`).
        mu: [Q] target means in [0, 1].
        sigma: [Q] target standard deviations, >= 0.
        featuriser: the config that produced `features` (stored with the model).
        config: model and training settings (defaults: `ModelConfig()`).
        progress: tqdm bar over epochs on stderr.

    Returns:
        The trained `PriorPredictor`; `info` holds the per-epoch validation MAE history.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from tqdm import tqdm

    config = config or ModelConfig()
    features = np.asarray(features, dtype=np.float32)
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if features.ndim != 2 or mu.shape != (features.shape[0],) or sigma.shape != mu.shape:
        raise ValueError(
            f"features, mu, sigma: expected [Q, D], [Q], [Q], got {features.shape}, {mu.shape}, {sigma.shape}"
        )
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma)) and np.all(sigma >= 0)):
        raise ValueError("mu, sigma: targets must be finite and sigma >= 0")
    train_idx, val_idx = _split(len(mu), config.val_fraction, config.seed)
    if len(val_idx) == 0:
        val_idx = train_idx
    mu0 = float(np.clip(np.median(mu[train_idx]), 1e-3, 1 - 1e-3))
    sigma0 = float(max(np.median(sigma[train_idx]), 1e-3))
    config = dataclasses.replace(
        config,
        # Spread = mean absolute deviation from the median: the constant anchor's error.
        mu_scale=float(max(np.mean(np.abs(mu[train_idx] - mu0)), 1e-6)),
        sigma_scale=float(max(np.mean(np.abs(sigma[train_idx] - sigma0)), 1e-6)),
    )

    x_train = jnp.asarray(features[train_idx])
    y_train = (jnp.asarray(mu[train_idx], jnp.float32), jnp.asarray(sigma[train_idx], jnp.float32))
    x_val = jnp.asarray(features[val_idx])
    y_val = (jnp.asarray(mu[val_idx], jnp.float32), jnp.asarray(sigma[val_idx], jnp.float32))
    n_train, n_features = x_train.shape
    batch = min(config.batch_size, n_train)
    steps_per_epoch = max(1, n_train // batch)

    key = jax.random.PRNGKey(config.seed)
    init_key, run_key = jax.random.split(key)
    member_keys = jax.random.split(init_key, config.members)
    params = jax.vmap(lambda k: init_mlp(k, n_features, config.hidden, mu0, sigma0))(member_keys)
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.epochs * steps_per_epoch)
    optimiser = optax.adamw(schedule, weight_decay=config.weight_decay)
    opt_state = jax.vmap(optimiser.init)(params)
    keep = 1.0 - config.input_dropout

    def member_step(p, state, step_key, idx):
        x, m, s = x_train[idx], y_train[0][idx], y_train[1][idx]
        mask = None
        if config.input_dropout > 0:
            mask = jax.random.bernoulli(step_key, keep, x.shape).astype(x.dtype) / keep
        loss, grads = jax.value_and_grad(prior_loss)(p, x, m, s, config, mask)
        updates, state = optimiser.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    def member_epoch(p, state, epoch_key):
        perm_key, drop_key = jax.random.split(epoch_key)
        order = jax.random.permutation(perm_key, n_train)[: steps_per_epoch * batch]
        batches = order.reshape(steps_per_epoch, batch)
        step_keys = jax.random.split(drop_key, steps_per_epoch)

        def body(carry, inputs):
            p, state = carry
            p, state, loss = member_step(p, state, *inputs)
            return (p, state), loss

        (p, state), losses = jax.lax.scan(body, (p, state), (step_keys, batches))
        mu_hat, sigma_hat = mlp_forward(p, x_val)
        val = jnp.stack(
            [jnp.mean(jnp.abs(mu_hat - y_val[0])), jnp.mean(jnp.abs(sigma_hat - y_val[1]))]
        )
        return p, state, jnp.mean(losses), val

    epoch_fn = jax.jit(jax.vmap(member_epoch))

    best_params = params
    best_score = np.full(config.members, np.inf)
    best_epoch = np.zeros(config.members, dtype=int)
    history = []
    bar = tqdm(range(config.epochs), desc="training prior", disable=not progress)
    for epoch in bar:
        run_key, sub = jax.random.split(run_key)
        params, opt_state, train_loss, val = epoch_fn(
            params, opt_state, jax.random.split(sub, config.members)
        )
        val = np.asarray(val, dtype=np.float64)
        # Selection score: the validation loss in the same scaled units as training.
        score = val[:, 0] / config.mu_scale + val[:, 1] / config.sigma_scale
        improved = score < best_score
        best_score = np.where(improved, score, best_score)
        best_epoch = np.where(improved, epoch, best_epoch)
        best_params = _keep_improved(jnp.asarray(improved), params, best_params)
        history.append(
            {
                "epoch": epoch,
                "train_loss": float(np.mean(np.asarray(train_loss))),
                "val_mae_mu": float(val[:, 0].mean()),
                "val_mae_sigma": float(val[:, 1].mean()),
            }
        )
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", val=f"{score.mean():.3f}")
        if epoch - int(best_epoch.max()) >= config.patience:
            break
    bar.close()

    predictor = PriorPredictor(
        featuriser=featuriser,
        model=config,
        params=jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float32), best_params),
        info={},
    )
    val_mu, val_sigma = predict_from_features(predictor, features[val_idx])
    info = {
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "n_features": int(n_features),
        "best_epoch": best_epoch.tolist(),
        "val_mae_mu": float(np.mean(np.abs(val_mu - mu[val_idx]))),
        "val_mae_sigma": float(np.mean(np.abs(val_sigma - sigma[val_idx]))),
        "val_mae_mu_constant": float(np.mean(np.abs(mu0 - mu[val_idx]))),
        "val_mae_sigma_constant": float(np.mean(np.abs(sigma0 - sigma[val_idx]))),
        "train_median_mu": mu0,
        "train_median_sigma": sigma0,
        "history": history,
    }
    return predictor._replace(info=info)


def predict_from_features(
    predictor: PriorPredictor, features: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble-mean (mu, sigma) for precomputed features.

    Args:
        predictor: a trained or loaded predictor.
        features: [Q, D] from `featurise` with `predictor.featuriser`.

    Returns:
        (mu, sigma), float32 arrays [Q].
    """
    import jax.numpy as jnp

    features = np.asarray(features, dtype=np.float32)
    expected = (
        predictor.params["layers"][0]["w"].shape[1]
        if predictor.params["layers"]
        else predictor.params["head"]["w"].shape[1]
    )
    if features.ndim != 2 or features.shape[1] != expected:
        raise ValueError(f"features: expected [Q, {expected}], got {features.shape}")
    params = {
        "layers": [
            {k: jnp.asarray(v) for k, v in layer.items()} for layer in predictor.params["layers"]
        ],
        "head": {k: jnp.asarray(v) for k, v in predictor.params["head"].items()},
    }
    mu, sigma = _jitted_ensemble_forward()(params, jnp.asarray(features))
    return np.asarray(mu.mean(axis=0)), np.asarray(sigma.mean(axis=0))


def predict_prior(
    predictor: PriorPredictor, records: Sequence[Mapping[str, Any]], progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted prior centres (mu, sigma) for question records.

    Args:
        predictor: a trained or loaded predictor.
        records: question records (text plus optional `level`, `subject`).
        progress: progress bar while embedding (embed features only).

    Returns:
        (mu, sigma), float32 arrays [Q].
    """
    return predict_from_features(
        predictor, featurise(records, predictor.featuriser, progress=progress)
    )


# --------------------------------------------------------------------------- persistence


def _flatten_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    flat = {}
    for i, layer in enumerate(params["layers"]):
        for name, value in layer.items():
            flat[f"layers.{i}.{name}"] = np.ascontiguousarray(value, dtype=np.float32)
    for name, value in params["head"].items():
        flat[f"head.{name}"] = np.ascontiguousarray(value, dtype=np.float32)
    return flat


def _unflatten_params(
    flat: Mapping[str, np.ndarray], n_layers: int, path: pathlib.Path
) -> dict[str, Any]:
    try:
        layers = [{"w": flat[f"layers.{i}.w"], "b": flat[f"layers.{i}.b"]} for i in range(n_layers)]
        head = {"w": flat["head.w"], "b": flat["head.b"]}
    except KeyError as error:
        raise ValueError(f"{path}: missing tensor {error.args[0]!r}") from None
    return {"layers": layers, "head": head}


def save_prior(predictor: PriorPredictor, directory: str | os.PathLike) -> pathlib.Path:
    """Saves a predictor: weights as safetensors, configs and training info as JSON.

    Both files are written atomically (temporary file, then rename).

    Args:
        predictor: the predictor.
        directory: output folder (created).

    Returns:
        The folder path.
    """
    from safetensors.numpy import save_file

    from optscale_jax.io import atomic_path, write_json

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(_flatten_params(predictor.params), str(tmp))
    write_json(
        {
            "format_version": FORMAT_VERSION,
            "featuriser": predictor.featuriser.to_json(),
            "model": predictor.model.to_json(),
            "info": predictor.info,
        },
        directory / CONFIG_FILE,
    )
    return directory


def load_prior(directory: str | os.PathLike) -> PriorPredictor:
    """Loads a predictor saved by `save_prior` (no pickle: JSON and safetensors only).

    Args:
        directory: the folder given to `save_prior`.

    Returns:
        The predictor; its predictions equal the saved one's bitwise.

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: naming the file if its content is not a saved predictor.
    """
    from safetensors.numpy import load_file

    directory = pathlib.Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"--model: no {path.name} in {directory}")
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path}: not JSON ({error})") from None
    if saved.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{config_path}: unsupported format_version {saved.get('format_version')!r}"
        )
    featuriser = FeaturiserConfig.from_json(saved["featuriser"])
    model = ModelConfig.from_json(saved["model"])
    params = _unflatten_params(load_file(str(weights_path)), len(model.hidden), weights_path)
    return PriorPredictor(
        featuriser=featuriser, model=model, params=params, info=saved.get("info", {})
    )


# --------------------------------------------------------------------------- data


def prm_targets(
    records: Sequence[Mapping[str, Any]], source: str = "records"
) -> tuple[np.ndarray, np.ndarray]:
    """(prm_mean, prm_std) arrays of PRM-statistics records, validated.

    Args:
        records: records with `prm_mean` and `prm_std`.
        source: file name for error messages.

    Returns:
        (mu, sigma) float64 arrays [Q].
    """
    mu, sigma = [], []
    for number, record in enumerate(records, start=1):
        try:
            m, s = float(record["prm_mean"]), float(record["prm_std"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{source}:{number}: needs numeric prm_mean and prm_std") from None
        if not (0.0 <= m <= 1.0 and math.isfinite(s) and s >= 0):
            raise ValueError(f"{source}:{number}: prm_mean must be in [0, 1] and prm_std >= 0")
        mu.append(m)
        sigma.append(s)
    return np.asarray(mu), np.asarray(sigma)


def moments_to_truncnorm(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Truncated-normal (mu, sigma) on [0, 1] whose mean and standard deviation are given.

    The truncated normal is an exponential family in (s, s^2), so its maximum-likelihood fit
    to one pseudo-sample with moments (mean, mean^2 + std^2) matches those moments (`optscale_jax.estimation.moment_match`). Moments no truncated normal reaches
    (a left tail heavier than the exponential's, common for PRM scores) land on the core's
    parameter box edge. The predictor's outputs are score moments; OptScalet's prior is on
    (mu, sigma), so predictions are converted with this before they are used as priors.

    Args:
        mean: score means; clipped into [1e-4, 1 - 1e-4].
        std: score standard deviations; floored at 1e-4.

    Returns:
        (mu, sigma) float64 arrays of the broadcast shape.
    """
    from optscale_jax.estimation import moment_match

    mean = np.clip(np.asarray(mean, np.float64), 1e-4, 1 - 1e-4)
    return moment_match(mean, np.maximum(np.asarray(std, np.float64), 1e-4))
