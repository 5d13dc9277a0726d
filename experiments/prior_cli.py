"""`optscale prior {train,predict,eval,study}`: the OptScalet prior predictor.

train    fits the predictor on per-question PRM statistics (default: the shipped 4,501 MATH
         training questions) and saves it (safetensors + JSON) to --out.
predict  writes {id, mu, sigma} per question of a questions file (JSONL), and optionally the
         `prior` field into a per-question replay log.
eval     trains (unless --model) and scores the predictor on MATH500 against the constant
         training median and the predictor released with the paper.
study    the downstream study: OptScalet replayed with each prior (`optscale_jax.experiments.prior_study`).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

import numpy as np

from optscale_jax import prior
from optscale_jax.datasets import MATH500_PRM_STATS, MATH_TRAIN_PRM_STATS, data_path
from optscale_jax.experiments import prior_study
from optscale_jax.io import read_jsonl, write_json, write_jsonl_records


def configure(parser: argparse.ArgumentParser) -> None:
    """Adds the prior subcommands and their arguments."""
    sub = parser.add_subparsers(
        dest="prior_command", metavar="{train,predict,eval,study}", required=True
    )

    train = sub.add_parser("train", help="train the predictor and save it")
    train.add_argument("--out", required=True, help="model folder to write")
    _training_arguments(train)

    predict = sub.add_parser("predict", help="predict priors for a questions file")
    predict.add_argument("--model", required=True, help="model folder from `optscale prior train`")
    predict.add_argument(
        "--questions",
        required=True,
        help="JSONL of questions: text in problem/question/prompt/text, id in id/unique_id "
        "(else the 0-based line number), optional level/subject",
    )
    predict.add_argument("--out", required=True, help="output JSONL of {id, mu, sigma}")
    predict.add_argument(
        "--space",
        choices=("truncnorm", "moments"),
        default="truncnorm",
        help="truncnorm (default): truncated-normal (mu, sigma) moment-matched to the predicted "
        "score mean/std, what OptScalet's prior is on; moments: the predicted mean/std",
    )
    predict.add_argument("--log", help="a replay log whose questions get the prior field")
    predict.add_argument("--write-log", help="where to write that log (per-question JSONL)")

    evaluate = sub.add_parser("eval", help="MAE on MATH500 against both anchors")
    evaluate.add_argument("--out", required=True, help="output folder")
    evaluate.add_argument("--model", help="a saved model (default: train one, saved to OUT/model)")
    evaluate.add_argument("--test", help="test PRM statistics JSONL (default: shipped MATH500)")
    _training_arguments(evaluate)

    study = sub.add_parser("study", help="downstream replay study of the priors")
    prior_study.configure(study)


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--features",
        default="hashed",
        help="hashed (default, dependency free) or embed:PATH (a local transformers model)",
    )
    parser.add_argument(
        "--seed", type=int, default=prior.ModelConfig().seed, help="seed of split, init, batches"
    )
    parser.add_argument(
        "--data",
        help="training PRM statistics JSONL (default: shipped MATH train, 4,501 questions)",
    )
    parser.add_argument("--epochs", type=int, help="maximum epochs (default from ModelConfig)")
    parser.add_argument("--members", type=int, help="ensemble size (default from ModelConfig)")
    parser.add_argument("--hidden", type=int, nargs="*", help="hidden widths (default 64)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Runs the chosen prior subcommand."""
    commands = {"train": _train, "predict": _predict, "eval": _eval, "study": prior_study.run}
    return commands[args.prior_command](args)


# --------------------------------------------------------------------------- train


def _model_config(args: argparse.Namespace) -> prior.ModelConfig:
    """`ModelConfig` defaults overridden by --seed, --epochs, --members, --hidden (checked)."""
    changes = {"seed": args.seed}
    for name in ("epochs", "members"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise ValueError(f"--{name}: must be >= 1, got {value}")
            changes[name] = value
    if args.hidden is not None:
        if any(h < 1 for h in args.hidden):
            raise ValueError(f"--hidden: widths must be >= 1, got {args.hidden}")
        changes["hidden"] = tuple(args.hidden)
    return dataclasses.replace(prior.ModelConfig(), **changes)


def _training_data_path(data: str | None) -> pathlib.Path:
    """--data, else the shipped MATH training statistics."""
    return pathlib.Path(data) if data else data_path(MATH_TRAIN_PRM_STATS)


def _train_from_args(args: argparse.Namespace) -> prior.PriorPredictor:
    """Reads --data and trains the predictor with the flags' features and settings."""
    path = _training_data_path(args.data)
    records = read_jsonl(path)
    return prior.train_prior_from_records(
        records,
        features=args.features,
        config=_model_config(args),
        progress=not args.quiet,
        source=str(path),
    )


def _train(args: argparse.Namespace) -> int:
    predictor = _train_from_args(args)
    prior.save_prior(predictor, args.out)
    info = predictor.info
    print(
        f"saved {args.out}: validation MAE mu {info['val_mae_mu']:.4f} "
        f"(constant {info['val_mae_mu_constant']:.4f}), sigma {info['val_mae_sigma']:.4f} "
        f"(constant {info['val_mae_sigma_constant']:.4f}) on {info['n_val']} held-out training questions"
    )
    return 0


# --------------------------------------------------------------------------- predict


def _predict(args: argparse.Namespace) -> int:
    if (args.log is None) != (args.write_log is None):
        raise ValueError("--log and --write-log go together")
    predictor = prior.load_prior(args.model)
    records, ids = _read_questions(args.questions)
    mean, std = prior.predict_prior(predictor, records, progress=True)
    if args.space == "truncnorm":
        mu, sigma = prior.moments_to_truncnorm(mean, std)
    else:
        mu, sigma = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    prior.write_prior_file(ids, mu, sigma, args.out)
    print(f"wrote {len(ids)} priors ({args.space}) to {args.out}")
    if args.log is not None:
        _write_log_priors(
            args.log, args.write_log, dict(zip(ids, zip(mu, sigma, strict=True), strict=True))
        )
    return 0


def _read_questions(path: str) -> tuple[list[dict], list[str]]:
    """(records, ids) of a questions file; ids unique and every record with a text."""
    records = read_jsonl(path)
    if not records:
        raise ValueError(f"{path}: no questions")
    ids = [prior.question_id(r, str(i)) for i, r in enumerate(records)]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: question ids are not unique")
    for number, record in enumerate(records, start=1):
        prior.question_text(record, where=f"{path}:{number}")
    return records, ids


def _write_log_priors(log_path: str, out_path: str, table: dict[str, tuple[float, float]]) -> None:
    """Copies a log with each question's `prior` set from `table` (every id must be there)."""
    from optscale_jax.logs import read_log, write_jsonl

    log = read_log(log_path)
    missing = [i for i in log.ids if i not in table]
    if missing:
        raise ValueError(
            f"--log: {len(missing)} question(s) of {log_path} not in --questions, e.g. {missing[:3]}"
        )
    prior_mu = np.array([table[i][0] for i in log.ids], np.float64)
    prior_sigma = np.array([table[i][1] for i in log.ids], np.float64)
    write_jsonl(dataclasses.replace(log, prior_mu=prior_mu, prior_sigma=prior_sigma), out_path)
    print(f"wrote {out_path} with priors for {len(log.ids)} questions")


# --------------------------------------------------------------------------- eval


def evaluate_predictions(
    mean, std, test_records, train_median: tuple[float, float]
) -> dict[str, dict[str, float]]:
    """MAE of mu (score mean) and sigma (score std) for the model and both anchors.

    Args:
        mean: [Q] predicted score means.
        std: [Q] predicted score standard deviations.
        test_records: records with prm_mean, prm_std and the released predictor's values.
        train_median: (median prm_mean, median prm_std) of the training questions.

    Returns:
        {"model" | "constant_median" | "released": {"mae_mu", "mae_sigma"}}; the released
        entry is missing when the test file has no released predictions.
    """
    target_mu, target_sigma = prior.prm_targets(test_records, "--test")

    def mae(pred_mu, pred_sigma):
        return {
            "mae_mu": float(np.mean(np.abs(np.asarray(pred_mu, np.float64) - target_mu))),
            "mae_sigma": float(np.mean(np.abs(np.asarray(pred_sigma, np.float64) - target_sigma))),
        }

    result = {"model": mae(mean, std), "constant_median": mae(*train_median)}
    if all("released_predictor_mu" in r and "released_predictor_sigma" in r for r in test_records):
        result["released"] = mae(
            [float(r["released_predictor_mu"]) for r in test_records],
            [float(r["released_predictor_sigma"]) for r in test_records],
        )
    return result


def _eval(args: argparse.Namespace) -> int:
    out = pathlib.Path(args.out)
    predictor, model_dir = _predictor_to_evaluate(args, out)
    train_path = _training_data_path(args.data)
    train_mu, train_sigma = prior.prm_targets(read_jsonl(train_path), str(train_path))
    median = (float(np.median(train_mu)), float(np.median(train_sigma)))

    test_path = pathlib.Path(args.test) if args.test else data_path(MATH500_PRM_STATS)
    test_records = read_jsonl(test_path)
    mean, std = prior.predict_prior(predictor, test_records, progress=not args.quiet)
    scores = evaluate_predictions(mean, std, test_records, median)
    result = {
        "n": len(test_records),
        "test": test_path.name,
        "train": train_path.name,
        "seed": predictor.model.seed,
        "features": predictor.featuriser.kind
        + (f":{predictor.featuriser.embed_model}" if predictor.featuriser.embed_model else ""),
        "model_dir": str(model_dir),
        "target": "per-question sample mean (mu) and standard deviation (sigma) of PRM scores",
        "train_median": {"mu": median[0], "sigma": median[1]},
        **scores,
        "validation": {
            k: predictor.info.get(k) for k in ("n_train", "n_val", "val_mae_mu", "val_mae_sigma")
        },
    }
    write_json(result, out / "prior_eval.json")
    _write_test_predictions(test_records, mean, std, out / "math500_priors.jsonl")
    _print_scores(scores, len(test_records), test_path.name)
    print(f"wrote {out / 'prior_eval.json'} and {out / 'math500_priors.jsonl'}", file=sys.stderr)
    return 0


def _predictor_to_evaluate(
    args: argparse.Namespace, out: pathlib.Path
) -> tuple[prior.PriorPredictor, pathlib.Path]:
    """(predictor, its folder): --model, else one trained now and saved to OUT/model."""
    if args.model:
        return prior.load_prior(args.model), pathlib.Path(args.model)
    predictor = _train_from_args(args)
    return predictor, prior.save_prior(predictor, out / "model")


def _write_test_predictions(test_records, mean, std, path: pathlib.Path) -> None:
    """Per test question: predicted score moments (mu, sigma) and their truncated normal."""
    tn_mu, tn_sigma = prior.moments_to_truncnorm(mean, std)
    write_jsonl_records(
        (
            {
                "unique_id": prior.question_id(r, str(i)),
                "mu": float(m),
                "sigma": float(s),
                "tn_mu": float(a),
                "tn_sigma": float(b),
            }
            for i, (r, m, s, a, b) in enumerate(
                zip(test_records, mean, std, tn_mu, tn_sigma, strict=True)
            )
        ),
        path,
    )


def _print_scores(scores: dict[str, dict[str, float]], count: int, test_name: str) -> None:
    lines = [f"MAE on {count} questions of {test_name} (mu = score mean, sigma = score std):"]
    for name in ("model", "constant_median", "released"):
        if name in scores:
            lines.append(
                f"  {name:16s} mu {scores[name]['mae_mu']:.4f}  sigma {scores[name]['mae_sigma']:.4f}"
            )
    print("\n".join(lines))
