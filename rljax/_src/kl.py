"""Sampled-token KL estimators (k1, k2, k3, abs, mse) between the policy and a reference."""

from typing import Optional

import jax
import jax.numpy as jnp

from rljax._src import ratios
from rljax._src import validation

KL_ESTIMATORS = ("k1", "k2", "k3", "abs", "mse")


def kl_divergence(logp: jax.Array,
                  ref_logp: jax.Array,
                  mask: jax.Array,
                  *,
                  estimator: str = "k3",
                  clamp: Optional[float] = ratios.DEFAULT_CLAMP) -> jax.Array:
  r"""Per-token estimate of KL(π_θ‖π_ref) from tokens sampled under π_θ.

  Schulman, "Approximating KL Divergence" (2020), with :math:`d = \log\pi_\theta - \log\pi_{ref}`:

  * ``k1`` = :math:`d` (unbiased for the value; **as a loss its expected gradient on-policy is
    zero**, :math:`\mathbb{E}_\pi[\nabla\log\pi] = 0`, so it regularises nothing; tunix's GRPO default).
  * ``k2`` = ``mse`` = :math:`\tfrac12 d^2` (biased value; as a loss its expected gradient is exactly
    :math:`\nabla \mathrm{KL}(\pi_\theta\|\pi_{ref})`; Trinity-RFT's default).
  * ``k3`` = :math:`e^{-d} + d - 1 \ge 0` (unbiased, low variance; GRPO, arXiv 2402.03300; verl's
    ``low_var_kl``, TRL). As a loss its expected gradient is :math:`\nabla\mathrm{KL}(\pi_{ref}\|\pi_\theta)`,
    the forward KL.
  * ``abs`` = :math:`|d|`.

  `ref_logp` is data (stop-gradient). With `clamp`, :math:`d` is clamped to ±clamp before the
  exponential (verl clamps at 20), so k3 is at most :math:`e^{20}`; verl additionally clips the k3
  *value* to [-10, 10] (apply `jnp.clip` to the result to reproduce it). Masked tokens are 0.

  Args:
    logp: [B, T] log-probs under the policy (carries the gradient).
    ref_logp: [B, T] log-probs under the reference policy.
    mask: [B, T] weights.
    estimator: one of `KL_ESTIMATORS`.
    clamp: bound on |d| or None.

  Returns:
    [B, T] float32 per-token estimates, 0 on masked tokens; aggregate them with `rljax.aggregate`.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> lp, ref, m = jnp.log(jnp.array([[.5]])), jnp.log(jnp.array([[.25]])), jnp.ones((1, 1))
    >>> round(float(rljax.kl_divergence(lp, ref, m, estimator='k3')[0, 0]), 4)  # 0.5 + log 2 - 1
    0.1931
  """
  validation.check_token_inputs(logp, mask, ref_logp=ref_logp)
  validation.check_choice("estimator", estimator, KL_ESTIMATORS)
  d = ratios.log_ratio(logp, ref_logp, mask, level="token", clamp=clamp)
  if estimator == "k1":
    kl = d
  elif estimator in ("k2", "mse"):
    kl = 0.5 * jnp.square(d)
  elif estimator == "k3":
    kl = jnp.expm1(-d) + d
  else:
    kl = jnp.abs(d)
  return jnp.where(validation.mask_as_float(mask) > 0, kl, 0.0)
