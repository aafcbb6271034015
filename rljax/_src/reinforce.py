"""On-policy REINFORCE (the template every other loss in rljax follows)."""

from typing import Optional

import jax
import jax.numpy as jnp

from rljax._src import aggregation as agg_lib
from rljax._src import types
from rljax._src import validation


def reinforce_loss(logp: jax.Array,
                   advantages: jax.Array,
                   mask: jax.Array,
                   *,
                   aggregation: str = "token-mean",
                   max_tokens: Optional[int] = None,
                   normalizer: Optional[jax.Array] = None) -> types.LossOutput:
  r"""REINFORCE: :math:`\mathcal{L} = -\mathrm{agg}_{i,t}\big(\mathrm{sg}(A_{i,t})\,\log\pi_\theta(y_{i,t})\big)`.

  Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement
  learning", Machine Learning 8 (1992). Any baseline (RLOO, group mean, ...) is already in
  `advantages`; with a baseline that does not depend on the sample the gradient is unbiased
  for the policy gradient of the samples' policy. Only correct on-policy: for data from another
  policy use `ppo_clip_loss`, `cispo_loss` or `topr_loss`.

  With ``aggregation='seq-mean-token-sum'`` and sequence advantages this is exactly
  :math:`-\frac1B\sum_i A_i \log\pi_\theta(y_i)` (the whole completion as one action, RLOO's form).

  Args:
    logp: [B, T] log π_θ of the sampled tokens (carries the gradient).
    advantages: [B] or [B, T] advantages (data).
    mask: [B, T] weights, 1 on completion tokens.
    aggregation: aggregation mode (see `rljax.aggregate`).
    max_tokens: budget for ``seq-mean-token-sum-norm``.
    normalizer: external denominator for exact gradient accumulation (see
      `rljax.aggregation_normalizer`).

  Returns:
    `LossOutput(loss, metrics)` with metrics ``advantage_mean`` and ``logp_mean`` (token means).

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> out = rljax.reinforce_loss(jnp.log(jnp.array([[.5, .25]])), jnp.array([2.]),
    ...                            jnp.ones((1, 2)))
    >>> round(float(out.loss), 4)  # -2 * (log .5 + log .25) / 2
    2.0794
  """
  validation.check_token_inputs(logp, mask)
  adv = jax.lax.stop_gradient(validation.advantages_as_tokens(advantages, logp))
  loss = agg_lib.aggregate_advantage_weighted(logp, advantages, mask, aggregation,
                                              max_tokens=max_tokens, normalizer=normalizer)
  m = validation.mask_as_float(mask)
  lp = jnp.where(m > 0, logp.astype(jnp.float32), 0.0)
  metrics = agg_lib.masked_stats(m, means={"advantage_mean": adv, "logp_mean": lp})
  return types.LossOutput(loss, metrics)
