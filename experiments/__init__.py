"""Experiments on top of the optscale_jax core: log I/O, replay, priors, benchmarks, the CLI."""
