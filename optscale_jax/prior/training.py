"""Training the predictor: an AdamW-trained MLP ensemble with per-member early stopping.

`train_prior` works on a feature matrix and its targets; `train_prior_from_records` is the
whole path from PRM-statistics records (features spec -> featuriser -> features -> model).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from optscale_jax.prior.features import FeaturiserConfig, featurise, fit_featuriser, parse_features
from optscale_jax.prior.model import (
    ModelConfig,
    PriorPredictor,
    init_mlp,
    mlp_forward,
    predict_from_features,
    prior_loss,
)
from optscale_jax.prior.targets import prm_targets


class _SplitData(NamedTuple):
    """Training and validation rows on the device: features [Q, D], targets [Q] (float32)."""

    x_train: Any
    y_train: tuple[Any, Any]
    x_val: Any
    y_val: tuple[Any, Any]


class _Fit(NamedTuple):
    """Outcome of the epoch loop: each member's best parameters and epoch, the history."""

    params: dict[str, Any]
    best_epoch: np.ndarray
    history: list[dict[str, float]]


def train_prior_from_records(
    records: Sequence[Mapping[str, Any]],
    features: str = "hashed",
    config: ModelConfig | None = None,
    progress: bool = True,
    source: str = "records",
) -> PriorPredictor:
    """Fits a featuriser on PRM-statistics records and trains the predictor on them.

    Args:
        records: question records with text, `prm_mean`, `prm_std` (optional `level`,
            `subject`).
        features: "hashed" or "embed:PATH" (a local transformers model).
        config: model and training settings, the seed included (defaults: `ModelConfig()`).
        progress: progress bars (embedding, epochs) on stderr.
        source: name of the records (a file) for error messages.

    Returns:
        The trained `PriorPredictor`.

    Raises:
        ValueError: naming `features` if the spec is malformed, or `source` and the record
            if a target is missing or out of range.
        FileNotFoundError: naming `features` if the embedding model does not exist.
    """
    kind, model_path = parse_features(features)
    if model_path is not None and not pathlib.Path(model_path).exists():
        raise FileNotFoundError(f"features: no model at {model_path}")
    mu, sigma = prm_targets(records, source)
    featuriser = fit_featuriser(records, kind, embed_model=model_path)
    matrix = featurise(records, featuriser, progress=progress)
    return train_prior(matrix, mu, sigma, featuriser, config, progress=progress)


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
    config = config or ModelConfig()
    features, mu, sigma = _checked_targets(features, mu, sigma)
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
    data = _device_data(features, mu, sigma, train_idx, val_idx)
    fit = _fit_ensemble(data, config, mu0, sigma0, progress)
    predictor = PriorPredictor(
        featuriser=featuriser,
        model=config,
        params=_to_numpy_float32(fit.params),
        info={},
    )
    val_mu, val_sigma = predict_from_features(predictor, features[val_idx])
    info = {
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "n_features": int(features.shape[1]),
        "best_epoch": fit.best_epoch.tolist(),
        "val_mae_mu": float(np.mean(np.abs(val_mu - mu[val_idx]))),
        "val_mae_sigma": float(np.mean(np.abs(val_sigma - sigma[val_idx]))),
        "val_mae_mu_constant": float(np.mean(np.abs(mu0 - mu[val_idx]))),
        "val_mae_sigma_constant": float(np.mean(np.abs(sigma0 - sigma[val_idx]))),
        "train_median_mu": mu0,
        "train_median_sigma": sigma0,
        "history": fit.history,
    }
    return predictor._replace(info=info)


def _checked_targets(
    features: np.ndarray, mu: np.ndarray, sigma: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features float32, mu float64, sigma float64), after checking shapes and values."""
    features = np.asarray(features, dtype=np.float32)
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if features.ndim != 2 or mu.shape != (features.shape[0],) or sigma.shape != mu.shape:
        raise ValueError(
            f"features, mu, sigma: expected [Q, D], [Q], [Q], got {features.shape}, {mu.shape}, {sigma.shape}"
        )
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma)) and np.all(sigma >= 0)):
        raise ValueError("mu, sigma: targets must be finite and sigma >= 0")
    return features, mu, sigma


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) row indices: a seeded random `val_fraction` held out."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _device_data(features, mu, sigma, train_idx, val_idx) -> _SplitData:
    """The training and validation rows as jax arrays (targets in float32)."""
    import jax.numpy as jnp

    return _SplitData(
        x_train=jnp.asarray(features[train_idx]),
        y_train=(
            jnp.asarray(mu[train_idx], jnp.float32),
            jnp.asarray(sigma[train_idx], jnp.float32),
        ),
        x_val=jnp.asarray(features[val_idx]),
        y_val=(jnp.asarray(mu[val_idx], jnp.float32), jnp.asarray(sigma[val_idx], jnp.float32)),
    )


def _fit_ensemble(
    data: _SplitData, config: ModelConfig, mu0: float, sigma0: float, progress: bool
) -> _Fit:
    """Initialises the members at the constant anchor (mu0, sigma0) and trains them."""
    import jax
    import optax

    n_train, n_features = data.x_train.shape
    batch = min(config.batch_size, n_train)
    steps_per_epoch = max(1, n_train // batch)
    key = jax.random.PRNGKey(config.seed)
    init_key, run_key = jax.random.split(key)
    member_keys = jax.random.split(init_key, config.members)
    params = jax.vmap(lambda k: init_mlp(k, n_features, config.hidden, mu0, sigma0))(member_keys)
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.epochs * steps_per_epoch)
    optimiser = optax.adamw(schedule, weight_decay=config.weight_decay)
    opt_state = jax.vmap(optimiser.init)(params)
    epoch_fn = _ensemble_epoch(data, config, optimiser, batch, steps_per_epoch)
    return _run_epochs(epoch_fn, params, opt_state, run_key, config, progress)


def _ensemble_epoch(data: _SplitData, config: ModelConfig, optimiser, batch: int, steps: int):
    """The jitted epoch of all members: (params, opt_state, keys) -> (params, opt_state,
    mean training loss, validation MAE of (mu, sigma)), each with a leading member axis."""
    import jax
    import jax.numpy as jnp
    import optax

    x_train, y_train, x_val, y_val = data
    n_train = x_train.shape[0]
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
        order = jax.random.permutation(perm_key, n_train)[: steps * batch]
        batches = order.reshape(steps, batch)
        step_keys = jax.random.split(drop_key, steps)

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

    return jax.jit(jax.vmap(member_epoch))


def _run_epochs(epoch_fn, params, opt_state, run_key, config: ModelConfig, progress: bool) -> _Fit:
    """Runs epochs until `config.epochs` or `config.patience` epochs without improvement,
    keeping each member's parameters of its best validation epoch."""
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

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
    return _Fit(best_params, best_epoch, history)


def _keep_improved(improved, new_params, old_params):
    """Per member (leading axis), the new parameters where `improved`, else the old ones."""
    import jax
    import jax.numpy as jnp

    def pick(new, old):
        return jnp.where(improved.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

    return jax.tree_util.tree_map(pick, new_params, old_params)


def _to_numpy_float32(params):
    """The parameter pytree as float32 numpy arrays (what is saved and predicted with)."""
    import jax

    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float32), params)
