"""One figure style for every optscale-jax plot: sizes, fonts, colours, deterministic files.

Sizes are those of a two-column paper (3.3 in for one column, 6.9 in across both), fonts
are DejaVu Sans (shipped with matplotlib, so every machine renders the same glyphs) at
7-8 pt, and colours come from the Okabe-Ito palette, which stays distinguishable under
the common colour-vision deficiencies. Every method keeps one colour and marker in every
figure. Files are written with fixed metadata (no timestamps, fixed SVG ids), so the same
inputs give the same bytes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import matplotlib
from matplotlib.figure import Figure

from optscale_jax.io import atomic_path

SINGLE_COLUMN_WIDTH = 3.3  # inches
DOUBLE_COLUMN_WIDTH = 6.9  # inches
DPI = 300
FORMATS = ("pdf", "png", "svg")
DEFAULT_FORMATS = ("pdf", "png")

# Okabe & Ito (2008), "Color Universal Design".
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
GREY = "#8C8C8C"

RC_PARAMS: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "mathtext.fontset": "dejavusans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 8,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "errorbar.capsize": 1.5,
    "legend.frameon": False,
    "legend.handlelength": 1.6,
    "legend.borderaxespad": 0.3,
    "figure.dpi": 100,
    "savefig.dpi": DPI,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
    "figure.constrained_layout.use": True,
    # Embed TrueType glyphs (Type 42) instead of Type 3 bitmaps-as-paths: journals ask for it.
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    # Fixed ids in SVG output (matplotlib otherwise salts them with a random uuid).
    "svg.hashsalt": "optscale-jax",
    "svg.fonttype": "none",
    "image.cmap": "viridis",
}

# Per format, metadata that replaces matplotlib's defaults (dates, version strings).
_METADATA: dict[str, dict[str, Any]] = {
    "pdf": {"Creator": "optscale-jax", "Producer": None, "CreationDate": None, "ModDate": None},
    "png": {"Software": "optscale-jax"},
    "svg": {"Creator": "optscale-jax", "Date": None},
}


class MethodStyle(NamedTuple):
    """How one method is drawn in every figure."""

    label: str
    color: str
    marker: str


# Canonical method keys (see `_canonical`) -> style. Names not listed get a colour from the
# palette chosen by a stable hash of the name, so they too keep it from figure to figure.
_METHOD_STYLES: dict[str, MethodStyle] = {
    "optscale0": MethodStyle("OptScale$_0$", OKABE_ITO["vermillion"], "o"),
    "optscale0_peek": MethodStyle("OptScale$_0$ (peek)", OKABE_ITO["orange"], "s"),
    "optscalet": MethodStyle("OptScale$_t$", OKABE_ITO["reddish_purple"], "D"),
    "optscalet_peek": MethodStyle("OptScale$_t$ (peek)", OKABE_ITO["reddish_purple"], "d"),
    "best_of_n": MethodStyle("Best-of-N", OKABE_ITO["black"], "."),
    "self_consistency": MethodStyle("Self-consistency", OKABE_ITO["blue"], "^"),
    "weighted_majority": MethodStyle("Weighted majority", OKABE_ITO["sky_blue"], "v"),
    "esc": MethodStyle("ESC", OKABE_ITO["bluish_green"], "P"),
    "adaptive_consistency": MethodStyle("Adaptive-Consistency", "#B8A800", "X"),
    "oracle": MethodStyle("Oracle (pass@n)", GREY, "*"),
}

# Spellings the replay engine or a user may use -> canonical key.
_ALIASES: dict[str, str] = {
    "optscale": "optscale0",
    "optscale0_seq": "optscale0",
    "optscale0_sequential": "optscale0",
    "optscale_0": "optscale0",
    "optscale_mle": "optscale0",
    "optscale0peek": "optscale0_peek",
    "optscale_peek": "optscale0_peek",
    "optscalet_seq": "optscalet",
    "optscalet_sequential": "optscalet",
    "optscale_t": "optscalet",
    "optscale_map": "optscalet",
    "optscaletpeek": "optscalet_peek",
    "bon": "best_of_n",
    "fixed_n": "best_of_n",
    "fixed_bon": "best_of_n",
    "best_of_n_fixed": "best_of_n",
    "bestofn": "best_of_n",
    "sc": "self_consistency",
    "majority": "self_consistency",
    "majority_vote": "self_consistency",
    "wmv": "weighted_majority",
    "weighted_vote": "weighted_majority",
    "weighted_majority_vote": "weighted_majority",
    "weighted_sc": "weighted_majority",
    "asc": "adaptive_consistency",
    "adaptive_sc": "adaptive_consistency",
    "adaptive": "adaptive_consistency",
    "adaptiveconsistency": "adaptive_consistency",
    "early_stopping_sc": "esc",
    "pass_at_n": "oracle",
    "pass_n": "oracle",
}

_FALLBACK_COLORS = tuple(OKABE_ITO[k] for k in ("blue", "orange", "bluish_green", "vermillion"))
_FALLBACK_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">")


def _canonical(method: str) -> str:
    key = re.sub(r"[^0-9a-z]+", "_", method.strip().lower()).strip("_")
    return _ALIASES.get(key, key)


def is_best_of_n(method: str) -> bool:
    """Whether `method` names fixed-N Best-of-N (drawn as a curve over n)."""
    return _canonical(method) == "best_of_n"


def is_oracle(method: str) -> bool:
    """Whether `method` names the pass@n oracle (a reference, never on the Pareto front)."""
    return _canonical(method) == "oracle"


def method_style(method: str) -> MethodStyle:
    """The label, colour and marker of `method`, the same in every figure.

    Args:
        method: method name as written in the result files (e.g. "optscale0", "bon").

    Returns:
        A `MethodStyle`; unknown names get a colour and marker fixed by a hash of the name.
    """
    key = _canonical(method)
    if key in _METHOD_STYLES:
        return _METHOD_STYLES[key]
    digest = zlib.crc32(key.encode())
    return MethodStyle(
        method,
        _FALLBACK_COLORS[digest % len(_FALLBACK_COLORS)],
        _FALLBACK_MARKERS[(digest // 7) % len(_FALLBACK_MARKERS)],
    )


def method_order(methods: Sequence[str]) -> list[str]:
    """Methods in a fixed legend order (known methods first, in style order), deduplicated."""
    rank = {key: i for i, key in enumerate(_METHOD_STYLES)}
    unique = list(dict.fromkeys(methods))
    return sorted(unique, key=lambda m: (rank.get(_canonical(m), len(rank)), m))


# Sequential colours for a numeric study parameter (e.g. copula correlation rho):
# black for the i.i.d. reference, then palette colours of rising warmth.
SERIES_COLORS = (
    OKABE_ITO["black"],
    OKABE_ITO["blue"],
    OKABE_ITO["bluish_green"],
    OKABE_ITO["orange"],
    OKABE_ITO["vermillion"],
    OKABE_ITO["reddish_purple"],
    OKABE_ITO["sky_blue"],
)
SERIES_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Context in which figures are created and saved with the paper style."""
    with matplotlib.rc_context(RC_PARAMS):
        yield


def styled(build: Callable[..., Figure]) -> Callable[..., Figure]:
    """Decorator: `build` makes its figure inside `paper_style()`, whoever calls it."""

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with paper_style():
            return build(*args, **kwargs)

    return wrapper


def new_figure(width: str | float = "single", height: float | None = None) -> Figure:
    """A figure of paper width with constrained layout (no clipped labels).

    Call it inside `paper_style()`. The figure is not attached to pyplot, so nothing is
    shown and nothing leaks between figures.

    Args:
        width: "single" (3.3 in), "double" (6.9 in), or a width in inches.
        height: height in inches (default: 0.75 x a single column width).

    Returns:
        A `matplotlib.figure.Figure`.
    """
    inches = {"single": SINGLE_COLUMN_WIDTH, "double": DOUBLE_COLUMN_WIDTH}.get(width, width)
    if not isinstance(inches, (int, float)):
        raise ValueError(f"width: expected 'single', 'double' or inches, got {width!r}")
    if height is None:
        height = 0.75 * SINGLE_COLUMN_WIDTH
    return Figure(figsize=(float(inches), float(height)), layout="constrained")


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """Output formats from "pdf,png" (or a sequence), validated.

    Args:
        text: comma-separated formats, or a sequence of them.

    Returns:
        The formats, lower case, without duplicates.

    Raises:
        ValueError: naming `format` if a format is not one of pdf, png, svg.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    formats = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in items if f.strip()))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"format: expected a comma-separated subset of {FORMATS}, got {text!r}")
    return formats


def save_figure(
    figure: Figure,
    out_dir: str | os.PathLike,
    name: str,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> list[pathlib.Path]:
    """Saves `figure` as `out_dir/name.<format>` for every format, atomically and reproducibly.

    PDF and SVG are vector; PNG is 300 dpi. Metadata carries no date or version, and SVG ids
    are salted with a constant, so the same figure gives the same bytes on every run.

    Args:
        figure: the figure to save (created by `new_figure`).
        out_dir: output directory (created if missing).
        name: file stem, e.g. "pareto".
        formats: any of "pdf", "png", "svg".

    Returns:
        The paths written, in the order of `formats`.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with paper_style():
        for fmt in parse_formats(formats):
            path = out_dir / f"{name}.{fmt}"
            with atomic_path(path) as tmp:
                figure.savefig(tmp, format=fmt, dpi=DPI, metadata=_METADATA[fmt])
            paths.append(path)
    return paths
