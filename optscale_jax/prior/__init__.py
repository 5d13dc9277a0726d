"""The OptScalet prior predictor: question text -> (mu, sigma) of its verifier-score law.

Pipeline (each arrow one function, each stage one module):

    question records -> features (`fit_featuriser`, `featurise`; `features`, `hashing`)
                     -> an ensemble of small MLPs (`init_mlp`, `mlp_forward`; `model`)
                     -> trained with optax on per-question PRM statistics
                        (`train_prior`, `train_prior_from_records`; `training`, `targets`)
                     -> saved as safetensors + JSON (`save_prior`, `load_prior`; `persistence`)
                     -> (mu, sigma) per question (`predict_prior`; `model`)
                     -> truncated-normal priors (`moments_to_truncnorm`, `write_prior_file`).

Example:
    >>> from optscale_jax import prior
    >>> predictor = prior.train_prior_from_records(records, config=prior.ModelConfig(seed=0))
    >>> mean, std = prior.predict_prior(predictor, questions)
    >>> mu, sigma = prior.moments_to_truncnorm(mean, std)
"""

from optscale_jax.prior.features import (
    _LENGTH_FEATURES,  # noqa: F401 (tests count the feature columns)
    FeaturiserConfig,
    featurise,
    fit_featuriser,
    parse_features,
    question_id,
    question_text,
)
from optscale_jax.prior.hashing import fnv1a_64, tokenize
from optscale_jax.prior.model import (
    ModelConfig,
    PriorPredictor,
    init_mlp,
    mlp_forward,
    predict_from_features,
    predict_prior,
    prior_loss,
)
from optscale_jax.prior.persistence import (
    CONFIG_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    _flatten_params,  # noqa: F401 (tests compare saved tensors)
    load_prior,
    save_prior,
)
from optscale_jax.prior.targets import moments_to_truncnorm, prm_targets, write_prior_file
from optscale_jax.prior.training import train_prior, train_prior_from_records

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "FeaturiserConfig",
    "ModelConfig",
    "PriorPredictor",
    "featurise",
    "fit_featuriser",
    "fnv1a_64",
    "init_mlp",
    "load_prior",
    "mlp_forward",
    "moments_to_truncnorm",
    "parse_features",
    "predict_from_features",
    "predict_prior",
    "prior_loss",
    "prm_targets",
    "question_id",
    "question_text",
    "save_prior",
    "tokenize",
    "train_prior",
    "train_prior_from_records",
    "write_prior_file",
]
