"""Tests of the OptScalet prior predictor: featurisers, training, persistence, embeddings, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from optscale_jax import prior
from optscale_jax.experiments.cli import main as cli_main

SUBJECTS = ("Algebra", "Geometry", "Number Theory")


def _records(count: int, seed: int) -> list[dict]:
    """Synthetic PRM-statistics records whose targets depend on subject, level and length."""
    rng = np.random.default_rng(seed)
    words = ["find", "the", "value", "of", "x", "triangle", "prime", "sum", "integer", "area"]
    records = []
    for i in range(count):
        subject = SUBJECTS[i % len(SUBJECTS)]
        level = int(rng.integers(1, 6))
        length = int(rng.integers(5, 40))
        text = " ".join(rng.choice(words, size=length)) + f" {subject.lower()} ${i % 7}$"
        mean = 0.95 - 0.04 * level - (0.1 if subject == "Geometry" else 0.0) + rng.normal(0, 0.01)
        std = 0.03 + 0.01 * level + (0.05 if subject == "Geometry" else 0.0)
        records.append(
            {
                "unique_id": f"q{i}",
                "problem": text,
                "subject": subject,
                "level": level,
                "prm_mean": float(np.clip(mean, 0.01, 0.99)),
                "prm_std": float(std),
            }
        )
    return records


def _tiny_config(**changes) -> prior.ModelConfig:
    values = dict(
        hidden=(16,),
        members=2,
        epochs=40,
        patience=40,
        batch_size=32,
        learning_rate=1e-2,
        input_dropout=0.0,
    )
    values.update(changes)
    return prior.ModelConfig(**values)


def _tiny_featuriser(records):
    return prior.fit_featuriser(records, word_buckets=64, char_buckets=64)


# --------------------------------------------------------------------------- hashing


def test_fnv1a_64_matches_published_test_vectors():
    # Test vectors of the FNV reference (fnv_test.c / Landon Curt Noll's page).
    assert prior.fnv1a_64(b"") == 0xCBF29CE484222325
    assert prior.fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert prior.fnv1a_64(b"foobar") == 0x85944171F73967E8


def test_featuriser_is_identical_across_processes_with_different_hash_seeds():
    records = _records(12, seed=3)
    config = prior.fit_featuriser(records)
    here = hashlib.sha256(prior.featurise(records, config).tobytes()).hexdigest()
    script = (
        "import hashlib, json, sys\n"
        "from optscale_jax import prior\n"
        "records, config = json.loads(sys.stdin.read())\n"
        "config = prior.FeaturiserConfig.from_json(config)\n"
        "print(hashlib.sha256(prior.featurise(records, config).tobytes()).hexdigest())\n"
    )
    payload = json.dumps([records, config.to_json()])
    digests = set()
    for hash_seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=payload,
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        digests.add(done.stdout.strip())
    assert digests == {here}


def test_featurise_layout_metadata_and_normalisation():
    records = _records(9, seed=0)
    config = _tiny_featuriser(records)
    features = prior.featurise(records, config)
    n_length = len(prior._LENGTH_FEATURES)
    n_meta = len(config.levels) + 1 + len(config.subjects) + 1
    assert features.shape == (9, n_length + n_meta + 64 + 64)
    assert features.dtype == np.float32
    meta = features[:, n_length : n_length + n_meta]
    assert np.all(meta.sum(axis=1) == 2)  # one level column and one subject column
    levels = [config.levels[i] for i in np.argmax(meta[:, : len(config.levels) + 1], axis=1)]
    assert levels == [r["level"] for r in records]
    # Each hashed block is unit-norm per row.
    words = features[:, n_length + n_meta : n_length + n_meta + 64]
    np.testing.assert_allclose(np.linalg.norm(words, axis=1), 1.0, rtol=1e-5)
    # Unknown subject and missing level land in the "other" columns.
    odd = [{"problem": "what is 1+1?", "subject": "Astrology"}]
    odd_meta = prior.featurise(odd, config)[0, n_length : n_length + n_meta]
    assert odd_meta[len(config.levels)] == 1 and odd_meta[-1] == 1


def test_tokenize_splits_latex_numbers_and_symbols():
    assert prior.tokenize(r"Find $\frac{12}{x}$ NOW") == [
        "find",
        "$",
        "\\frac",
        "{",
        "12",
        "}",
        "{",
        "x",
        "}",
        "$",
        "now",
    ]


def test_parse_features_and_question_fields():
    assert prior.parse_features("hashed") == ("hashed", None)
    assert prior.parse_features("embed:/m/x") == ("embed", "/m/x")
    with pytest.raises(ValueError, match="^features: "):
        prior.parse_features("embed:")
    with pytest.raises(ValueError, match="f.jsonl:3"):
        prior.question_text({"id": 1}, where="f.jsonl:3")
    assert prior.question_id({"unique_id": "u"}, "7") == "u"
    assert prior.question_id({}, "7") == "7"


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained():
    records = _records(240, seed=1)
    config = _tiny_featuriser(records)
    features = prior.featurise(records, config)
    mu, sigma = prior.prm_targets(records)
    predictor = prior.train_prior(features, mu, sigma, config, _tiny_config(), progress=False)
    return records, features, mu, sigma, predictor


def test_training_lowers_the_loss_below_the_constant_start(trained):
    import jax

    records, features, mu, sigma, predictor = trained
    model = predictor.model
    start = prior.init_mlp(
        jax.random.PRNGKey(0),
        features.shape[1],
        model.hidden,
        predictor.info["train_median_mu"],
        predictor.info["train_median_sigma"],
    )
    member0 = jax.tree_util.tree_map(lambda a: a[0], predictor.params)
    loss_start = float(prior.prior_loss(start, features, mu, sigma, model))
    loss_end = float(prior.prior_loss(member0, features, mu, sigma, model))
    assert loss_end < 0.6 * loss_start
    # An untrained network predicts the training medians (the constant anchor).
    mu0, sigma0 = prior.mlp_forward(start, features)
    np.testing.assert_allclose(mu0, predictor.info["train_median_mu"], atol=0.02)
    # Held-out validation error beats the constant median on this learnable set.
    assert predictor.info["val_mae_mu"] < predictor.info["val_mae_mu_constant"]
    assert predictor.info["val_mae_sigma"] < predictor.info["val_mae_sigma_constant"]


def test_training_is_seeded(trained):
    records, features, mu, sigma, predictor = trained
    again = prior.train_prior(
        features, mu, sigma, predictor.featuriser, predictor.model, progress=False
    )
    for a, b in zip(
        prior._flatten_params(predictor.params).values(),
        prior._flatten_params(again.params).values(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_save_load_round_trip_is_bitwise(trained, tmp_path):
    records, features, mu, sigma, predictor = trained
    prior.save_prior(predictor, tmp_path / "model")
    loaded = prior.load_prior(tmp_path / "model")
    assert loaded.featuriser == predictor.featuriser
    assert loaded.model == predictor.model
    before = prior.predict_prior(predictor, records)
    after = prior.predict_prior(loaded, records)
    for a, b in zip(before, after, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert np.all(after[1] > 0) and np.all((after[0] > 0) & (after[0] < 1))
    # No pickle anywhere: the folder holds JSON and safetensors only.
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(
        [prior.CONFIG_FILE, prior.WEIGHTS_FILE]
    )


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="^model: "):
        prior.load_prior(tmp_path)
    (tmp_path / prior.CONFIG_FILE).write_text("{not json")
    (tmp_path / prior.WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(ValueError, match=prior.CONFIG_FILE):
        prior.load_prior(tmp_path)


def test_train_rejects_bad_targets():
    config = prior.fit_featuriser(_records(4, 0))
    with pytest.raises(ValueError, match="sigma"):
        prior.train_prior(
            np.zeros((4, 3), np.float32), np.full(4, 0.5), np.array([0.1, -1, 0.1, 0.1]), config
        )


def test_moments_to_truncnorm_matches_the_moments():
    from scipy import stats

    mean = np.array([0.5, 0.7, 0.9, 0.3])
    std = np.array([0.2, 0.1, 0.05, 0.15])
    mu, sigma = prior.moments_to_truncnorm(mean, std)
    a, b = (0 - mu) / sigma, (1 - mu) / sigma
    np.testing.assert_allclose(stats.truncnorm.mean(a, b, mu, sigma), mean, atol=1e-5)
    np.testing.assert_allclose(stats.truncnorm.std(a, b, mu, sigma), std, atol=1e-5)


# --------------------------------------------------------------------------- embeddings


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A randomly initialised 2-layer Llama (hidden 64) with a tokenizer trained here."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_llama")
    corpus = [r["problem"] for r in _records(60, seed=5)]
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        corpus, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "[EOS]"])
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=fast.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
    )
    LlamaModel(config).save_pretrained(folder)
    return folder


def test_embed_texts_shape_order_and_padding_invariance(tiny_model_dir):
    from optscale_jax.embeddings import embed_texts

    texts = ["find the value of x", "the sum of the area of a triangle is an integer prime", "x"]
    together = embed_texts(texts, tiny_model_dir, batch_size=3)
    assert together.shape == (3, 64) and together.dtype == np.float32
    assert np.all(np.isfinite(together))
    alone = np.stack([embed_texts([t], tiny_model_dir)[0] for t in texts])
    # Padding is masked out of the mean, and the input order is kept.
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert not np.allclose(together[0], together[1])


def test_mean_pool_ignores_padding():
    from optscale_jax.embeddings import mean_pool

    hidden = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask), [hidden[0, :2].mean(0), hidden[1, 0]])


def test_embed_features_train_save_load(tiny_model_dir, tmp_path):
    records = _records(48, seed=2)
    config = prior.fit_featuriser(records, "embed", embed_model=str(tiny_model_dir))
    features = prior.featurise(records, config)
    assert (
        features.shape[1]
        == len(prior._LENGTH_FEATURES) + len(config.levels) + len(config.subjects) + 2 + 64
    )
    mu, sigma = prior.prm_targets(records)
    predictor = prior.train_prior(
        features, mu, sigma, config, _tiny_config(epochs=3), progress=False
    )
    prior.save_prior(predictor, tmp_path)
    loaded = prior.load_prior(tmp_path)
    for a, b in zip(
        prior.predict_prior(predictor, records), prior.predict_prior(loaded, records), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_embed_missing_model_is_a_clear_error(tmp_path):
    from optscale_jax.embeddings import embed_texts

    with pytest.raises(FileNotFoundError, match="no model"):
        embed_texts(["x"], tmp_path / "absent")


# --------------------------------------------------------------------------- CLI


def _write_jsonl(path: pathlib.Path, records) -> pathlib.Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_cli_train_predict_write_log_and_eval(tmp_path, capsys):
    from optscale_jax.logs import read_log

    records = _records(120, seed=4)
    train_file = _write_jsonl(tmp_path / "train.jsonl", records[:90])
    test_records = [
        dict(r, released_predictor_mu=0.4, released_predictor_sigma=0.1) for r in records[90:]
    ]
    test_file = _write_jsonl(tmp_path / "test.jsonl", test_records)
    common = [
        "--data",
        str(train_file),
        "--epochs",
        "5",
        "--members",
        "2",
        "--hidden",
        "8",
        "--quiet",
    ]

    assert cli_main(["prior", "train", "--out", str(tmp_path / "m"), *common]) == 0
    questions = _write_jsonl(
        tmp_path / "q.jsonl", [{"id": r["unique_id"], "problem": r["problem"]} for r in records[:5]]
    )
    log = _write_jsonl(
        tmp_path / "log.jsonl", [{"id": r["unique_id"], "scores": [0.5, 0.9]} for r in records[:5]]
    )
    assert (
        cli_main(
            [
                "prior",
                "predict",
                "--model",
                str(tmp_path / "m"),
                "--questions",
                str(questions),
                "--out",
                str(tmp_path / "p.jsonl"),
                "--log",
                str(log),
                "--write-log",
                str(tmp_path / "log2.jsonl"),
            ]
        )
        == 0
    )
    predicted = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predicted] == [r["unique_id"] for r in records[:5]]
    assert all(p["sigma"] > 0 for p in predicted)
    written = read_log(tmp_path / "log2.jsonl")
    np.testing.assert_allclose(written.prior_mu, [p["mu"] for p in predicted])
    np.testing.assert_allclose(written.prior_sigma, [p["sigma"] for p in predicted])

    assert (
        cli_main(["prior", "eval", "--out", str(tmp_path / "e"), "--test", str(test_file), *common])
        == 0
    )
    result = json.loads((tmp_path / "e" / "prior_eval.json").read_text())
    target = np.array([r["prm_mean"] for r in test_records])
    assert result["n"] == 30 and result["features"] == "hashed" and result["seed"] == 0
    median = np.median([r["prm_mean"] for r in records[:90]])
    assert result["constant_median"]["mae_mu"] == pytest.approx(np.mean(np.abs(target - median)))
    assert result["released"]["mae_mu"] == pytest.approx(np.mean(np.abs(target - 0.4)))
    rows = [
        json.loads(line)
        for line in (tmp_path / "e" / "math500_priors.jsonl").read_text().splitlines()
    ]
    assert [r["unique_id"] for r in rows] == [r["unique_id"] for r in test_records]
    model_mae = np.mean(np.abs(np.array([r["mu"] for r in rows]) - target))
    assert result["model"]["mae_mu"] == pytest.approx(model_mae)


def test_cli_errors_name_the_argument(tmp_path, capsys):
    assert cli_main(["prior", "train", "--out", str(tmp_path), "--features", "bert"]) == 2
    assert "--features" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "x"}\nnot json\n')
    assert cli_main(["prior", "train", "--out", str(tmp_path), "--data", str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_study_prior_tables(trained):
    from optscale_jax.experiments.prior_study import prior_tables

    records, _, _, _, predictor = trained
    test = [
        dict(r, released_predictor_mu=0.3, released_predictor_sigma=-0.01 if i == 0 else 0.05)
        for i, r in enumerate(records[:6])
    ]
    tables = prior_tables(test, predictor, records)
    mean, std = prior.predict_prior(predictor, test)
    learned = prior.moments_to_truncnorm(mean, std)
    np.testing.assert_array_equal(tables["learned"][0], learned[0])
    np.testing.assert_array_equal(tables["learned"][1], learned[1])
    assert np.ptp(tables["constant"][0]) == 0 and np.all(tables["constant"][1] > 0)
    # A negative released sigma (three occur in the shipped file) is floored, not passed on.
    np.testing.assert_allclose(tables["released"][1], [1e-3] + [0.05] * 5)
