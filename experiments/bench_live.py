"""`optscale bench live`: decision overhead per wave, adaptive vs fixed-max_n tokens.

On a tiny random-weight model (built in a temporary folder unless `--model` is given), the
same prompts are run twice with the same seeds: once with OptScale stopping and once at a
fixed max_n (`min_samples = max_n`). Per-(question, wave) seeds make the adaptive run's
samples a prefix of the fixed run's, so the token difference is what stopping saved. The
decision overhead is the time spent on the estimator call, the bookkeeping and the fsync'd
log write, as a fraction of the wave wall time (sampling + scoring + decision).
Prints `name: value` lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import tempfile


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the arguments of `optscale bench live`."""
    parser.add_argument("--model", default=None, help="model folder (default: a tiny one)")
    parser.add_argument(
        "--verifier", default=None, help="KIND:PATH (default: judge on the sampling model)"
    )
    parser.add_argument(
        "--prompts", default=None, help="prompts JSONL (default: the shipped gsm8k.jsonl)"
    )
    parser.add_argument("--questions", type=int, default=32, help="prompts used")
    parser.add_argument("--max-n", type=int, default=16)
    parser.add_argument("--wave-size", type=int, default=2)
    parser.add_argument("--s-min", type=float, default=0.6)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the figures as JSON here too")


def measure(questions, sampler, verifier, config, workdir: pathlib.Path) -> dict:
    """Runs the adaptive and the fixed-max_n loop and returns the figures.

    Args:
        questions: `optscale_jax.live.loop.Question`s.
        sampler: a `Sampler` (its engine is shared by both runs).
        verifier: a `Verifier`.
        config: the adaptive `LoopConfig`; the fixed run uses `min_samples = max_n`.
        workdir: where the two logs go.

    Returns:
        A dict of figures (see the module docstring).
    """
    from optscale_jax.live.loop import run_online

    # Warm-up: engine start, verifier load and the estimator's jit compile are paid once,
    # outside the measured runs.
    sampler.generate([questions[0].text], 1, 0)
    verifier.score([questions[0].text], ["warm-up"])
    warm = dataclasses.replace(config, max_n=1, wave_size=1)
    run_online(questions, sampler, verifier, warm, workdir / "warmup.jsonl", progress=False)

    adaptive = run_online(questions, sampler, verifier, config, workdir / "adaptive.jsonl")
    fixed_config = dataclasses.replace(config, min_samples=config.max_n)
    fixed = run_online(questions, sampler, verifier, fixed_config, workdir / "fixed.jsonl")
    wave_total = sum(adaptive.wave_seconds)
    loop_decisions = sum(adaptive.wave_decision_seconds)
    return {
        "questions": adaptive.questions,
        "max_n": config.max_n,
        "wave_size": config.wave_size,
        "waves": adaptive.waves,
        "wave_seconds_mean": wave_total / max(adaptive.waves, 1),
        "decision_ms_per_wave": 1e3 * loop_decisions / max(adaptive.waves, 1),
        "decision_overhead_fraction": loop_decisions / wave_total if wave_total else 0.0,
        "sample_fraction": adaptive.sample_seconds / wave_total if wave_total else 0.0,
        "verify_fraction": adaptive.verify_seconds / wave_total if wave_total else 0.0,
        "adaptive_samples": adaptive.samples,
        "fixed_samples": fixed.samples,
        "adaptive_tokens": adaptive.tokens,
        "fixed_tokens": fixed.tokens,
        "token_ratio": adaptive.tokens / fixed.tokens if fixed.tokens else float("nan"),
        "stopped_by_nstar": adaptive.stopped_by_nstar,
    }


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark and prints `name: value` lines."""
    from optscale_jax.live.models import offline_environment, resolve_model

    offline_environment()
    from optscale_jax.datasets import prompts_path
    from optscale_jax.experiments.sample_cli import loop_config
    from optscale_jax.live import loop
    from optscale_jax.live.samplers import VLLMSampler
    from optscale_jax.live.verifiers import build_verifier

    with tempfile.TemporaryDirectory(prefix="optscale-bench-live-") as tmp:
        workdir = pathlib.Path(tmp)
        if args.model is None:
            from optscale_jax.live.tiny import build_model

            model = str(
                build_model(
                    workdir / "tiny", family="qwen2", seed=args.seed, max_position_embeddings=2048
                )
            )
            print(f"model: tiny random qwen2 ({model})", file=sys.stderr)
        else:
            model = str(resolve_model(args.model))
        verifier = build_verifier(args.verifier or f"judge:{model}")
        prompts = args.prompts or prompts_path("gsm8k")
        questions = loop.read_prompts(prompts)[: args.questions]
        sampler = VLLMSampler(
            model, max_tokens=args.max_tokens, max_model_len=1024, engine_seed=args.seed
        )
        figures = measure(questions, sampler, verifier, loop_config(args), workdir)
    for name, value in figures.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{name}: {shown}")
    if args.out:
        from optscale_jax.io import write_json

        write_json(figures, args.out)
    return 0
