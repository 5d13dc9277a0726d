"""The diagnose figure: does each score law fit? PIT histograms and PP panels of `optscale diagnose`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from optscale_jax.figures._axes import REFERENCE_DASHES, draw_diagonal, legend_height
from optscale_jax.figures._table import Row, numeric_column, text_column
from optscale_jax.figures.style import GREY, SERIES_COLORS, new_figure, styled

PIT_BINS = 10
PP_QUESTIONS = 4
_ID_CHARACTERS = 24  # a panel title shows at most this much of a question's id


def pp_questions(ids: np.ndarray, count: int = PP_QUESTIONS) -> list[str]:
    """`count` question ids evenly spaced through the file's order (all if there are fewer)."""
    distinct = list(dict.fromkeys(ids))
    if len(distinct) <= count:
        return distinct
    picks = np.linspace(0, len(distinct) - 1, count).round().astype(int)
    return [distinct[i] for i in picks]


@styled
def diagnose_figure(rows: Sequence[Row], source: str = "pit.csv") -> Figure:
    """PIT histogram per law pooled over questions (top) and PP panels of a few questions.

    Under the true law every PIT value is uniform on [0, 1], so a histogram far from the
    dashed level 1 (a hump: the law is too wide; a U: too narrow; a slope: biased) and a PP
    curve off the diagonal say the law does not fit. A PP panel plots a question's sorted
    PIT values against the plotting positions (i - 1/2) / n, one line per law, for
    `PP_QUESTIONS` questions evenly spaced through the file.

    Args:
        rows: rows of pit.csv (`optscale diagnose`; columns `DIAGNOSE_PIT_COLUMNS`).
        source: file name for error messages.

    Returns:
        The figure (double column wide).
    """
    pit = numeric_column(rows, "pit", source)
    law = text_column(rows, "law")
    question = text_column(rows, "id")
    laws = list(dict.fromkeys(law))
    shown = pp_questions(question)
    figure = new_figure("double", 4.2 + legend_height(len(laws), len(laws)))
    top, bottom = figure.subfigures(2, 1)
    for ax, name in zip(
        top.subplots(1, len(laws), squeeze=False, sharey=True)[0], laws, strict=True
    ):
        values = pit[(law == name) & np.isfinite(pit)]
        ax.hist(values, bins=np.linspace(0.0, 1.0, PIT_BINS + 1), density=True,
                color=SERIES_COLORS[1 + laws.index(name) % (len(SERIES_COLORS) - 1)])  # fmt: skip
        ax.axhline(1.0, color=GREY, linestyle=REFERENCE_DASHES, linewidth=0.9)
        ax.set_xlim(0.0, 1.0)
        ax.set_title(name)
        ax.set_xlabel("PIT")
    top.axes[0].set_ylabel("density (pooled)")
    pp_axes = bottom.subplots(1, len(shown), squeeze=False, sharey=True)[0]
    for ax, question_id in zip(pp_axes, shown, strict=True):
        _pp_panel(ax, pit, law, question == question_id, laws)
        title = question_id if len(question_id) <= _ID_CHARACTERS else question_id[:21] + "..."
        ax.set_title(f"question {title}")
        ax.set_xlabel("uniform plotting position")
    pp_axes[0].set_ylabel("sorted PIT")
    handles, labels = pp_axes[0].get_legend_handles_labels()
    bottom.legend(handles, labels, loc="outside lower center", ncols=len(laws))
    return figure


def _pp_panel(ax, pit: np.ndarray, law: np.ndarray, rows_of_question: np.ndarray, laws) -> None:
    """One question's sorted PIT values against (i - 1/2) / n, one line per law."""
    for i, name in enumerate(laws):
        values = np.sort(pit[rows_of_question & (law == name) & np.isfinite(pit)])
        position = (np.arange(1, values.size + 1) - 0.5) / max(values.size, 1)
        ax.plot(position, values, color=SERIES_COLORS[1 + i % (len(SERIES_COLORS) - 1)],
                linewidth=1.0, marker="o", markersize=1.5, label=name)  # fmt: skip
    draw_diagonal(ax, 0.0)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
