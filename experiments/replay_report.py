"""report.md of `optscale replay`: the terminal table, the figures and the settings in one file,
so a run can be read without the terminal.

Example:
    optscale replay --demo --out runs/gpqa   # runs/gpqa/report.md, pareto.png, samples.png
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from typing import Any

from optscale_jax.replay import ReplayConfig

REPORT_FILE = "report.md"
FIGURE_FORMATS = ("png", "pdf")
# figure kind (`optscale_jax.figures.registry.FIGURES`) -> its caption in the report.
REPORT_FIGURES = {
    "pareto": "accuracy against mean cost per question, every setting of every method",
    "samples": "samples drawn per question by each method's chosen setting",
}
# ReplayConfig fields that only mean something with select="ltt", or with a budget method.
_LTT_FIELDS = ("risk", "epsilon", "delta")
_BUDGET_FIELDS = ("budget", "objective", "wave", "budget_unit", "budget_s_min")


def write_report(
    out_dir: pathlib.Path,
    terminal: str,
    config: ReplayConfig,
    summary: dict[str, Any],
    figures: bool = True,
) -> list[pathlib.Path]:
    """Draws the figures from the result files in `out_dir` and writes report.md beside them.

    Args:
        out_dir: the replay's output directory (results.csv and per_question.csv are read).
        terminal: the text the terminal showed (`replay_cli.terminal_text`).
        config: the replay's configuration.
        summary: summary.json's content.
        figures: draw pareto and samples (png and pdf); False writes report.md alone.

    Returns:
        The files written: the figures, then report.md.
    """
    drawn, notes = _draw_figures(out_dir, summary) if figures else ([], [])
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    lines = [
        f"# Replay of {pathlib.Path(summary['log']).name}",
        "",
        "## Results",
        "",
        "```text",
        terminal,
        "```",
        "",
        *_figure_lines(drawn, notes, figures),
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {name} | {_cell(value)} |" for name, value in settings_rows(config, summary)),
    ]
    report = _write_text(out_dir / REPORT_FILE, "\n".join(lines) + "\n")
    return [*drawn, report]


def _draw_figures(
    out_dir: pathlib.Path, summary: dict[str, Any]
) -> tuple[list[pathlib.Path], list[str]]:
    """The report's figures; the accuracy-cost figure needs labels.

    Returns:
        (files written, notes on the figures left out).
    """
    from optscale_jax.figures.plots import plot_figure

    drawn, notes = [], []
    for kind in REPORT_FIGURES:
        if kind == "pareto" and "labels_note" in summary:
            notes.append("no pareto figure: the log has no labels, so no accuracy")
            continue
        drawn += plot_figure(kind, out_dir, out_dir, FIGURE_FORMATS)
    return drawn, notes


def _figure_lines(drawn: list[pathlib.Path], notes: list[str], figures: bool) -> list[str]:
    """The Figures section: each PNG shown, each PDF linked; notes on what is left out."""
    if not figures:
        return []
    names = {path.name for path in drawn}
    lines = ["## Figures", ""]
    for kind, caption in REPORT_FIGURES.items():
        if f"{kind}.png" in names:
            lines += [f"![{kind}: {caption}]({kind}.png)", "", f"[{kind}.pdf]({kind}.pdf)", ""]
    return lines + [f"*{note}*\n" for note in notes]


def settings_rows(config: ReplayConfig, summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """The replay's settings as (name, value): the log, the methods run and skipped, then
    every field of `config` (resolved defaults say so; LTT's fields only with select="ltt",
    the budget's only with a budget method, the score laws only when one other than tn is).
    """
    rows: list[tuple[str, Any]] = [
        ("log", summary["log"]),
        ("methods", tuple(summary["methods"])),
    ]
    rows += [(f"skipped {m}", why) for m, why in summary["skipped_methods"].items()]
    resolved = {
        "max_n": f"all ({summary['max_n']})",
        "fixed_n": f"1..{summary['max_n']}",
        "prior": f"default ({summary['prior']})" if summary["prior"] else None,
        "wave": "one per question",
    }
    for field in dataclasses.fields(config):
        name, value = field.name, getattr(config, field.name)
        if (
            name == "methods"
            or (name in _LTT_FIELDS and config.select != "ltt")
            or (name in _BUDGET_FIELDS and "budget" not in summary)
            or (name == "law" and not config.law_column)
        ):
            continue
        rows.append((name, resolved.get(name) if value is None else value))
    if "labels_note" in summary:
        rows.append(("labels", summary["labels_note"]))
    return rows


def _cell(value: Any) -> str:
    """A value as the text of a markdown table cell."""
    if value is None:
        text = "-"
    elif isinstance(value, tuple | list):
        text = " ".join(_cell(v) for v in value)
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return text.replace("|", "\\|")


def _write_text(path: pathlib.Path, text: str) -> pathlib.Path:
    from optscale_jax.io import atomic_write_text

    return atomic_write_text(path, lambda handle: handle.write(text))
