"""Additive regularisers: entropy bonus and KL penalty, aggregated like every loss."""

from typing import Optional

import jax
import jax.numpy as jnp

from rljax._src import aggregation as agg_lib
from rljax._src import kl as kl_lib
from rljax._src import types
from rljax._src import validation


def entropy_bonus(entropy: jax.Array,
                  mask: jax.Array,
                  coef: float = 0.0,
                  *,
                  aggregation: str = "token-mean",
                  max_tokens: Optional[int] = None,
                  normalizer: Optional[jax.Array] = None) -> types.LossOutput:
  r"""Entropy bonus :math:`\mathcal{L} = -c\cdot\mathrm{agg}(H_t)`; add it to a policy loss.

  `entropy` is the per-token entropy of the policy (e.g. `rljax.entropy_from_logits`), which
  carries the gradient. The coefficient defaults to 0 as in verl, TRL, Trinity-RFT and tunix.
  Metric ``entropy`` is the aggregated entropy.

  Args:
    entropy: [B, T] per-token entropies (differentiable).
    mask: [B, T] weights.
    coef: c >= 0.
    aggregation, max_tokens, normalizer: as in `rljax.aggregate`.

  Returns:
    `LossOutput(-coef * agg(entropy), {'entropy': agg(entropy)})`.
  """
  validation.check_token_inputs(entropy, mask)
  validation.check_positive("coef", coef, strict=False)
  h = agg_lib.aggregate(entropy, mask, aggregation, max_tokens=max_tokens, normalizer=normalizer)
  return types.LossOutput(-coef * h, {"entropy": jax.lax.stop_gradient(h)})


def kl_penalty_loss(logp: jax.Array,
                    ref_logp: jax.Array,
                    mask: jax.Array,
                    coef: float = 0.001,
                    *,
                    estimator: str = "k3",
                    clamp: Optional[float] = 20.0,
                    aggregation: str = "token-mean",
                    max_tokens: Optional[int] = None,
                    normalizer: Optional[jax.Array] = None) -> types.LossOutput:
  r"""KL-to-reference penalty :math:`\mathcal{L} = \beta\cdot\mathrm{agg}(\hat{KL}_t)` in the loss.

  The estimator is named explicitly (see `rljax.kl_divergence`): ``k3`` is GRPO's (arXiv
  2402.03300) and verl's ``low_var_kl``; ``k2`` is Trinity-RFT's; ``k1`` is tunix's GRPO default,
  whose expected gradient on-policy is **zero** (a k1 loss does not regularise). Coefficient
  default 0.001 as verl and Trinity-RFT (GRPO paper: 0.04; TRL: 0).

  Args:
    logp: [B, T] policy log-probs (carry the gradient).
    ref_logp: [B, T] reference log-probs (data).
    mask: [B, T] weights.
    coef: β >= 0.
    estimator: ``k1``, ``k2``, ``k3``, ``abs`` or ``mse``.
    clamp: bound on |log π - log π_ref| before the exponential.
    aggregation, max_tokens, normalizer: as in `rljax.aggregate`.

  Returns:
    `LossOutput(coef * agg(kl), {'kl': agg(kl)})`.
  """
  validation.check_positive("coef", coef, strict=False)
  kl = kl_lib.kl_divergence(logp, ref_logp, mask, estimator=estimator, clamp=clamp)
  value = agg_lib.aggregate(kl, mask, aggregation, max_tokens=max_tokens, normalizer=normalizer)
  return types.LossOutput(coef * value, {"kl": jax.lax.stop_gradient(value)})
