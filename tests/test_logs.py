"""Log schema, readers and writers (`optscale_jax.logs`) on fixtures and on malformed input."""

import json
import math
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optscale_jax import datasets
from optscale_jax.answers import extract_answer, normalise_choice
from optscale_jax.io import read_jsonl, write_jsonl_records
from optscale_jax.logs import Log, detect_format, read_log, write_jsonl, write_parquet

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
GPQA = FIXTURES / "gpqa-diamond-genrm" / "gpqa_diamond5.jsonl"
SAL_N4 = FIXTURES / "search-and-learn" / "best_of_n_n4_4q.jsonl"
SAL_N256 = FIXTURES / "search-and-learn" / "best_of_n_n256_cut_2q8.jsonl"
POOL = FIXTURES / "optscale-pool" / "pool3.json"
PROMPTS = FIXTURES / "optscale-pool" / "prompts3.json"


def _lines(path):
    return read_jsonl(path)


def _write_lines(path, records):
    return write_jsonl_records(records, path)


def _random_log(seed, num_questions=7, max_k=6):
    """A ragged log with every optional field, some None answers / gold / priors."""
    rng = np.random.default_rng(seed)
    records = []
    for q in range(num_questions):
        k = int(rng.integers(1, max_k + 1))
        answers = [None if rng.random() < 0.2 else str(rng.integers(0, 3)) for _ in range(k)]
        record = {
            "id": f"q{q}",
            "scores": rng.random(k).tolist(),
            "tokens": rng.integers(1, 500, size=k).tolist(),
            "answers": answers,
            "correct": [a == "1" for a in answers],
            "gold": None if q % 3 == 0 else "1",
        }
        if q % 2:
            record["prior"] = {"mu": float(rng.normal()), "sigma": float(rng.uniform(0.05, 1))}
        records.append(record)
    return Log.from_records(records, source=f"random{seed}")


# --------------------------------------------------------------------------- gpqa-genrm


def test_gpqa_fixture_scores_answers_correct():
    log = read_log(GPQA)
    raw = _lines(GPQA)
    assert log.ids == [str(r["problem_idx"]) for r in raw] == ["6", "11", "16", "21", "27"]
    assert log.mask.shape == (5, 64) and log.mask.all()
    assert log.tokens is None and log.prior_mu is None
    assert log.gold == [r["gt"] for r in raw]
    for q, record in enumerate(raw):
        verdicts = np.array(
            [[np.nan if v is None else v for v in row] for row in record["verifications"]]
        )
        np.testing.assert_allclose(log.scores[q], np.nanmean(verdicts, axis=1), rtol=0, atol=1e-15)
        letters = [normalise_choice(a) for a in record["answers"][:64]]
        assert log.answer_text[q] == letters
        np.testing.assert_array_equal(log.correct[q], [a == record["gt"] for a in letters])
        codes = log.answers[q]
        for i in range(64):
            for j in range(64):
                same = letters[i] is not None and letters[i] == letters[j]
                assert (codes[i] == codes[j] and codes[i] >= 0) == same
    # "B)185" (line 1 of the fixture) is no answer, "FinalAnswer:ThefinalanswerisD" is D.
    b185 = raw[0]["answers"].index("B)185")
    assert log.answers[0, b185] == -1 and log.answer_text[0][b185] is None
    final = raw[3]["answers"].index("FinalAnswer:ThefinalanswerisD")
    assert log.answer_text[3][final] == "D"


def test_gpqa_shipped_log():
    log = read_log(datasets.data_path(datasets.GPQA_GENRM))
    assert log.mask.shape == (64, 64) and log.mask.all()
    assert np.all((log.scores >= 0) & (log.scores <= 1))
    assert len(set(log.ids)) == 64
    assert set(log.gold) == {"A", "B", "C", "D"}
    # Most questions have several answers with a perfect score (README of the data).
    assert np.sum((log.scores == 1.0).sum(axis=1) >= 2) > 32


# --------------------------------------------------------------------------- search-and-learn


@pytest.mark.parametrize("how", ["last", "min", "mean", "prod"])
def test_search_and_learn_step_aggregation(how):
    log = read_log(SAL_N4, step_aggregation=how)
    raw = _lines(SAL_N4)
    reduce = {"last": lambda s: s[-1], "min": min, "mean": np.mean, "prod": np.prod}[how]
    assert log.ids == [r["unique_id"] for r in raw]
    assert log.gold == [r["answer"] for r in raw]
    for q, record in enumerate(raw):
        expected = [reduce(steps) for steps in record["scores"]]
        np.testing.assert_allclose(log.scores[q], expected, rtol=1e-14)
        np.testing.assert_array_equal(log.tokens[q], record["completion_tokens"])
        assert log.answer_text[q] == [extract_answer(c, "boxed") for c in record["completions"]]
    if how == "last":
        np.testing.assert_array_equal(log.scores, [r["agg_scores"] for r in raw])


def test_search_and_learn_correctness_and_no_tokens():
    log = read_log(SAL_N256, step_aggregation="last")
    raw = _lines(SAL_N256)
    assert log.mask.shape == (2, 8) and log.tokens is None
    np.testing.assert_array_equal(log.scores, [r["agg_scores"] for r in raw])
    # Question 1: gold "\left( 3, \frac{\pi}{2} \right)"; "(3,\frac{\pi}{2})" is right, "(3,\pi)" wrong.
    assert log.gold[0] == r"\left( 3, \frac{\pi}{2} \right)"
    for text, right in zip(log.answer_text[0], log.correct[0], strict=True):
        if text == r"(3,\frac{\pi}{2})":
            assert right
        if text in (r"(3,\pi)", None):
            assert not right


def test_search_and_learn_needs_explicit_aggregation(tmp_path):
    with pytest.raises(ValueError, match="step_aggregation"):
        read_log(SAL_N4)
    with pytest.raises(ValueError, match="step_aggregation"):
        read_log(SAL_N4, step_aggregation="max")


# --------------------------------------------------------------------------- optscale-pool


def test_optscale_pool_with_prompts():
    log = read_log(POOL, prompts=PROMPTS)
    assert log.ids == ["1", "2", "3"]
    np.testing.assert_array_equal(
        log.scores, [[0.91, 0.42, 0.1, 0.88], [0.97, 0.75, 0.2, 0.0], [0.8, 0.6, 0.3, 0.25]]
    )
    np.testing.assert_array_equal(log.tokens, [[14, 9, 4, 6], [11, 8, 5, 0], [12, 3, 3, 3]])
    assert log.answer_text == [
        ["6", "5", None, "6.0"],
        [r"\frac{1}{2}", "0.5", "1/3", None],
        ["1000", "1000", "100", "999"],
    ]
    np.testing.assert_array_equal(log.answers, [[0, 1, -1, 2], [0, 1, 2, -1], [0, 0, 1, 2]])
    # GSM8K-style gold: the part after "####", thousands separator dropped.
    assert log.gold == ["6", r"\frac{1}{2}", "1000"]
    np.testing.assert_array_equal(
        log.correct,
        [[True, False, False, True], [True, True, False, False], [True, True, False, False]],
    )


def test_optscale_pool_options(tmp_path):
    by_id = read_log(POOL, prompts=PROMPTS, prompt_match="id", score_key="last_scores")
    np.testing.assert_array_equal(by_id.scores[0], [0.95, 0.30, 0.05, 0.90])
    assert by_id.gold == ["6", r"\frac{1}{2}", "1000"]
    no_gold = read_log(POOL)
    assert no_gold.gold is None and no_gold.correct is None and no_gold.answers is not None
    # Prompts as JSONL, in reverse order: by id still pairs them right, by position does not.
    prompts = json.loads(PROMPTS.read_text())[::-1]
    jsonl = _write_lines(tmp_path / "prompts.jsonl", prompts)
    assert read_log(POOL, prompts=jsonl, prompt_match="id").gold == by_id.gold
    assert read_log(POOL, prompts=jsonl).gold == by_id.gold[::-1]
    short = _write_lines(tmp_path / "short.jsonl", prompts[:2])
    with pytest.raises(ValueError, match=r"short.jsonl: 2 prompts but 3 entries"):
        read_log(POOL, prompts=short)
    with pytest.raises(
        ValueError, match=r"pool3.json:2: entry 1: field 'id': no prompt with id '1'"
    ):
        read_log(POOL, prompts=short, prompt_match="id")
    with pytest.raises(FileNotFoundError):
        read_log(POOL, prompts=tmp_path / "missing.json")
    with pytest.raises(ValueError, match="prompt_match"):
        read_log(POOL, prompts=PROMPTS, prompt_match="order")
    with pytest.raises(ValueError, match="score_key"):
        read_log(POOL, score_key="agg_scores")


def _pool_entry(**score):
    base = {"completions": [["\\boxed{1}", "\\boxed{2}"]], "scores": [[0.5, 0.25]]}
    return {"id": 1, "score": base | score}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"id": 1}, r"pool.json:1: expected a JSON array"),
        (
            [_pool_entry(scores=[0.5, 0.25])],
            r"pool.json:2: entry 1: field 'score.scores': expected \[\[...\]\]",
        ),
        (
            [_pool_entry(scores=[[0.5], [0.25]])],
            r"entry 1: field 'score.scores': expected \[\[...\]\] .*2 items",
        ),
        (
            [_pool_entry(scores=[[0.5, 1.5]])],
            r"entry 1: field 'score.scores\[0\]\[1\]': score 1.5 outside",
        ),
        (
            [_pool_entry(scores=[[0.5]])],
            r"entry 1: field 'tokens|scores|answers'|has 2 entries but 'scores' has 1",
        ),
        (
            [_pool_entry(completion_tokens=[[3]])],
            r"entry 1: field 'score.completion_tokens\[0\]': has 1 entries",
        ),
        ([{"id": 1}], r"entry 1: field 'score': missing"),
        ([{"id": True, "score": {}}], r"entry 1: field 'id': expected an integer or a string"),
        (
            [_pool_entry(), {"id": 2, "score": {"scores": [[0.1]]}}],
            r"pool.json:\d+: entry 2: field 'score.completions': missing",
        ),
        (
            [_pool_entry(completions=[[1, 2]])],
            r"field 'score.completions\[0\]\[0\]': expected a string",
        ),
    ],
)
def test_optscale_pool_malformed(tmp_path, entries, message):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(entries, indent=1))
    with pytest.raises(ValueError, match=message):
        read_log(path, format="optscale-pool")


def test_optscale_pool_bad_json_names_line(tmp_path):
    path = tmp_path / "pool.json"
    text = json.dumps([_pool_entry(), _pool_entry()], indent=1)
    lines = text.splitlines()
    lines[30] = lines[30] + " oops"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"pool.json:31: not JSON"):
        read_log(path, format="optscale-pool")


# --------------------------------------------------------------------------- jsonl


def test_jsonl_per_question_ragged(tmp_path):
    path = _write_lines(
        tmp_path / "log.jsonl",
        [
            {"id": "a", "scores": [0.5, 1, 0.25], "answers": ["x", None, " x"], "extra": 1},
            {"id": "b", "scores": [0.0], "answers": ["y"]},
        ],
    )
    log = read_log(path)
    np.testing.assert_array_equal(log.mask, [[True, True, True], [True, False, False]])
    np.testing.assert_array_equal(log.scores, [[0.5, 1.0, 0.25], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(log.answers, [[0, -1, 0], [0, -1, -1]])
    assert log.answer_text == [["x", None, "x"], ["y"]]  # normalised
    assert log.gold is None and log.tokens is None and log.correct is None
    assert log.source == str(path)


def test_jsonl_correct_from_gold(tmp_path):
    path = _write_lines(
        tmp_path / "log.jsonl",
        [
            {"id": "a", "answers": ["1/2", "0.5", "2", None], "gold": "\\frac{1}{2}"},
            {"id": "b", "answers": ["7"], "gold": "7"},
        ],
    )
    log = read_log(path)
    assert log.scores is None
    np.testing.assert_array_equal(
        log.correct, [[True, True, False, False], [True, False, False, False]]
    )
    given = _write_lines(
        tmp_path / "given.jsonl",
        [{"id": "a", "answers": ["1/2"], "gold": "0.5", "correct": [False]}],
    )
    assert not read_log(given).correct[0, 0]  # a given `correct` wins over recomputation


def test_jsonl_per_sample_grouped_and_sorted(tmp_path):
    samples = [
        {"id": "q2", "sample_index": 1, "score": 0.3, "tokens": 7, "answer": "4", "text": "..."},
        {"id": "q1", "sample_index": 0, "score": 0.9, "tokens": 5, "answer": "3"},
        {"id": "q2", "sample_index": 0, "score": 0.6, "tokens": 2, "answer": None},
        {"id": "q1", "sample_index": 2, "score": 0.1, "tokens": 1, "answer": "3"},
        {"id": "q1", "sample_index": 1, "score": 0.5, "tokens": 3, "answer": "2"},
    ]
    log = read_log(_write_lines(tmp_path / "live.jsonl", samples))
    assert log.ids == ["q2", "q1"]
    np.testing.assert_array_equal(log.scores, [[0.6, 0.3, 0.0], [0.9, 0.5, 0.1]])
    np.testing.assert_array_equal(log.tokens, [[2, 7, 0], [5, 3, 1]])
    assert log.answer_text == [[None, "4"], ["3", "2", "3"]]
    np.testing.assert_array_equal(log.answers, [[-1, 0, -1], [0, 1, 0]])
    with_gold = [s | {"gold": "3", "correct": s["answer"] == "3"} for s in samples]
    log = read_log(_write_lines(tmp_path / "gold.jsonl", with_gold))
    assert log.gold == ["3", "3"]
    np.testing.assert_array_equal(log.correct, [[False, False, False], [True, False, True]])


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        (
            [
                {"id": "a", "sample_index": 0, "score": 0.5},
                {"id": "a", "sample_index": 0, "score": 0.4},
            ],
            r"live.jsonl:2: field 'sample_index': duplicate sample 0 of id 'a' \(first on line 1\)",
        ),
        (
            [
                {"id": "a", "sample_index": 0, "score": 0.5},
                {"id": "a", "sample_index": 2, "score": 0.4},
            ],
            r"live.jsonl:2: field 'sample_index': id 'a' has sample 2 but no sample 1",
        ),
        (
            [{"id": "a", "sample_index": 1, "score": 0.5}],
            r"live.jsonl:1: field 'sample_index': id 'a' has sample 1 but no sample 0",
        ),
        (
            [
                {"id": "a", "sample_index": 0, "score": 0.5},
                {"id": "a", "sample_index": -1, "score": 0.4},
            ],
            r"live.jsonl:2: field 'sample_index': expected an integer >= 0",
        ),
        (
            [{"id": "a", "sample_index": 0, "score": 0.5}, {"id": "a", "score": 0.4}],
            r"live.jsonl:2: field 'sample_index': missing",
        ),
        (
            [
                {"id": "a", "sample_index": 0, "score": 0.5, "tokens": 3},
                {"id": "a", "sample_index": 1, "score": 0.4},
            ],
            r"live.jsonl:2: field 'tokens': missing here but present on line 1",
        ),
        (
            [{"id": "a", "sample_index": 0, "score": 1.5}],
            r"live.jsonl:1: field 'score': score 1.5 outside \[0, 1\]",
        ),
        (
            [
                {"id": "a", "sample_index": 0, "score": 0.5, "gold": "1"},
                {"id": "a", "sample_index": 1, "score": 0.4, "gold": "2"},
            ],
            r"live.jsonl:2: field 'gold': differs from line 1",
        ),
        (
            [{"id": "a", "sample_index": 0, "score": 0.5, "correct": 1}],
            r"live.jsonl:1: field 'correct': expected true or false",
        ),
        (
            [{"id": "a", "sample_index": 0, "tokens": 3}],
            r"live.jsonl:1: needs a 'score' or an 'answer'",
        ),
    ],
)
def test_jsonl_per_sample_malformed(tmp_path, samples, message):
    with pytest.raises(ValueError, match=message):
        read_log(_write_lines(tmp_path / "live.jsonl", samples))


GOOD = {
    "id": "a",
    "scores": [0.5, 0.25],
    "tokens": [3, 4],
    "answers": ["1", None],
    "correct": [True, False],
}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "a", "scores": [0.5]', json.dumps(GOOD)], r"log.jsonl:1: not JSON"),
        ([json.dumps(GOOD), "", "[1, 2]"], r"log.jsonl:3: expected a JSON object"),
        ([json.dumps({"scores": [0.5]})], r"log.jsonl:1: field 'id': missing"),
        ([json.dumps({"id": 3, "scores": [0.5]})], r"log.jsonl:1: field 'id': expected a string"),
        ([json.dumps({"id": "a"})], r"log.jsonl:1: needs a 'scores' or an 'answers' field"),
        (
            [json.dumps(GOOD), json.dumps(GOOD | {"scores": [0.5, 1.01]})],
            r"log.jsonl:2: field 'scores\[1\]': score 1.01 outside \[0, 1\]",
        ),
        (
            [json.dumps(GOOD | {"scores": [-0.0001, 0.5]})],
            r"log.jsonl:1: field 'scores\[0\]': score -0.0001 outside",
        ),
        (
            ['{"id": "a", "scores": [NaN, 0.5]}'],
            r"log.jsonl:1: field 'scores\[0\]': score nan outside",
        ),
        (
            [json.dumps(GOOD | {"scores": ["0.5", 0.5]})],
            r"log.jsonl:1: field 'scores\[0\]': expected a number",
        ),
        (
            [json.dumps(GOOD | {"scores": [True, 0.5]})],
            r"log.jsonl:1: field 'scores\[0\]': expected a number",
        ),
        ([json.dumps(GOOD | {"scores": 0.5})], r"log.jsonl:1: field 'scores': expected a list"),
        (
            [json.dumps(GOOD | {"tokens": [3]})],
            r"log.jsonl:1: field 'tokens': has 1 entries but 'scores' has 2",
        ),
        (
            [json.dumps(GOOD | {"answers": ["1"]})],
            r"log.jsonl:1: field 'answers': has 1 entries but 'scores' has 2",
        ),
        (
            [json.dumps(GOOD | {"correct": [True, False, True]})],
            r"log.jsonl:1: field 'correct': has 3 entries",
        ),
        (
            [json.dumps(GOOD | {"tokens": [3, -1]})],
            r"log.jsonl:1: field 'tokens\[1\]': token count -1",
        ),
        (
            [json.dumps(GOOD | {"tokens": [3, "4"]})],
            r"log.jsonl:1: field 'tokens\[1\]': expected a token count",
        ),
        (
            [json.dumps(GOOD | {"answers": [1, None]})],
            r"log.jsonl:1: field 'answers\[0\]': expected a string or null",
        ),
        (
            [json.dumps(GOOD | {"correct": [1, 0]})],
            r"log.jsonl:1: field 'correct\[0\]': expected true or false",
        ),
        ([json.dumps(GOOD | {"gold": 7})], r"log.jsonl:1: field 'gold': expected a string or null"),
        ([json.dumps(GOOD | {"prior": {"mu": 0.5}})], r"log.jsonl:1: field 'prior.sigma': missing"),
        (
            [json.dumps(GOOD | {"prior": {"mu": 0.5, "sigma": 0}})],
            r"log.jsonl:1: field 'prior.sigma': must be > 0",
        ),
        (
            [json.dumps(GOOD | {"prior": {"mu": "x", "sigma": 1}})],
            r"log.jsonl:1: field 'prior.mu': expected a finite number",
        ),
        ([json.dumps(GOOD | {"prior": [0.5, 0.1]})], r"log.jsonl:1: field 'prior': expected"),
        (
            [json.dumps(GOOD), json.dumps(GOOD)],
            r"log.jsonl:2: field 'id': duplicate id 'a' \(first on .*log.jsonl:1\)",
        ),
        (
            [
                json.dumps(GOOD),
                json.dumps({k: v for k, v in GOOD.items() if k != "tokens"} | {"id": "b"}),
            ],
            r"log.jsonl:2: field 'tokens': missing here but present on .*log.jsonl:1",
        ),
        (
            [json.dumps(GOOD | {"gold": "1"}), json.dumps(GOOD | {"id": "b", "correct": None})],
            r"log.jsonl:2: field 'correct': missing here",
        ),
        (
            [
                json.dumps({"id": "a", "answers": ["1"], "gold": "1"}),
                json.dumps({"id": "b", "answers": ["1"]}),
            ],
            r"log.jsonl:2: field 'gold': missing here while other questions have one",
        ),
        (
            [json.dumps(GOOD), json.dumps(GOOD | {"id": "b", "sample_index": 0})],
            r"log.jsonl:2: field 'sample_index': a per-sample record",
        ),
        ([""], r"log.jsonl: no records"),
    ],
)
def test_jsonl_malformed(tmp_path, lines, message):
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        read_log(path)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_jsonl_parquet_exact(tmp_path, seed):
    log = _random_log(seed)
    assert log.prior_mu is not None and np.isnan(log.prior_mu).any()
    from_jsonl = read_log(write_jsonl(log, tmp_path / "a.jsonl"))
    from_parquet = read_log(write_parquet(from_jsonl, tmp_path / "a.parquet"))
    back = read_log(write_jsonl(from_parquet, tmp_path / "b.jsonl"))
    for other in (from_jsonl, from_parquet, back):
        assert log.equals(other)
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert not log.equals(log.select([1, 0, 2, 3, 4, 5, 6]))


@pytest.mark.parametrize(
    ("path", "options"),
    [
        (GPQA, {}),
        (SAL_N4, {"step_aggregation": "mean"}),
        (POOL, {"prompts": PROMPTS}),
    ],
)
def test_round_trip_of_real_formats(tmp_path, path, options):
    log = read_log(path, **options)
    assert log.equals(read_log(write_parquet(log, tmp_path / "x.parquet")))
    assert log.equals(read_log(write_jsonl(log, tmp_path / "x.jsonl")))


def test_round_trip_minimal_fields(tmp_path):
    log = Log.from_records([{"id": "a", "answers": ["1", None]}, {"id": "b", "answers": []}])
    assert log.mask.shape == (2, 2) and log.scores is None
    for path in (tmp_path / "m.jsonl", tmp_path / "m.parquet"):
        writer = write_parquet if path.suffix == ".parquet" else write_jsonl
        back = read_log(writer(log, path))
        assert log.equals(back) and back.gold is None and back.prior_mu is None


def _parquet(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"scores": pa.array([[0.5]])}, r"x.parquet: field 'id': missing column"),
        (
            {"id": ["a", "b"], "scores": pa.array([[0.5], [0.2, 1.5]])},
            r"x.parquet: row 2: field 'scores\[1\]': score 1.5 outside",
        ),
        (
            {"id": ["a", "b"], "scores": pa.array([[0.5], [float("nan")]])},
            r"x.parquet: row 2: field 'scores\[0\]': score nan",
        ),
        (
            {"id": ["a", "b"], "scores": pa.array([[0.5], None])},
            r"x.parquet: row 2: needs a 'scores' or an 'answers' field",
        ),
        (
            {"id": ["a"], "scores": pa.array([[0.5, None]])},
            r"x.parquet: row 1: field 'scores\[1\]': expected a number",
        ),
        (
            {"id": ["a"], "scores": pa.array([[0.5]]), "tokens": pa.array([[1.0, 2.0]])},
            r"row 1: field 'tokens': has 2 entries",
        ),
        (
            {"id": ["a"], "scores": pa.array([["0.5"]])},
            r"row 1: field 'scores\[0\]': expected a number",
        ),
        (
            {"id": ["a"], "scores": pa.array([[0.5]]), "prior_mu": [0.5]},
            r"field 'prior_mu'/'prior_sigma'",
        ),
        (
            {
                "id": ["a"],
                "scores": pa.array([[0.5]]),
                "prior_mu": [0.5],
                "prior_sigma": pa.array([None], pa.float64()),
            },
            r"row 1: field 'prior_mu/prior_sigma'",
        ),
        (
            {"id": ["a", "a"], "scores": pa.array([[0.5], [0.5]])},
            r"row 2: field 'id': duplicate id 'a'",
        ),
    ],
)
def test_parquet_malformed(tmp_path, columns, message):
    path = _parquet(tmp_path / "x.parquet", **columns)
    with pytest.raises(ValueError, match=message):
        read_log(path)


def test_parquet_not_a_parquet_file(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_text("not parquet")
    with pytest.raises(ValueError, match="x.parquet: not a readable Parquet file"):
        read_log(path)


# --------------------------------------------------------------------------- gpqa / s&l malformed


def _gpqa_record(**fields):
    base = {
        "problem_idx": 0,
        "gt": "B",
        "answers": ["B", "A.**"],
        "verifications": [[1.0, None], [0.0, 0.5]],
    }
    return base | fields


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            _gpqa_record(verifications=[[1.0, None], [None, None]]),
            r"g.jsonl:1: field 'verifications\[1\]': no non-null verdict",
        ),
        (
            _gpqa_record(verifications=[[1.0, 2.0], [0.0]]),
            r"field 'verifications\[0\]\[1\]': score 2.0 outside",
        ),
        (_gpqa_record(answers=["B"]), r"field 'answers': has 1 entries, fewer than the 2 verified"),
        (_gpqa_record(gt="B.**"), r"field 'gt': expected a letter A-D"),
        (_gpqa_record(problem_idx="0"), r"field 'problem_idx': expected an integer"),
        ({"problem_idx": 0, "gt": "B", "answers": ["B"]}, r"field 'verifications': missing"),
    ],
)
def test_gpqa_malformed(tmp_path, record, message):
    with pytest.raises(ValueError, match=message):
        read_log(_write_lines(tmp_path / "g.jsonl", [record]), format="gpqa-genrm")


def test_gpqa_small_record_values(tmp_path):
    log = read_log(_write_lines(tmp_path / "g.jsonl", [_gpqa_record()]))
    np.testing.assert_array_equal(log.scores, [[1.0, 0.25]])
    assert log.answer_text == [["B", "A"]] and log.correct.tolist() == [[True, False]]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"completions": ["\\boxed{1}"], "scores": [[]], "answer": "1"},
            r"s.jsonl:1: field 'scores\[0\]': no step scores",
        ),
        (
            {"completions": ["\\boxed{1}", "x"], "scores": [[0.5]], "answer": "1"},
            r"field 'scores': has 1 entries but 'completions' has 2",
        ),
        (
            {"completions": ["\\boxed{1}"], "scores": [[0.5, 1.2]], "answer": "1"},
            r"field 'scores\[0\]\[1\]': score 1.2 outside",
        ),
        (
            {
                "completions": ["\\boxed{1}"],
                "scores": [[0.5]],
                "completion_tokens": [1, 2],
                "answer": "1",
            },
            r"field 'completion_tokens': has 2 entries but 'scores' has 1",
        ),
    ],
)
def test_search_and_learn_malformed(tmp_path, record, message):
    path = _write_lines(tmp_path / "s.jsonl", [record])
    with pytest.raises(ValueError, match=message):
        read_log(path, format="search-and-learn", step_aggregation="last")


# --------------------------------------------------------------------------- detection, options


def test_detect_format(tmp_path):
    assert detect_format(GPQA) == "gpqa-genrm"
    assert detect_format(SAL_N4) == "search-and-learn"
    assert detect_format(SAL_N256) == "search-and-learn"
    assert detect_format(POOL) == "optscale-pool"
    assert detect_format(write_parquet(_random_log(0), tmp_path / "r.parquet")) == "parquet"
    assert detect_format(write_jsonl(_random_log(0), tmp_path / "r.jsonl")) == "jsonl"
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "missing.jsonl")


def test_options_that_do_not_apply_and_bad_format(tmp_path):
    with pytest.raises(
        ValueError, match="option step_aggregation= does not apply to format 'gpqa-genrm'"
    ):
        read_log(GPQA, step_aggregation="last")
    with pytest.raises(ValueError, match="option prompts= does not apply"):
        read_log(SAL_N4, prompts=PROMPTS, step_aggregation="last")
    with pytest.raises(ValueError, match="format must be"):
        read_log(GPQA, format="csv")
    with pytest.raises(FileNotFoundError):
        read_log(tmp_path / "missing.jsonl")


# --------------------------------------------------------------------------- Log helpers


def test_select_cost_counts():
    log = _random_log(3)
    picked = log.select([4, 1])
    assert picked.ids == ["q4", "q1"] and picked.max_samples == log.max_samples
    np.testing.assert_array_equal(picked.scores, log.scores[[4, 1]])
    assert picked.answer_text == [log.answer_text[4], log.answer_text[1]]
    assert picked.gold == [log.gold[4], log.gold[1]]
    mask_pick = log.select(np.arange(log.num_questions) % 2 == 0)
    assert mask_pick.ids == ["q0", "q2", "q4", "q6"]
    np.testing.assert_array_equal(log.counts, log.mask.sum(axis=1))
    cost, unit = log.cost()
    assert unit == "tokens" and cost is log.tokens
    cost, unit = log.cost("samples")
    assert unit == "samples" and np.array_equal(cost, log.mask.astype(float))
    voting = Log.from_records([{"id": "a", "answers": ["1"]}])
    assert voting.cost()[1] == "samples"
    with pytest.raises(ValueError, match="no token counts"):
        voting.cost("tokens")
    with pytest.raises(ValueError, match="out of range"):
        log.select([log.num_questions])


def test_log_constructor_checks():
    mask = np.array([[True, True], [True, False]])
    scores = np.array([[0.5, 0.25], [1.0, 0.0]])
    log = Log(ids=["a", "b"], mask=mask, scores=scores.astype(np.float32))
    assert log.scores.dtype == np.float64  # float32 input is widened, not rejected
    with pytest.raises(ValueError, match="prefix"):
        Log(ids=["a", "b"], mask=np.array([[False, True], [True, False]]))
    with pytest.raises(ValueError, match=r"scores must lie in \[0, 1\]"):
        Log(ids=["a", "b"], mask=mask, scores=np.array([[0.5, math.nan], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="scores must be 0 where mask is False"):
        Log(ids=["a", "b"], mask=mask, scores=np.array([[0.5, 0.2], [1.0, 0.3]]))
    with pytest.raises(ValueError, match="ids must be unique"):
        Log(ids=["a", "a"], mask=mask)
    with pytest.raises(ValueError, match="answers must be codes"):
        Log(ids=["a", "b"], mask=mask, answers=np.array([[0, 1], [0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        Log(ids=["a", "b"], mask=mask, correct=np.zeros((2, 3), bool))
