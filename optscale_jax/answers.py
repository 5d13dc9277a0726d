"""Final answers from generated text: extraction, normalisation, grouping, correctness.

Shared by the log readers (`optscale_jax.logs`) and the live adapter, so that a replayed log
and a live run extract and compare answers the same way.

- `last_boxed`: content of the last balanced `\\boxed{...}` / `\\fbox{...}`.
- `extract_answer`: boxed content, a multiple-choice letter or the last number.
- `normalise_answer`: the canonical string two answers are grouped by (`answer_key`).
- `normalise_choice`: a messy multiple-choice answer ("B.**", "D)", "ThefinalanswerisA")
  reduced to one letter, or None.
- `is_correct`: prediction vs gold with math-verify (cached, guarded), with exact fast paths.

Grouping (`answer_codes`) uses normalised string equality, not mathematical equivalence:
"1/2" and "\\frac{1}{2}" are two different answers for majority voting. This is the usual
convention of self-consistency implementations and keeps grouping linear in the number of
samples; correctness, in contrast, is decided by math-verify.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Literal

__all__ = [
    "ANSWER_KINDS",
    "MATH_VERIFY_TIMEOUT",
    "answer_codes",
    "answer_key",
    "extract_answer",
    "gsm8k_final_answer",
    "is_correct",
    "last_boxed",
    "normalise_answer",
    "normalise_choice",
]

ANSWER_KINDS = ("auto", "boxed", "number", "choice")
# Seconds math-verify may spend parsing one answer or comparing one pair (whole seconds: it
# uses signal.alarm). Exotic answers (infinite sums, integrals) can take far longer; a timeout
# counts as "not equal".
MATH_VERIFY_TIMEOUT = 2

# `\boxed{`, `\fbox{` (spaces allowed before the brace) or the brace-less `\boxed 5`.
_BOX_START = re.compile(r"\\(?:boxed|fbox)(?:\s*\{|\s+(?=[^\s{]))")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PLAIN_INTEGER = re.compile(r"-?\d+")
_PLAIN_DECIMAL = re.compile(r"-?\d*\.?\d+")
# LaTeX wrappers whose content is the answer: \text{..}, \textbf{..}, \mathrm{..}, \mbox{..}.
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\{([^{}]*)\}")
_SPACING = re.compile(r"\\[!,;: ]|\\q?quad\b")
_DEGREES = re.compile(r"\^\{?\\circ\}?")
# "The final answer is", "Answer:", "Final Answer: The answer is" etc. (spaces optional,
# since some logs strip all whitespace: "ThefinalanswerisA").
_CHOICE_PREFIX = re.compile(
    r"^(?:final\s*answer\s*:?\s*)?(?:the\s*)?(?:final\s*)?(?:correct\s*)?"
    r"(?:answer|option|choice)\s*(?:is|:)?\s*:?\s*",
    re.IGNORECASE,
)
# A choice stated in running text: "answer is (B)", "Answer: **C**", "answer: D.".
_CHOICE_IN_TEXT = re.compile(
    r"(?:answer|option|choice)\s*(?:is\s*:?|:)\s*(?:option\s*|choice\s*)?[*_(\[{\s]*((?-i:[A-Z]))(?![A-Za-z0-9])",
    re.IGNORECASE,
)

_log = logging.getLogger(__name__)


def last_boxed(text: str | None) -> str | None:
    """Content of the last balanced `\\boxed{...}` or `\\fbox{...}` in `text`.

    Braces are matched with a counter (escaped `\\{`, `\\}` do not count), so nested LaTeX such
    as `\\boxed{\\frac{1}{2}}` is returned whole. A box left unclosed (a truncated generation)
    is skipped in favour of the last complete one before it. The brace-less form `\\boxed 5`
    yields the token after it.

    Args:
        text: generated text (None gives None).

    Returns:
        The raw content (not normalised), or None when there is no complete box.

    Example:
        >>> last_boxed(r"so \\boxed{1} ... finally \\boxed{\\frac{a}{b}}.")
        '\\\\frac{a}{b}'
    """
    if not text:
        return None
    starts = list(_BOX_START.finditer(text))
    for match in reversed(starts):
        if match.group(0).rstrip().endswith("{"):
            content = _balanced_content(text, match.end())
        else:
            token = re.match(r"[^\s$]+", text[match.end() :])
            content = token.group(0) if token else None
        if content is not None:
            return content
    return None


def _balanced_content(text: str, start: int) -> str | None:
    """Text from `start` up to the brace that closes the one just before `start`."""
    depth = 1
    index = start
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2  # an escaped character, e.g. \{ or \}, never changes the depth
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:index]
        index += 1
    return None


@functools.lru_cache(maxsize=1 << 16)
def normalise_answer(answer: str | None) -> str | None:
    """Canonical form of an extracted answer, used to group equal answers.

    Removes what does not change the value of a typical math answer: whitespace, `$`,
    `\\left`/`\\right`, LaTeX spacing commands, `\\text{...}`-like wrappers (keeping their
    content), degree signs, `\\dfrac`/`\\tfrac` -> `\\frac`, `\\%` -> `%`, a trailing period,
    thousands separators of a plain number ("1,000" -> "1000") and a surrounding
    `\\boxed{...}`. The function is idempotent; an empty result becomes None.

    Args:
        answer: an extracted answer string (None gives None).

    Returns:
        The normalised string, or None if nothing is left.
    """
    if answer is None:
        return None
    text = answer
    while True:
        previous = text
        text = text.strip().strip("$").strip()
        boxed = _whole_box(text)
        if boxed is not None:
            text = boxed
        text = _TEXT_WRAPPER.sub(r"\1", text)
        text = _SPACING.sub("", text)
        text = text.replace("\\left", "").replace("\\right", "")
        text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
        text = _DEGREES.sub("", text).replace("\\%", "%")
        text = "".join(text.split())
        text = text.rstrip(".")
        if _THOUSANDS.fullmatch(text):
            text = text.replace(",", "")
        if text == previous:
            break
    return text or None


def _whole_box(text: str) -> str | None:
    """Content of `text` if the whole string is one `\\boxed{...}`, else None."""
    match = _BOX_START.match(text)
    if match is None or not match.group(0).rstrip().endswith("{"):
        return None
    content = _balanced_content(text, match.end())
    if content is None or match.end() + len(content) + 1 != len(text):
        return None
    return content


def answer_key(answer: str | None) -> str | None:
    """The key two answers are grouped by (majority voting): `normalise_answer(answer)`."""
    return normalise_answer(answer)


def answer_codes(answers: Sequence[str | None]) -> list[int]:
    """Integer codes of the answers of one question, by first appearance.

    Two answers share a code when their `answer_key` is equal; None (or an answer that
    normalises to nothing) gets -1.

    Args:
        answers: the answers of one question's samples, in sample order.

    Returns:
        One code per answer: 0 for the first distinct answer, 1 for the next, ...; -1 = none.

    Example:
        >>> answer_codes(["1/2", None, " 1/2", "3"])
        [0, -1, 0, 1]
    """
    seen: dict[str, int] = {}
    code_of: dict[str | None, int] = {}  # raw string -> code: normalise each distinct one once
    codes = []
    for answer in answers:
        code = code_of.get(answer)
        if code is None:
            key = answer_key(answer)
            code = -1 if key is None else seen.setdefault(key, len(seen))
            code_of[answer] = code
        codes.append(code)
    return codes


def normalise_choice(answer: str | None, letters: str = "ABCD") -> str | None:
    """A multiple-choice answer reduced to one letter, or None.

    Strips decoration (whitespace, markdown `*`/`_`, `$`, `\\boxed{}`/`\\text{}`, brackets, a
    trailing `.`, `)` or `:`) and a leading "The final answer is" / "Answer:" phrase (with or
    without spaces); what is left must be exactly one of `letters` (upper case). Anything else
    -- "[invalidanswer]", "", free text, or a letter followed by more text such as "B)185" --
    counts as no answer.

    Args:
        answer: the extracted answer string.
        letters: the valid choice letters.

    Returns:
        The letter, or None.

    Example:
        >>> [normalise_choice(s) for s in ["B.**", "D)", "ThefinalanswerisA", "[invalidanswer]"]]
        ['B', 'D', 'A', None]
    """
    if answer is None:
        return None
    text = answer
    while True:
        previous = text
        text = text.strip().strip("*_$ \t\n")
        boxed = _whole_box(text)
        if boxed is not None:
            text = boxed
        text = _TEXT_WRAPPER.sub(r"\1", text)
        text = _CHOICE_PREFIX.sub("", text, count=1)
        text = text.rstrip(".):").lstrip("(")
        if len(text) >= 2 and text[0] in "([{" and text[-1] in ")]}":
            text = text[1:-1]
        if text == previous:
            break
    return text if len(text) == 1 and text in letters else None


def _last_number(text: str) -> str | None:
    """The last number in `text` (thousands commas removed, trailing decimal zeros cut)."""
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    number = matches[-1].replace(",", "")
    if "." in number and "/" not in number:
        number = number.rstrip("0").rstrip(".")
        if number in ("", "-"):
            number = "0"
    return number


def gsm8k_final_answer(text: str) -> str:
    """The final answer of a GSM8K-style solution: the text after the last `####`, stripped,
    with thousands separators removed ("1,234" -> "1234"); text without `####` is returned
    as it is.

    Example:
        >>> gsm8k_final_answer("She has 3 + 4 = 7 eggs.\\n#### 1,007")
        '1007'
    """
    if "####" not in text:
        return text
    text = text.rsplit("####", 1)[1].strip()
    return text.replace(",", "") if _THOUSANDS.fullmatch(text) else text


def extract_answer(
    text: str | None,
    kind: Literal["auto", "boxed", "number", "choice"] = "auto",
    letters: str = "ABCD",
) -> str | None:
    """The final answer of a generated solution, normalised.

    Kinds:
      - `boxed`: the last balanced `\\boxed{}`/`\\fbox{}` (a boxed choice letter such as
        `\\boxed{(B)}` becomes "B");
      - `choice`: a letter stated as "answer is (B)", "Answer: **C**" (the last such phrase),
        else the whole text reduced by `normalise_choice`;
      - `number`: the last number in the text;
      - `auto`: boxed if the text has a box, else a stated choice, else the last number.

    Args:
        text: generated text (None gives None).
        kind: one of `ANSWER_KINDS`.
        letters: valid choice letters for `choice` (and boxed letters).

    Returns:
        The normalised answer (see `normalise_answer`), or None when none is found.

    Raises:
        ValueError: for an unknown `kind`.
    """
    if kind not in ANSWER_KINDS:
        raise ValueError(f"kind must be one of {ANSWER_KINDS}, got {kind!r}")
    if not text:
        return None
    if kind in ("auto", "boxed"):
        boxed = last_boxed(text)
        if boxed is not None:
            letter = normalise_choice(boxed, letters)
            return letter if letter is not None else normalise_answer(boxed)
        if kind == "boxed":
            return None
    if kind in ("auto", "choice"):
        stated = [m for m in _CHOICE_IN_TEXT.finditer(text) if m.group(1) in letters]
        if stated:
            return stated[-1].group(1)
        if kind == "choice":
            return normalise_choice(text, letters)
    return _last_number(text)


def is_correct(pred: str | None, gold: str | None) -> bool:
    """Whether a predicted answer equals the gold answer.

    In order: None on either side is False; equal `normalise_answer` forms are True; a gold
    choice letter (A-Z after `normalise_choice`) is compared as letters (exact); two plain
    integers are compared as integers; everything else goes to math-verify
    (`verify(parse(gold), parse(pred))`, both wrapped in `\\boxed{}`). math-verify errors and
    timeouts count as False. Results are cached per (pred, gold).

    math-verify's timeouts use `signal.alarm`, which only works in the main thread; in other
    threads it runs without a timeout.

    Args:
        pred: the extracted (predicted) answer.
        gold: the reference answer.

    Returns:
        True if the prediction is judged equal to the gold answer.
    """
    if pred is None or gold is None:
        return False
    return _is_correct_cached(pred, gold)


@functools.lru_cache(maxsize=1 << 16)
def _is_correct_cached(pred: str, gold: str) -> bool:
    pred_norm = normalise_answer(pred)
    gold_norm = normalise_answer(gold)
    if pred_norm is None or gold_norm is None:
        return False
    if pred_norm == gold_norm:
        return True
    gold_letter = normalise_choice(gold_norm, letters="ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    if gold_letter is not None:
        return normalise_choice(pred_norm, letters=gold_letter) == gold_letter
    if _PLAIN_INTEGER.fullmatch(pred_norm) and _PLAIN_INTEGER.fullmatch(gold_norm):
        return _integer_value(pred_norm) == _integer_value(gold_norm)
    if _PLAIN_DECIMAL.fullmatch(pred_norm) and _PLAIN_DECIMAL.fullmatch(gold_norm):
        try:
            if Decimal(pred_norm) == Decimal(gold_norm):
                return True
        except InvalidOperation:
            pass
    return _math_verify(pred_norm, gold_norm)


def _integer_value(text: str) -> str:
    """A plain integer's canonical text ("-007" -> "-7", "-0" -> "0"): equal texts, equal
    values, at any length (`int()` refuses strings of more than 4300 digits)."""
    digits = text.lstrip("-").lstrip("0") or "0"
    return "-" + digits if text.startswith("-") and digits != "0" else digits


def _timeouts() -> int | None:
    # math-verify's timeout uses signal.alarm, which raises outside the main thread.
    if threading.current_thread() is threading.main_thread():
        return MATH_VERIFY_TIMEOUT
    return None


@functools.lru_cache(maxsize=1 << 14)
def _parse(answer: str, timeout: int | None) -> tuple:
    from math_verify import parse

    text = answer if "\\boxed" in answer else f"\\boxed{{{answer}}}"
    try:
        return tuple(parse(text, parsing_timeout=timeout))
    except Exception:  # noqa: BLE001 - any parser failure means "not comparable"
        _log.debug("math-verify could not parse %r", answer, exc_info=True)
        return ()


def _math_verify(pred: str, gold: str) -> bool:
    from math_verify import verify

    timeout = _timeouts()
    gold_parsed = _parse(gold, timeout)
    pred_parsed = _parse(pred, timeout)
    if not gold_parsed or not pred_parsed:
        return False
    try:
        return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - a comparison failure or timeout counts as wrong
        _log.debug("math-verify failed on %r vs %r", pred, gold, exc_info=True)
        return False
