"""`optscale sample`: live Best-of-N with OptScale stopping (vLLM sampler + verifier).

With `--budget B`, no per-question stopping: B samples per prompt on average are spent over
the prompt set in waves, where the fitted score laws say they help most
(`optscale_jax.live.budget_loop`); each wave's allocation is logged beside `--out`
(`run.jsonl` -> `run.allocation.jsonl`), and `--resume` continues from both files.

Example (offline, CPU)::

    optscale sample --model smollm2 --verifier judge:smollm2 \\
        --prompts optscale_jax/data/optscale-official/prompts/gsm8k5.jsonl --out run.jsonl
    optscale sample ... --budget 4 --objective reach --wave 5 --out budget.jsonl
    optscale replay run.jsonl ...
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the arguments of `optscale sample` (imports nothing heavy)."""
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--model", required=True, help="local model folder, or 'smollm2'")
    io.add_argument(
        "--verifier",
        required=True,
        metavar="KIND:PATH",
        help="prm:PATH, judge:PATH or orm:PATH (PATH a local folder or 'smollm2')",
    )
    io.add_argument(
        "--prompts",
        required=True,
        help="JSONL: 'problem' or 'question', optional 'answer'/'gold', 'id', 'prior'; or the "
        "name of a shipped prompt set (math500, gsm8k, gsm8k5, aime24, aime25, amc23)",
    )
    io.add_argument("--out", required=True, help="the per-sample JSONL log (appended per wave)")
    io.add_argument("--resume", action="store_true", help="continue a killed run from --out")
    io.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    io.add_argument("--summary", default=None, help="also write the run summary as JSON here")

    stop = parser.add_argument_group("OptScale stopping")
    stop.add_argument("--s-min", type=float, default=0.8, help="score threshold s_min")
    stop.add_argument("--alpha", type=float, default=0.9, help="confidence level alpha")
    stop.add_argument("--max-n", type=int, default=8, help="sample cap per question")
    stop.add_argument("--wave-size", type=int, default=2, help="samples per question per wave")
    stop.add_argument("--min-samples", type=int, default=1, help="never stop before this")
    stop.add_argument(
        "--setting",
        default=None,
        metavar="FILE",
        help="run with the setting certified by `optscale replay --select ltt` (its "
        "certified_setting.json or summary.json): its s_min, alpha, minimum samples and "
        "max_n replace the flags' (optscalet's with priors, else optscale0's)",
    )
    stop.add_argument(
        "--prior",
        default=None,
        help="OptScalet: JSONL of per-id prior centres {id, mu, sigma} (else MLE, OptScale0; "
        "priors inside the prompts file are used too)",
    )
    stop.add_argument(
        "--prior-scale",
        type=float,
        nargs=2,
        default=(0.1, 0.1),
        metavar=("MU_SCALE", "SIGMA_SCALE"),
        help="standard deviations of the Gaussian priors on mu and sigma",
    )
    stop.add_argument(
        "--law",
        default="tn",
        metavar="LAW",
        help="the score law N* comes from, fitted per question to its scores so far: tn "
        "(default), beta, tn-atoms, beta-atoms, empirical (DKW band), or auto (per question "
        "the parametric law with the least AIC); with a law other than tn each log line "
        "and the summary name the law that decided (no --prior, --setting or --budget)",
    )

    _add_budget_arguments(parser)

    gen = parser.add_argument_group("sampling")
    gen.add_argument("--seed", type=int, default=0, help="run seed (per question and wave)")
    gen.add_argument("--temperature", type=float, default=0.7)
    gen.add_argument("--top-p", type=float, default=0.95)
    gen.add_argument("--max-tokens", type=int, default=256, help="generated tokens cap")
    gen.add_argument("--max-model-len", type=int, default=2048, help="vLLM context length")
    gen.add_argument("--dtype", default="auto", help="vLLM weights dtype")
    _add_server_arguments(gen)
    gen.add_argument(
        "--prompt-template",
        default=None,
        help="user message with {question} (default: asks for a \\boxed{} answer)",
    )
    gen.add_argument("--answer-kind", default="auto", choices=("auto", "boxed", "number", "choice"))

    ver = parser.add_argument_group("verifier")
    ver.add_argument(
        "--aggregation",
        default="mean",
        choices=("mean", "min", "last", "prod"),
        help="PRM step aggregation (the paper: mean)",
    )
    ver.add_argument("--prm-head", default="auto", choices=("auto", "token", "causal"))
    ver.add_argument(
        "--judge-prompt",
        default=None,
        help="judge user message with {question} and {answer} (a string or a file)",
    )
    ver.add_argument("--verifier-batch-size", type=int, default=8)
    ver.add_argument(
        "--verifier-max-length", type=int, default=None, help="truncate inputs to this"
    )


def _add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """The budget mode: a total budget spread over the prompts instead of OptScale stopping."""
    budget = parser.add_argument_group(
        "budget allocation (instead of OptScale stopping; --max-n caps each prompt, --s-min is "
        "reach's threshold)"
    )
    budget.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="B",
        help="spend B samples per prompt on average (floor(B * prompts) in total), in waves, "
        "where the fitted score laws gain most; B in [--m0, --max-n]. Each wave's allocation "
        "is logged beside --out (run.jsonl -> run.allocation.jsonl); --resume reads both",
    )
    budget.add_argument(
        "--objective",
        choices=("reach", "best"),
        default=None,
        help="reach: most prompts whose best score reaches --s-min (default); best: highest "
        "sum of expected best scores",
    )
    budget.add_argument(
        "--wave",
        type=int,
        default=None,
        metavar="W",
        help="samples per wave after the first (default: the number of prompts)",
    )
    budget.add_argument(
        "--m0", type=int, default=None, help="samples every prompt draws first (default 2)"
    )


def _budget_config(args: argparse.Namespace):
    """The `BudgetConfig` of --budget, or None; the budget flags need --budget."""
    if args.budget is None:
        for name in ("objective", "wave", "m0"):
            if getattr(args, name) is not None:
                raise ValueError(f"{name}: only with --budget")
        return None
    if args.setting is not None:
        raise ValueError("setting: a certified stopping setting does not apply to --budget")
    if args.law != "tn":
        raise ValueError(f"law: --budget plans with the tn law only, got {args.law!r}")
    from optscale_jax.live.budget_loop import BudgetConfig

    given = {name: getattr(args, name) for name in ("objective", "wave", "m0")}
    return BudgetConfig(args.budget, **{k: v for k, v in given.items() if v is not None})


def _add_server_arguments(gen: argparse._ArgumentGroup) -> None:
    """The servers to sample from, and the in-process engine's own parallelism."""
    gen.add_argument(
        "--endpoint",
        "--server",
        action="append",
        default=None,
        metavar="URL",
        help="sample from a running OpenAI-compatible server (vllm serve) instead; repeat for "
        "several servers of the same model: a wave's requests go to all of them, and a server "
        "that fails has its requests retried on the others",
    )
    gen.add_argument("--served-model", default=None, help="model name on the --endpoint servers")
    gen.add_argument(
        "--max-in-flight",
        type=int,
        default=16,
        metavar="N",
        help="requests in flight per --endpoint server",
    )
    gen.add_argument(
        "--request-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="a request unanswered this long counts as failed (retried on another server)",
    )
    gen.add_argument(
        "--retries",
        type=int,
        metavar="N",
        default=2,
        help="a request is given up after failing (--endpoint servers + N) times; the tries "
        "beyond one per server go to the last server left",
    )
    gen.add_argument(
        "--tensor-parallel-size",
        type=int,
        metavar="N",
        default=None,
        help="GPUs per model replica of the in-process vLLM engine (vLLM's own argument)",
    )
    gen.add_argument(
        "--data-parallel-size",
        type=int,
        metavar="N",
        default=None,
        help="model replicas of the in-process vLLM engine (vLLM's own argument; vLLM 0.32 "
        "takes it only in `vllm serve`, see the docs)",
    )


def _check_positive(value: int, name: str) -> None:
    if value < 1:
        raise ValueError(f"{name}: must be >= 1, got {value}")


def loop_config(args: argparse.Namespace, **changes):
    """The `LoopConfig` of the arguments named after its fields (absent or None: its default).

    Args:
        args: parsed arguments (`--s-min` gives `s_min`, ...).
        **changes: values that replace the arguments' (e.g. a list made a tuple).
    """
    from optscale_jax.live.loop import LoopConfig

    given = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(LoopConfig)
        if getattr(args, field.name, None) is not None
    }
    return LoopConfig(**(given | changes))


# vLLM's own parallelism arguments, passed through to the in-process engine when given.
ENGINE_PARALLELISM = ("tensor_parallel_size", "data_parallel_size")


def build_sampler(args: argparse.Namespace, model_path: str | None):
    """The sampler the arguments ask for (OpenAI client with --endpoint, else vLLM)."""
    from optscale_jax.live.samplers import OpenAISampler, VLLMSampler

    common = dict(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens)
    if args.endpoint:
        return OpenAISampler(
            args.endpoint,
            model=args.served_model,
            request_timeout=args.request_timeout,
            max_in_flight=args.max_in_flight,
            retries=args.retries,
            **common,
        )
    parallelism = {
        name: getattr(args, name) for name in ENGINE_PARALLELISM if getattr(args, name) is not None
    }
    return VLLMSampler(
        model_path,
        max_model_len=args.max_model_len,
        dtype=args.dtype,
        engine_seed=args.seed,
        **parallelism,
        **common,
    )


def _check_parallelism(args: argparse.Namespace) -> None:
    """The engine's parallelism is >= 1, and only for the in-process engine (a server has
    its own: `vllm serve --tensor-parallel-size N`)."""
    for name in ENGINE_PARALLELISM:
        value = getattr(args, name)
        if value is None:
            continue
        _check_positive(value, name)
        if args.endpoint:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{name}: give it to the server (vllm serve {flag} N), not here")


def run(args: argparse.Namespace) -> int:
    """Runs `optscale sample`; prints the summary as `name: value` lines."""
    from optscale_jax.live.models import offline_environment, resolve_model

    offline_environment()
    from optscale_jax.live import loop
    from optscale_jax.live.samplers import EndpointsFailedError
    from optscale_jax.live.verifiers import build_verifier, parse_verifier_spec

    # Errors name the argument; the dispatcher shows its flag (max_tokens -> --max-tokens).
    for name in ("max_tokens", "max_model_len", "verifier_batch_size"):
        _check_positive(getattr(args, name), name)
    if not 0.0 < args.top_p <= 1.0:
        raise ValueError(f"top_p: must be in (0, 1], got {args.top_p}")
    if args.temperature < 0:
        raise ValueError(f"temperature: must be >= 0, got {args.temperature}")
    _check_parallelism(args)
    parse_verifier_spec(args.verifier)
    budget = _budget_config(args)
    priors = loop.read_priors(args.prior) if args.prior else None
    questions = loop.read_prompts(_prompts_file(args.prompts), priors)
    if args.limit is not None:
        _check_positive(args.limit, "limit")
        questions = questions[: args.limit]
    if args.setting is not None and args.law != "tn":
        raise ValueError(f"law: a certified --setting is the tn law's, got {args.law!r}")
    stopping, certificate = _certified(args.setting, questions)
    config = loop_config(args, prior_scale=tuple(args.prior_scale), **stopping)
    model_path = None if args.endpoint else str(resolve_model(args.model))
    sampler = build_sampler(args, model_path)
    judge_prompt = args.judge_prompt
    if judge_prompt and pathlib.Path(judge_prompt).is_file():
        judge_prompt = pathlib.Path(judge_prompt).read_text(encoding="utf-8")
    verifier = build_verifier(
        args.verifier,
        aggregation=args.aggregation,
        head=args.prm_head,
        prompt=judge_prompt,
        batch_size=args.verifier_batch_size,
        max_length=args.verifier_max_length,
    )
    try:
        summary = _run_loop(questions, sampler, verifier, config, budget, args)
    except loop.LogExistsError as error:
        raise ValueError(f"out: {error.path} exists; pass --resume to continue it") from None
    except EndpointsFailedError as error:
        # The loop writes a wave only once it is whole: the log ends at the last full wave.
        raise ValueError(f"endpoint: {error}; --resume continues the run") from None
    summary.setting = certificate
    print_summary(summary)
    if args.summary:
        from optscale_jax.io import write_json

        write_json(summary.as_dict(), args.summary)
    return 0


def _run_loop(questions, sampler, verifier, config, budget, args: argparse.Namespace):
    """OptScale stopping per question, or with a budget the allocation across questions."""
    from optscale_jax.live import budget_loop, loop

    if budget is None:
        if args.resume and budget_loop.allocation_log_path(args.out).exists():
            raise ValueError(f"budget: {args.out} was run with --budget; resume it with the same")
        return loop.run_online(questions, sampler, verifier, config, args.out, resume=args.resume)
    import jax

    # The allocation's fits in float64, as `optscale replay` computes them from the log.
    jax.config.update("jax_enable_x64", True)
    return budget_loop.run_budget(
        questions, sampler, verifier, config, budget, args.out, resume=args.resume
    )


def print_summary(summary) -> None:
    """Prints the headline figures of a run as `name: value` lines on stdout."""
    accuracy = "n/a (no gold)" if summary.accuracy is None else f"{summary.accuracy:.4f}"
    fixed = summary.questions * summary.max_n
    lines = {
        "questions": summary.questions,
        "accuracy": f"{accuracy} (best-of-n by score, {summary.graded} graded)",
        "samples": f"{summary.samples} of {fixed} at max_n={summary.max_n} "
        f"({summary.samples / max(fixed, 1):.1%})",
        "mean_samples": f"{summary.samples / max(summary.questions, 1):.2f}",
        "stopped_by_nstar": summary.stopped_by_nstar,
        "stopped_at_max_n": summary.stopped_at_max_n,
        "tokens": summary.tokens,
        "waves": summary.waves,
        "verifier_calls": summary.verifier_calls,
        "verifier_inputs": summary.verifier_inputs,
        "verifier_truncated": summary.truncated,
        "resumed_samples": summary.resumed_samples,
        "wall_seconds": f"{summary.wall_seconds:.1f}",
        "decision_seconds": f"{summary.decision_seconds:.3f}",
    }
    if hasattr(summary, "total_budget"):  # the budget mode: no stopping by N*
        del lines["stopped_by_nstar"]
        lines |= _budget_lines(summary)
    if summary.setting is not None:
        lines["setting"] = _certificate_line(summary.setting)
    if getattr(summary, "law", "tn") != "tn":
        lines["law"] = _law_line(summary)
    for name, value in lines.items():
        print(f"{name}: {value}")
    sys.stdout.flush()


def _law_line(summary) -> str:
    """`auto` (tn-atoms 3, beta 2) or the one law: how many questions each law decided."""
    decided = list((summary.question_laws or {}).values())
    counts = ", ".join(f"{name} {decided.count(name)}" for name in dict.fromkeys(decided))
    return f"{summary.law} ({counts})" if counts else summary.law


def _budget_lines(summary) -> dict[str, str]:
    """The budget mode's lines of a `BudgetRunSummary`."""
    return {
        "budget": f"{summary.budget:g} per prompt ({summary.samples} of "
        f"{summary.total_budget} samples spent; objective {summary.objective}, m0 "
        f"{summary.m0}, {summary.wave} per wave)",
        "allocation_log": summary.allocation_log,
    }


def _certified(path: str | None, questions) -> tuple[dict, dict | None]:
    """With --setting: the stopping settings the file certifies (OptScalet's when the
    questions have priors, else OptScale0's) and the certificate; else nothing."""
    if path is None:
        return {}, None
    from optscale_jax.replay import loop_values, read_certified_setting

    method = "optscalet" if any(q.prior is not None for q in questions) else "optscale0"
    certificate = read_certified_setting(path, method)
    return loop_values(certificate), certificate


def _certificate_line(certificate: dict) -> str:
    verdict = "certified" if certificate["certified"] else "not certified: full budget"
    return (
        f"{certificate['method']} {certificate['setting']} ({verdict}: {certificate['risk']} "
        f"risk <= {certificate['epsilon']:g} with probability >= {1 - certificate['delta']:g} "
        f"on {certificate['calibration_questions']} questions; {certificate['file']})"
    )


def _prompts_file(spec: str) -> pathlib.Path:
    """A path as given, or a shipped prompt set named without its folder (e.g. gsm8k5.jsonl)."""
    path = pathlib.Path(spec)
    if path.exists() or path.parent != pathlib.Path("."):
        return path
    from optscale_jax import datasets

    try:
        return datasets.prompts_path(path.name.removesuffix(".jsonl"))
    except FileNotFoundError:
        return path
