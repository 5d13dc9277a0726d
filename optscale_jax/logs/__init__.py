"""Logged Best-of-N runs as arrays: the `Log` schema, its readers and writers.

Every reader returns one `Log`: Q questions padded to K = the longest question, with a mask.

| format | file | scores | answers | gold |
|---|---|---|---|---|
| `jsonl` | one record per question, or one per sample (`sample_index`) | `scores` / `score` | `answers` / `answer` | `gold` |
| `parquet` | the per-question schema, list columns | `scores` | `answers` | `gold` |
| `optscale-pool` | the OptScale paper's JSON array | `score.scores[0]` | last `\\boxed{}` | `prompts=` file |
| `search-and-learn` | HF search-and-learn best-of-n JSONL | step scores, `step_aggregation=` | last `\\boxed{}` | `answer` |
| `gpqa-genrm` | GPQA generative-verifier JSONL | mean of non-null verdicts | letter or none | `gt` |

Malformed input raises `ValueError` naming the file, the line (1-based; the row for Parquet)
and the field. Nothing is dropped or coerced: a score outside [0, 1] or NaN, a field present
on some records and missing on others, lists of different lengths, wrong types, duplicate ids
all stop the read. Blank lines in JSONL files are skipped; keys outside the schema are ignored;
a UTF-8 byte order mark and Windows line ends are read as plain text.

Modules: `schema` (the `Log`, and `assemble`, which pads validated questions into one),
`records` (field checks), `samples` (the per-sample layout, shared with
`optscale sample --resume`), `jsonfiles` (JSONL / JSON-array decoding), `readers`
(`read_log`, the format table), `formats` (other projects' logs), `writers`.
"""

from optscale_jax.logs.formats import STEP_AGGREGATIONS
from optscale_jax.logs.readers import FORMATS, detect_format, read_log
from optscale_jax.logs.samples import questions_from_samples
from optscale_jax.logs.schema import Log
from optscale_jax.logs.writers import write_jsonl, write_parquet

__all__ = [
    "FORMATS",
    "STEP_AGGREGATIONS",
    "Log",
    "detect_format",
    "questions_from_samples",
    "read_log",
    "write_jsonl",
    "write_parquet",
]
