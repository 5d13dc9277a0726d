"""Paths of the data files shipped inside the package (see `data/README.md`)."""

from __future__ import annotations

import pathlib

_DATA = pathlib.Path(__file__).parent / "data"

GPQA_GENRM = "gpqa-diamond-genrm/gpqa_diamond64_llama33_70b.jsonl"
MATH_TRAIN_PRM_STATS = "optscale-official/math_train_prm_stats.jsonl"
MATH500_PRM_STATS = "optscale-official/math500_prm_stats.jsonl"
RELEASED_CURVES = "optscale-official/released_curves.json"
PAPER_TABLE = "optscale-official/paper_table.csv"
AMC23_VOTES = "beacon-amc23-votes/amc23_votes32.jsonl"


def data_path(name: str) -> pathlib.Path:
    """Absolute path of a shipped data file, e.g. `data_path(GPQA_GENRM)`.

    Raises:
      FileNotFoundError: naming the file, if it is not shipped.
    """
    path = _DATA / name
    if not path.exists():
        raise FileNotFoundError(f"no shipped data file {name!r} under {_DATA}")
    return path


def prompts_path(dataset: str) -> pathlib.Path:
    """Prompt file of `dataset` (math500, gsm8k, gsm8k5, aime24, aime25, amc23)."""
    return data_path(f"optscale-official/prompts/{dataset}.jsonl")
