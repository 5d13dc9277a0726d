"""Fuzzed log readers: corrupted files in every format either read correctly or raise a
ValueError naming the file, the line (or row) and the field; nothing else escapes.

Each property starts from a valid log (hypothesis draws it), corrupts it (a field set to a
value of the wrong type, NaN, an infinity, a score outside [0, 1], a huge number, a field
deleted, a list made ragged, a record duplicated; or the text truncated at a character or a
byte, emptied, given a UTF-8 byte order mark or Windows line ends) and reads it with
`read_log`. A successful read must account for every record of the file (nothing dropped);
corruptions that can never be valid (duplicates, out-of-range scores, empty files) must be
refused. Derandomized, so CI sees the same examples every run.
"""

from __future__ import annotations

import copy
import json
import math
import pathlib
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optscale_jax.experiments.cli import main
from optscale_jax.logs import STEP_AGGREGATIONS, read_log

FUZZ = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

IDS = ("a", "b", "c", "d", "e")
SCORES = st.floats(0.0, 1.0, allow_nan=False)
TOKENS = st.integers(0, 10**6)
# Integer-like answers keep correctness on is_correct's fast path (no math-verify parsing).
ANSWERS = st.sampled_from(["1", "2", "3", None])
GOLD = st.sampled_from(["1", "2"])
# Generated text with multi-byte UTF-8 characters, so a cut byte can split one.
TEXT = "ünïcødé ✓ 数"
PRIOR = st.fixed_dictionaries({"mu": st.floats(-2, 2), "sigma": st.floats(0.05, 2)})
# Values of the wrong type, NaN, infinities, out of range, huge.
BAD_VALUES = st.sampled_from(
    [None, "0.5", "", "B", True, False, [], [0.5], [[0.5]], {}, {"mu": 1}, -1, -0.5, 1.5, 2,
     math.nan, math.inf, -math.inf, 10**30, -(10**30), 1e308, 10**400, 0.25, "9" * 5000]
)  # fmt: skip
OUT_OF_RANGE = st.sampled_from([-1e-9, -1, 1.0000001, 2, 1e308, math.nan, math.inf, -math.inf])

# Errors about the whole file (no line to name).
WHOLE_FILE = re.compile(
    r"(no records|no questions|not a readable Parquet file|field '\w+': missing column"
    r"|field '\w+': \d+ columns of that name|field 'prior_mu'/'prior_sigma')"
)
# Errors about a line's text rather than one of its fields.
LINE_LEVEL = re.compile(r"(not JSON|not UTF-8|expected a JSON object|expected a JSON array)")


# --------------------------------------------------------------------------- valid logs


def _k(elements, k):
    """Lists of exactly k elements."""
    return st.lists(elements, min_size=k, max_size=k)


@st.composite
def _ids(draw):
    return draw(st.lists(st.sampled_from(IDS), min_size=1, max_size=4, unique=True))


@st.composite
def per_question_records(draw):
    has = draw(st.fixed_dictionaries({k: st.booleans() for k in ("tokens", "answers", "gold")}))
    has["correct"] = has["answers"] and draw(st.booleans())
    records = []
    for question_id in draw(_ids()):
        k = draw(st.integers(0, 4))
        record = {"id": question_id, "scores": draw(_k(SCORES, k))}
        if has["tokens"]:
            record["tokens"] = draw(_k(TOKENS, k))
        if has["answers"]:
            record["answers"] = draw(_k(ANSWERS, k))
        if has["correct"]:
            record["correct"] = [a == "1" for a in record["answers"]]
        if has["gold"]:
            record["gold"] = draw(GOLD)
        if draw(st.booleans()):
            record["prior"] = draw(PRIOR)
        records.append(record)
    return records


@st.composite
def per_sample_records(draw):
    gold = draw(st.booleans())
    records = []
    for question_id in draw(_ids()):
        for index in range(draw(st.integers(1, 3))):
            answer = draw(ANSWERS)
            record = {"id": question_id, "sample_index": index, "score": draw(SCORES)}
            record |= {"tokens": draw(TOKENS), "answer": answer, "wave": 0, "text": TEXT}
            if gold:
                record |= {"correct": answer == "1", "gold": "1"}
            records.append(record)
    return draw(st.permutations(records))


@st.composite
def pool_records(draw):
    tokens = draw(st.booleans())
    entries = []
    for position in range(1, draw(st.integers(1, 3)) + 1):
        k = draw(st.integers(1, 3))
        answers = draw(_k(ANSWERS, k))
        score = {
            "completions": [[f"{TEXT} \\boxed{{{a}}}" if a else TEXT for a in answers]],
            "scores": [draw(_k(SCORES, k))],
            "last_scores": [draw(_k(SCORES, k))],
        }
        if tokens:
            score["completion_tokens"] = [draw(_k(TOKENS, k))]
        entries.append({"id": position, "score": score})
    return entries


@st.composite
def search_and_learn_records(draw):
    tokens = draw(st.booleans())
    records = []
    for question_id in draw(_ids()):
        k = draw(st.integers(1, 3))
        steps = st.lists(SCORES, min_size=1, max_size=3)
        record = {
            "unique_id": question_id,
            "completions": [f"{TEXT} \\boxed{{{draw(ANSWERS)}}}" for _ in range(k)],
            "scores": draw(_k(steps, k)),
            "answer": draw(GOLD),
        }
        if tokens:
            record["completion_tokens"] = draw(_k(TOKENS, k))
        records.append(record)
    return records


@st.composite
def gpqa_records(draw):
    records = []
    for index in draw(st.lists(st.integers(0, 99), min_size=1, max_size=3, unique=True)):
        k = draw(st.integers(1, 3))
        verdict = st.one_of(st.none(), SCORES)
        rows = [[draw(SCORES), *draw(st.lists(verdict, max_size=2))] for _ in range(k)]
        answers = draw(st.lists(st.sampled_from(["A", "B.**", "C)", "junk"]), min_size=k))
        records.append({"problem_idx": index, "gt": "B", "answers": answers, "verifications": rows})
    return records


# format name -> (valid records, read_log options, how many samples/questions a read must hold)
JSON_FORMATS = {
    "per-question": (per_question_records(), {"format": "jsonl"}),
    "per-sample": (per_sample_records(), {"format": "jsonl"}),
    "optscale-pool": (pool_records(), {"format": "optscale-pool"}),
    "search-and-learn": (search_and_learn_records(), {"format": "search-and-learn"}),
    "gpqa-genrm": (gpqa_records(), {"format": "gpqa-genrm"}),
}


def _render(name: str, records: list) -> str:
    if name == "optscale-pool":
        return json.dumps(records, indent=1, ensure_ascii=False) + "\n"
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _read(path: pathlib.Path, name: str, options: dict, aggregation: str):
    if name == "search-and-learn":
        options = options | {"step_aggregation": aggregation}
    return read_log(path, **options)


# --------------------------------------------------------------------------- corruptions


def _paths(value, prefix=()):
    """Every place inside a JSON value: tuples of keys / indices."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _parent(value, path):
    for key in path[:-1]:
        value = value[key]
    return value


@st.composite
def field_corruption(draw, records):
    """The records with one place set to a bad value or deleted; (records, kind)."""
    records = copy.deepcopy(records)
    path = draw(st.sampled_from([p for p in _paths(records) if p]))
    parent = _parent(records, path)
    if draw(st.booleans()):
        parent[path[-1]] = draw(BAD_VALUES)
        return records, "replaced"
    del parent[path[-1]]  # a key gone, or a list one element shorter (ragged)
    return records, "deleted"


def _score_places(records):
    """Places holding a score that is read (not `last_scores`), for out-of-range corruption."""
    places = []
    for path in _paths(records):
        keys = [key for key in path if isinstance(key, str)]
        if path and keys and keys[-1] in ("scores", "score", "verifications"):
            if isinstance(_parent(records, path)[path[-1]], float):
                places.append(path)
    return places


def _check_error(error: ValueError, path: pathlib.Path, field_level: bool) -> None:
    """The message names the file, then a line (or row) and a field, or a whole-file fault."""
    message = str(error)
    where = re.match(re.escape(str(path)) + r"(:\d+|: row \d+)?", message)
    assert where is not None, f"message does not start with the file: {message}"
    if where.group(1) is None:
        assert WHOLE_FILE.search(message), f"no line named: {message}"
        return
    if field_level and not LINE_LEVEL.search(message):
        assert "field '" in message or "needs a '" in message, f"no field named: {message}"


def _counts(name: str, text: str) -> tuple[int, int]:
    """(questions, samples) a reader must return for `text`: the oracle, so it parses the
    text itself (json.loads per line) rather than through the reader's own helpers."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if name == "optscale-pool":
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.split("\n") if line.strip()]
    if name == "per-sample":
        return len({r["id"] for r in records}), len(records)
    if name == "optscale-pool":
        return len(records), sum(len(r["score"]["completions"][0]) for r in records)
    if name == "search-and-learn":
        return len(records), sum(len(r["completions"]) for r in records)
    if name == "gpqa-genrm":
        return len(records), sum(len(r["verifications"]) for r in records)
    lists = [r["scores"] if r.get("scores") is not None else r["answers"] for r in records]
    return len(records), sum(map(len, lists))


def _read_or_refuse(path, name, options, aggregation, field_level=True, must_fail=False):
    """Reads `path`: a success must hold every record, a failure must be a proper ValueError."""
    try:
        log = _read(path, name, options, aggregation)
    except ValueError as error:
        _check_error(error, path, field_level)
        return None
    assert not must_fail, f"{name}: read a file that must be refused: {path.read_bytes()[:300]!r}"
    questions, samples = _counts(name, path.read_text(encoding="utf-8-sig"))
    assert log.num_questions == questions and int(log.mask.sum()) == samples, "records dropped"
    return log


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------- JSON formats


@pytest.mark.parametrize("name", list(JSON_FORMATS))
@FUZZ
@given(data=st.data())
def test_corrupted_field(workdir, name, data):
    valid, options = JSON_FORMATS[name]
    records, _ = data.draw(field_corruption(data.draw(valid)))
    path = workdir / f"{name}.jsonl"
    path.write_text(_render(name, records), encoding="utf-8")
    _read_or_refuse(path, name, options, data.draw(st.sampled_from(STEP_AGGREGATIONS)))


@pytest.mark.parametrize("name", list(JSON_FORMATS))
@FUZZ
@given(data=st.data())
def test_scores_out_of_range_duplicates_and_empty_files_are_refused(workdir, name, data):
    valid, options = JSON_FORMATS[name]
    records = copy.deepcopy(data.draw(valid))
    how = data.draw(st.sampled_from(["score", "duplicate", "empty", "blank"]))
    places = _score_places(records)
    if how == "score" and places:
        place = data.draw(st.sampled_from(places))
        _parent(records, place)[place[-1]] = data.draw(OUT_OF_RANGE)
    elif how in ("score", "duplicate"):
        records.append(copy.deepcopy(data.draw(st.sampled_from(records))))
    text = _render(name, records) if how in ("score", "duplicate") else ""
    if how == "blank":
        text = data.draw(st.sampled_from(["\n", "\n\n  \n", "\r\n"]))
    path = workdir / f"{name}.jsonl"
    path.write_text(text, encoding="utf-8", newline="")
    _read_or_refuse(path, name, options, "last", must_fail=True)


@pytest.mark.parametrize("name", list(JSON_FORMATS))
@FUZZ
@given(data=st.data())
def test_truncated_text(workdir, name, data):
    valid, options = JSON_FORMATS[name]
    raw = _render(name, data.draw(valid)).encode("utf-8")
    if data.draw(st.booleans()):  # any byte: may cut a UTF-8 sequence in two
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    else:
        text = raw.decode("utf-8")
        raw = text[: data.draw(st.integers(0, len(text)))].encode("utf-8")
    path = workdir / f"{name}.jsonl"
    path.write_bytes(raw)
    _read_or_refuse(path, name, options, "mean", field_level=False, must_fail=not raw.strip())


@pytest.mark.parametrize("name", list(JSON_FORMATS))
@FUZZ
@given(data=st.data())
def test_bom_windows_line_ends_and_blank_lines_read_the_same(workdir, name, data):
    valid, options = JSON_FORMATS[name]
    text = _render(name, data.draw(valid))
    path = workdir / f"{name}.jsonl"
    path.write_text(text, encoding="utf-8", newline="")
    expected = _read(path, name, options, "min")
    changed = text
    if data.draw(st.booleans()):
        changed = "\ufeff" + changed
    if data.draw(st.booleans()):
        changed = changed.replace("\n", "\r\n")
    if name != "optscale-pool" and data.draw(st.booleans()):
        changed = changed.replace("\n", "\n\n")
    path.write_text(changed, encoding="utf-8", newline="")
    assert _read(path, name, options, "min").equals(expected)


@pytest.mark.parametrize("name", list(JSON_FORMATS))
@FUZZ
@given(data=st.data())
def test_numbers_the_decoder_cannot_hold(workdir, name, data):
    valid, options = JSON_FORMATS[name]
    text = _render(name, data.draw(valid))
    # Numbers that are JSON values (not digits inside a string such as "\\boxed{1}").
    numbers = list(re.finditer(r"(?<=[\[ ])-?\d+(\.\d+)?(e-?\d+)?(?=[,\]}\n])", text))
    if not numbers:
        return
    number = data.draw(st.sampled_from(numbers))
    monster = data.draw(st.sampled_from(["9" * 5000, "[" * 100_000 + "]" * 100_000, "1e99999"]))
    path = workdir / f"{name}.jsonl"
    path.write_text(text[: number.start()] + monster + text[number.end() :], encoding="utf-8")
    _read_or_refuse(path, name, options, "prod")


# --------------------------------------------------------------------------- Parquet


def _parquet_columns(records: list[dict]) -> dict[str, pa.Array]:
    columns = {"id": pa.array([r["id"] for r in records], pa.string())}
    for name, value_type in (("scores", pa.float64()), ("tokens", pa.float64())):
        if name in records[0]:
            columns[name] = pa.array([r[name] for r in records], pa.list_(value_type))
    if "answers" in records[0]:
        columns["answers"] = pa.array([r["answers"] for r in records], pa.list_(pa.string()))
    if "gold" in records[0]:
        columns["gold"] = pa.array([r["gold"] for r in records], pa.string())
    priors = [r.get("prior") or {} for r in records]
    columns["prior_mu"] = pa.array([p.get("mu") for p in priors], pa.float64())
    columns["prior_sigma"] = pa.array([p.get("sigma") for p in priors], pa.float64())
    return columns


BAD_COLUMNS = st.sampled_from(
    [
        lambda n: pa.array([1] * n, pa.int64()),
        lambda n: pa.array([0.5] * n, pa.float64()),
        lambda n: pa.array(["x"] * n, pa.string()),
        lambda n: pa.array([None] * n, pa.null()),
        lambda n: pa.array([["0.5"]] * n, pa.list_(pa.string())),
        lambda n: pa.array([[1.5, 0.5]] * n, pa.list_(pa.float64())),
        lambda n: pa.array([[math.nan]] * n, pa.list_(pa.float64())),
        lambda n: pa.array([[-math.inf]] * n, pa.list_(pa.float64())),
        lambda n: pa.array([[None]] * n, pa.list_(pa.float64())),
        lambda n: pa.array([[[0.5]]] * n, pa.list_(pa.list_(pa.float64()))),
        lambda n: pa.array([{"a": 1}] * n),
        lambda n: pa.array([[True]] * n, pa.list_(pa.bool_())),
        lambda n: pa.array([[2**62]] * n, pa.list_(pa.int64())),
        lambda n: pa.array([-1.0] * n, pa.float64()),
    ]
)


@FUZZ
@given(data=st.data())
def test_corrupted_parquet(workdir, data):
    records = data.draw(per_question_records())
    columns = _parquet_columns(records)
    how = data.draw(st.sampled_from(["column", "value", "ragged", "duplicate", "drop", "twice"]))
    name = data.draw(st.sampled_from(sorted(columns)))
    n = len(records)
    if how == "column":
        columns[name] = data.draw(BAD_COLUMNS)(n)
    elif how == "value" and "scores" in columns:
        rows = [list(r["scores"]) for r in records]
        rows[data.draw(st.integers(0, n - 1))].append(data.draw(OUT_OF_RANGE))
        columns["scores"] = pa.array(rows, pa.list_(pa.float64()))
    elif how == "ragged" and data.draw(st.booleans()):
        rows = [list(r["scores"]) + [0.5] for r in records]
        rows[0].append(0.25)
        columns["scores"] = pa.array(rows, pa.list_(pa.float64()))
    elif how == "duplicate":
        columns = {k: pa.concat_arrays([v, v.slice(0, 1)]) for k, v in columns.items()}
    elif how == "drop":
        del columns[name]
    table = pa.Table.from_arrays(list(columns.values()), names=list(columns))
    if how == "twice":
        table = table.append_column(name, columns[name])
    path = workdir / "fuzz.parquet"
    pq.write_table(table, path)
    try:
        log = read_log(path)
    except ValueError as error:
        _check_error(error, path, field_level=True)
        return
    assert how in ("column", "drop", "ragged"), f"{how} of {name} must be refused"
    assert log.num_questions == table.num_rows


@FUZZ
@given(data=st.data())
def test_damaged_parquet_bytes(workdir, data):
    path = workdir / "bytes.parquet"
    pq.write_table(pa.table(_parquet_columns(data.draw(per_question_records()))), path)
    raw = path.read_bytes()
    how = data.draw(st.sampled_from(["truncate", "flip", "empty", "garbage"]))
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip":
        at = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1 :]
    elif how == "empty":
        raw = b""
    else:
        raw = data.draw(st.binary(max_size=64))
    path.write_bytes(raw)
    try:
        read_log(path)
    except ValueError as error:
        _check_error(error, path, field_level=False)


# --------------------------------------------------------------------------- the command line


def test_replay_of_a_bad_file_is_an_error_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "scores": [0.5]}\n{"id": "b", "scores": [0.5, "x"]}\n')
    assert main(["replay", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("optscale replay: error: ") and "Traceback" not in err
    assert f"{bad}:2: field 'scores[1]'" in err
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 not really")
    assert main(["replay", str(garbage), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("optscale replay: error: ") and "not a readable Parquet file" in err
