"""`optscale replay`'s report.md: the terminal table, the figures and the settings."""

import re

from test_replay import fast_flags, small_log

from optscale_jax.experiments import cli
from optscale_jax.logs import write_jsonl

FIGURE_FILES = ("pareto.png", "pareto.pdf", "samples.png", "samples.pdf")


def replay(tmp_path, capsys, *flags):
    """Runs `optscale replay` on a small log; returns (output directory, what it printed)."""
    log_path = tmp_path / "log.jsonl"
    write_jsonl(small_log(2), log_path)
    out = tmp_path / "out"
    methods = ["--methods", "bon", "sc", "optscale0"]
    assert cli.main(["replay", str(log_path), "--out", str(out), *fast_flags(), *methods,
                     *flags]) == 0  # fmt: skip
    return out, capsys.readouterr().out


def test_report_shows_the_table_the_figures_and_the_settings(tmp_path, capsys):
    out, printed = replay(tmp_path, capsys)
    for name in FIGURE_FILES:
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert f"```text\n{printed}```" in report  # the terminal's text, as it was printed
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert {"pareto.png", "samples.png", "pareto.pdf", "samples.pdf"} <= set(links)
    assert all((out / link).is_file() for link in links)
    for row in ("| log | ", "| methods | bon sc optscale0 |", "| s_min | 0.6 0.8 |",
                "| alpha | 0.5 0.9 |", "| split | dev-test |", "| permutations | 4 |",
                "| seed | 0 |", "| protocol | heldout |", "| select | accuracy |",
                "| fixed_n | 1..10 |"):  # fmt: skip
        assert row in report, row
    assert "| epsilon |" not in report  # LTT's settings only with --select ltt


def test_no_figures_writes_the_report_alone(tmp_path, capsys):
    out, printed = replay(tmp_path, capsys, "--no-figures")
    assert not any((out / name).exists() for name in FIGURE_FILES)
    report = (out / "report.md").read_text()
    assert printed in report and "](" not in report


def test_ltt_report_lists_risk_epsilon_and_delta(tmp_path, capsys):
    flags = ("--select", "ltt", "--risk", "regret", "--epsilon", "0.2", "--delta", "0.05")
    out, printed = replay(tmp_path, capsys, *flags)
    report = (out / "report.md").read_text()
    assert printed in report and "certified on all" in report
    for row in ("| select | ltt |", "| risk | regret |", "| epsilon | 0.2 |",
                "| delta | 0.05 |", "| split | kfold:4 |"):  # fmt: skip
        assert row in report, row
    assert all((out / name).is_file() for name in FIGURE_FILES)
