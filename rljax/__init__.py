"""rljax: policy-gradient estimators for RL fine-tuning of language models, in JAX.

Every estimator is a pure function of log-probabilities, advantages and masks returning
`LossOutput(loss, metrics)`. Importing `rljax` pulls in jax and chex only; the harness
sub-packages (`rljax.models`, `rljax.sampling`, `rljax.data`, `rljax.train`) are imported
explicitly and load flax, optax, orbax and TFDS themselves.
"""

__version__ = "0.1.0"
