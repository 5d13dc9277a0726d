"""Saving and loading a predictor: weights as safetensors, configs as JSON (no pickle)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from optscale_jax.io import atomic_path, read_json, write_json
from optscale_jax.prior.features import FeaturiserConfig
from optscale_jax.prior.model import ModelConfig, PriorPredictor

FORMAT_VERSION = 1
CONFIG_FILE = "prior_config.json"
WEIGHTS_FILE = "prior_weights.safetensors"


def _flatten_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The parameter pytree as safetensors' flat {"layers.0.w": array, ...}."""
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
    """The parameter pytree from `_flatten_params` output; a missing tensor names `path`."""
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
        directory: the folder given to `save_prior` (the `model` of the command line).

    Returns:
        The predictor; its predictions equal the saved one's bitwise.

    Raises:
        FileNotFoundError: naming `model` and the missing file.
        ValueError: naming the file if its content is not a saved predictor.
    """
    from safetensors.numpy import load_file

    directory = pathlib.Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"model: no {path.name} in {directory}")
    saved = read_json(config_path)
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
