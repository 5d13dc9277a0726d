"""A setting certified by Learn-then-Test, read back for a live run.

`optscale replay --select ltt` writes `certified_setting.json` (and the same block as
`certified_settings` in summary.json): per method, the setting LTT certifies on every
question of the log, with the risk, epsilon, delta and cap it was certified for.
`read_certified_setting` reads one method's entry from either file; `loop_values` turns it
into the live loop's stopping settings.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from optscale_jax.io import read_json

CERTIFIED_SETTING_FILE = "certified_setting.json"
# What a certificate must hold besides its methods.
_FIELDS = ("risk", "epsilon", "delta", "calibration_questions", "max_n")


def read_certified_setting(path: str | os.PathLike, method: str) -> dict[str, Any]:
    """One method's certified setting from certified_setting.json or an LTT summary.json.

    Args:
        path: the file `optscale replay --select ltt` wrote.
        method: the replay method whose setting to read (e.g. "optscale0").

    Returns:
        {"file", "method", "setting", "params", "certified", "p_value", "risk", "epsilon",
        "delta", "calibration_questions", "max_n", "log"}.

    Raises:
        FileNotFoundError: the file is not there.
        ValueError: starting with "setting:" when the file holds no certificate for `method`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"setting: no such file: {path}")
    try:
        data = read_json(path)
    except ValueError as error:
        raise ValueError(f"setting: {error}") from None
    block = data.get("certified_settings", data) if isinstance(data, dict) else None
    if not isinstance(block, dict) or not all(k in block for k in ("methods", *_FIELDS)):
        raise ValueError(
            f"setting: {path} is neither a {CERTIFIED_SETTING_FILE} nor the summary.json of "
            "optscale replay --select ltt"
        )
    if method not in block["methods"]:
        raise ValueError(
            f"setting: {path} has no setting for {method} "
            f"(it has {', '.join(block['methods']) or 'none'})"
        )
    entry = block["methods"][method]
    certificate = {name: block[name] for name in _FIELDS}
    return {"file": str(path), "method": method, **entry, **certificate, "log": block.get("log")}


def loop_values(certified: dict[str, Any]) -> dict[str, Any]:
    """The live loop's stopping settings (`LoopConfig` fields) of an OptScale certificate.

    A certified OptScale setting gives s_min, alpha and the minimum samples m; the cap is
    the one it was certified against (the full budget of its losses). A method that fell
    back to the full budget (nothing certified: n = max_n) draws max_n samples per question
    (min_samples = max_n).

    Args:
        certified: `read_certified_setting`'s result for "optscale0" or "optscalet".

    Returns:
        A dict of `LoopConfig` fields: max_n and min_samples, and s_min and alpha.

    Raises:
        ValueError: starting with "setting:" for a setting the live loop cannot run.
    """
    params, max_n = certified["params"], int(certified["max_n"])
    if params.get("n") == max_n:
        return {"max_n": max_n, "min_samples": max_n}
    if params.get("s_min") is None or params.get("m") is None:
        raise ValueError(
            f"setting: {certified['method']} {certified['setting']!r} is not an OptScale "
            "(s_min, alpha, m) setting the live loop can run"
        )
    return {
        "s_min": float(params["s_min"]),
        "alpha": float(params["alpha"]),
        "min_samples": int(params["m"]),
        "max_n": max_n,
    }
