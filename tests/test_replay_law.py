"""Replay with score laws (`ReplayConfig.law`, `optscale replay --law`): families, the law
column, stops at each law's N*, auto's least-AIC choice, and bad input."""

import csv
import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from test_replay import FAST, K, Q, fast_flags, small_log

from optscale_jax import laws, replay
from optscale_jax.experiments import cli
from optscale_jax.logs import write_jsonl
from optscale_jax.replay import law_fits
from optscale_jax.replay.methods import METHOD_TABLE, MethodInputs

# test_replay's log and grids: the compiled shapes of its replays serve these ones too.
GRIDS = FAST | dict(methods=("bon", "optscale0", "optscalet"), split="none", bootstrap=20)


def law_log(scores=True):
    """test_replay's log with every score above 0.8 set to exactly 1 (an atom), and
    question 0 all 1s: only the atom laws give such scores mass."""
    log = small_log(3)
    values = np.where(log.mask & (log.scores > 0.8), 1.0, log.scores)
    values[0] = np.where(log.mask[0], 1.0, 0.0)
    return dataclasses.replace(log, scores=values if scores else None)


def _config(**fields):
    return replay.ReplayConfig(**(GRIDS | fields))


def test_tn_is_the_replay_without_a_law():
    log = law_log()
    default = replay.evaluate(log, _config(), progress=False)
    with_tn = replay.evaluate(log, _config(law=("tn",)), progress=False)
    assert with_tn.rows == default.rows and with_tn.summary == default.summary
    assert with_tn.columns == default.columns and "law" not in default.columns
    # Named with another law, tn's family has the same figures as the default optscale0.
    both = replay.evaluate(log, _config(law=("tn", "beta")), progress=False)
    plain = [r for r in default.rows if r["method"] == "optscale0"]
    tagged = [r for r in both.rows if r["method"] == "optscale0[tn]"]
    assert [r["law"] for r in tagged] == ["tn"] * len(plain)
    assert [{**r, "method": "optscale0", "law": None} for r in tagged] == [
        {**r, "law": None} for r in plain
    ]
    # OptScalet's prior is a truncated-normal prior: it runs with tn, not with beta.
    assert "optscalet[tn]" in both.summary["methods"]
    assert "no prior for the beta law" in both.summary["skipped_methods"]["optscalet[beta]"]


def test_law_column_and_families_on_the_command_line(tmp_path, capsys):
    path = write_jsonl(law_log(), tmp_path / "log.jsonl")
    argv = ["replay", str(path), "--law", "beta-atoms", "auto", *fast_flags()]
    argv += ["--methods", "bon", "optscale0", "optscale0-peek", "--split", "none", "--no-figures"]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:3] == ["method", "law", "split"]
    by_method = {row["method"]: row["law"] for row in rows}
    assert by_method == {
        "bon": "",
        "optscale0[beta-atoms]": "beta-atoms",
        "optscale0[auto]": "auto",
        "optscale0-peek[beta-atoms]": "beta-atoms",
        "optscale0-peek[auto]": "auto",
    }
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["law"] == ["beta-atoms", "auto"]
    assert set(summary["methods"]) == set(by_method)
    # Counts of the fitted prefixes (so a streamed replay adds them up), as the statuses.
    chosen = summary["diagnostics"]["optscale0[auto]_law_chosen"]
    statuses = summary["diagnostics"]["optscale0[auto]_fit_status"]
    assert set(chosen) == set(laws.PARAMETRIC_LAWS)
    assert sum(chosen.values()) == sum(statuses.values()) > 0
    assert "optscale0[auto]" in capsys.readouterr().out


def _run(law):
    """OptScale0 with `law` on the test log's first two orders: (decisions, inputs)."""
    replayed = replay.permute(law_log(), FAST["permutations"], seed=3)
    inputs = MethodInputs(
        replayed, jnp.asarray(replayed.mask), K, None, lambda steps: None, {}, law=law
    )
    grid = {"s_min": (0.8,), "alpha": (0.9,), "m": (1, 3)}
    return METHOD_TABLE["optscale0"].run(inputs, grid), inputs


def _prefixes(replayed):
    """Every prefix of the first order's `[Q, K]` scores as its own batch entry:
    (`[K, Q, K]` scores, mask)."""
    prefix = np.arange(K)[None, None, :] < np.arange(1, K + 1)[:, None, None]
    return np.broadcast_to(replayed.scores[0], (K, Q, K)), prefix & replayed.mask[0][None]


def _first_stops(n_star, m, replayed):
    """`[Q]`: the first n (1-based) with n >= max(m, N*_n) (n_star `[K, Q]`), else the
    question's sample count."""
    n = np.arange(1, K + 1)[:, None]
    available = replayed.mask[0].sum(-1)
    reached = (n >= np.maximum(m, n_star)) & (n <= available)
    return np.where(reached.any(0), reached.argmax(0) + 1, available)


@pytest.mark.parametrize("law", ["tn", "beta", "tn-atoms", "beta-atoms", "empirical"])
def test_stops_are_each_laws_nstar_on_the_prefix(law):
    decisions, inputs = _run(law)
    scores, mask = _prefixes(inputs.replayed)
    params, _ = laws.fit(law, scores, mask)  # every prefix fitted on its own
    n_star = np.asarray(laws.optimal_n(law, params, 0.8, 0.9, max_n=K))
    for cell, m in enumerate((1, 3)):
        np.testing.assert_array_equal(
            decisions.samples[cell, 0], _first_stops(n_star, m, inputs.replayed)
        )


def test_auto_takes_the_least_aic_law_at_every_prefix():
    decisions, inputs = _run(law_fits.AUTO)
    choice = np.asarray(inputs.shared["law_fits_auto"].choice)[0].T  # [K, Q]
    scores, mask = _prefixes(inputs.replayed)
    fits = laws.fit_all(scores, mask)
    aic = np.stack([np.asarray(fits[name].aic) for name in laws.PARAMETRIC_LAWS])
    best = aic.min(0)
    picked = np.take_along_axis(aic, choice[None], 0)[0]
    drawn = mask.sum(-1) == np.arange(1, K + 1)[:, None]  # [K, Q]: n <= the question's count
    np.testing.assert_array_less(picked[drawn], (best + 1e-6 * (1 + np.abs(best)))[drawn])
    # A prefix with an exact 1 goes to an atom law: the continuous laws give it no mass.
    has_one = (np.cumsum((scores[0] == 1.0) & mask[-1], -1).T > 0) & drawn
    atom_laws = [laws.PARAMETRIC_LAWS.index(name) for name in ("tn-atoms", "beta-atoms")]
    assert has_one.any() and np.isin(choice[has_one], atom_laws).all()
    n_star = np.stack(
        [
            np.asarray(laws.optimal_n(name, fits[name].params, 0.8, 0.9, max_n=K))
            for name in laws.PARAMETRIC_LAWS
        ]
    )
    n_star = np.take_along_axis(n_star, choice[None], 0)[0]
    np.testing.assert_array_equal(decisions.samples[0, 0], _first_stops(n_star, 1, inputs.replayed))


def test_bad_laws_name_the_argument(tmp_path, capsys):
    for law, message in (
        (("nope",), "law: unknown law 'nope'"),
        ((), "law must name at least one law"),
        (("beta", "beta"), "law: beta is given twice"),
    ):
        with pytest.raises(ValueError, match=message):
            _config(law=law)
    log = law_log()
    with pytest.raises(ValueError, match="law: no prior for the beta law"):
        replay.evaluate(
            log, _config(law=("beta",), methods=("bon", "optscalet")), explicit_methods=True
        )
    votes = dataclasses.replace(law_log(scores=False), prior_mu=None, prior_sigma=None)
    with pytest.raises(ValueError, match="law: the score laws .* the log has none"):
        replay.evaluate(votes, _config(law=("beta",), methods=("sc",)), progress=False)
    path = write_jsonl(log, tmp_path / "log.jsonl")
    assert cli.main(["replay", str(path), "--law", "gauss", "--out", str(tmp_path)]) == 2
    assert "error: --law: unknown law 'gauss'" in capsys.readouterr().err


def test_a_law_familys_full_budget_comes_first_in_the_ltt_order():
    cheap = replay.Setting("optscale0", s_min=0.6, alpha=0.5, m=1, law="beta")
    safe = replay.Setting("optscale0", s_min=0.8, alpha=0.9, m=3, law="beta")
    full = replay.Setting("optscale0", n=K, law="beta")
    assert list(replay.ltt_order([cheap, full, safe], K)) == [1, 2, 0]
    assert full.family == "optscale0[beta]" and full.params()["law"] == "beta"
