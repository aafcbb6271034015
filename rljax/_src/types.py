"""Output type shared by every rljax loss."""

from typing import Mapping, NamedTuple

import jax


class LossOutput(NamedTuple):
  """What every rljax loss returns.

  A NamedTuple, so `jax.value_and_grad(loss_fn, has_aux=True)` works directly on a function that
  returns `tuple(LossOutput)`, and so it passes through `jit`/`vmap` as a pytree.

  Attributes:
    loss: scalar float32, the quantity to *minimise*.
    metrics: mapping from name to scalar diagnostic (importance-ratio statistics, clip fractions,
      effective sample size, approximate KL, fraction of tokens the estimator masked, ...). Metrics
      never carry gradient.
  """

  loss: jax.Array
  metrics: Mapping[str, jax.Array]
