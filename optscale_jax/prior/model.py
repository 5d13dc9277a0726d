"""The predictor's network: an ensemble of small MLPs with a mu head and a sigma head."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from optscale_jax.prior._json_config import JsonConfig, int_tuple
from optscale_jax.prior.features import FeaturiserConfig, featurise


@dataclasses.dataclass(frozen=True)
class ModelConfig(JsonConfig):
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

    _json_name = "model config"
    _json_types = {"hidden": int_tuple}

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
    """`_ensemble_forward` under `jax.jit`, built on first use (importing jax is slow)."""
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
