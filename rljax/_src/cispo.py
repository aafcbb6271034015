"""CISPO: REINFORCE weighted by a clipped, stop-gradient importance ratio (MiniMax-M1)."""

from typing import Optional

import jax
import jax.numpy as jnp

from rljax._src import aggregation as agg_lib
from rljax._src import ppo
from rljax._src import ratios
from rljax._src import types
from rljax._src import validation


def cispo_loss(logp: jax.Array,
               old_logp: jax.Array,
               advantages: jax.Array,
               mask: jax.Array,
               *,
               epsilon_low: Optional[float] = None,
               epsilon_high: float,
               mask_clipped: bool = False,
               clamp: Optional[float] = ratios.DEFAULT_CLAMP,
               is_weights: Optional[jax.Array] = None,
               aggregation: str = "token-mean",
               max_tokens: Optional[int] = None,
               normalizer: Optional[jax.Array] = None) -> types.LossOutput:
  r"""CISPO: :math:`\mathcal{L} = -\mathrm{agg}_{i,t}\big(\mathrm{sg}(\hat r_{i,t})\,A_{i,t}\,\log\pi_\theta(y_{i,t})\big)`.

  MiniMax, "MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning Attention", arXiv
  2506.13585 (Clipped IS-weight Policy Optimization), with

  .. math::

     \hat r_{i,t} = \mathrm{clip}\big(\rho_{i,t},\, 1-\epsilon_\text{low},\, 1+\epsilon_\text{high}\big),
     \qquad \rho_{i,t} = \exp(\log\pi_\theta(y_{i,t}) - \log\pi_{old}(y_{i,t})).

  Unlike PPO, no token loses its gradient: the *weight* is clipped and stopped, and the gradient
  is :math:`\hat r\,A\,\nabla\log\pi_\theta`. Inside the window it equals PPO's
  :math:`\rho A\nabla\log\pi_\theta`; for :math:`A>0,\ \rho>1+\epsilon_\text{high}` PPO's gradient
  is 0 and CISPO's is :math:`(1+\epsilon_\text{high})A\nabla\log\pi_\theta`. The paper's unified
  form multiplies by a PPO-style mask :math:`M_{i,t}=0` where
  (:math:`A>0,\ \rho>1+\epsilon_\text{high}`) or (:math:`A<0,\ \rho<1-\epsilon_\text{low}`):
  ``mask_clipped=True`` (masked tokens stay in the normaliser, as in the paper's
  :math:`1/\sum_i|o_i|`).

  ``epsilon_high`` has PPO's meaning (the cap is :math:`1+\epsilon_\text{high}`) and is
  **required**: the paper tunes it and publishes no default, and a silent default is exactly
  the footgun of TRL, where an unset ``epsilon_high`` falls back to ``epsilon`` = 0.2 used as an
  *absolute* cap, so every on-policy token gets weight 0.2. ``epsilon_low`` defaults to None, no
  lower bound, as the paper ("we did not impose a lower bound on the IS weight by setting
  ε_low to a large value"). Aggregation defaults to ``token-mean``, the paper's
  :math:`1/\sum_i |o_i|`. Log-ratios are clamped to ±`clamp` (±20) before ``exp``.

  How the peers differ, and the keywords that reproduce each:

  * TRL ``loss_type='cispo'``: :math:`\min(\rho, \epsilon_\text{high}^{TRL})`, an absolute cap
    with no lower bound and no clamp: ``epsilon_high=eps_trl - 1, epsilon_low=None, clamp=None``
    (TRL's recommended 5.0 is ``epsilon_high=4.0``).
  * verl ``cispo``: both sides clipped with PPO's keys, default [0.8, 1.2]:
    ``epsilon_low=0.2, epsilon_high=0.2``.
  * Trinity-RFT ``cispo``: [0, 1.28], no clamp: ``epsilon_low=1.0, epsilon_high=0.28,
    clamp=None``; its ``enable_mask_clip`` is ``mask_clipped=True`` (with the same ε). Older
    Trinity-RFT versions (e.g. commit a5313278) always apply that mask, with no switch.

  Args:
    logp: [B, T] log π_θ of the sampled tokens (carries the gradient).
    old_logp: [B, T] log π_old (data).
    advantages: [B] or [B, T] advantages (data).
    mask: [B, T] weights, 1 on tokens that count. Masked entries may be ±inf.
    epsilon_low: None (no lower bound, the paper) or ε_low >= 0 (floor 1 - ε_low).
    epsilon_high: ε_high >= 0 (cap 1 + ε_high). Required.
    mask_clipped: zero the tokens outside PPO's trust region (the paper's unified form).
    clamp: bound on |log-ratio| before ``exp``, or None (TRL, Trinity-RFT).
    is_weights: optional [B, T] or [B] rollout-correction weights multiplying the per-token loss
      (data).
    aggregation: aggregation mode (see `rljax.aggregate`).
    max_tokens: budget for ``seq-mean-token-sum-norm``.
    normalizer: external denominator for exact gradient accumulation.

  Returns:
    `LossOutput(loss, metrics)`. Metrics (scalars; token means over `mask`): ``ratio_mean``,
    ``ratio_min``, ``ratio_max``, ``approx_kl``, ``log_ratio_clamped_frac`` (token ratios);
    ``clip_frac_low`` (A < 0 and ρ < 1 - ε_low), ``clip_frac_high`` (A > 0 and ρ > 1 + ε_high),
    ``clip_frac`` (their union: PPO's zero-gradient tokens); ``weight_clip_frac`` (ρ outside the
    window whatever the sign of A: the weights CISPO clipped); ``weight_mean`` (mean of
    :math:`\hat r`); ``masked_frac`` (tokens zeroed by ``mask_clipped`` or a zero IS weight; 0
    otherwise); ``ess`` (over sequence log-ratios); ``is_weight_mean`` when given.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> lp = jnp.log(jnp.array([[.5, .25]]))
    >>> out = rljax.cispo_loss(lp, lp, jnp.array([2.]), jnp.ones((1, 2)), epsilon_high=0.2)
    >>> round(float(out.loss), 4)  # on-policy weight 1: REINFORCE, -2 (log .5 + log .25) / 2
    2.0794
  """
  validation.check_positive("epsilon_low", epsilon_low, allow_none=True, strict=False)
  validation.check_positive("epsilon_high", epsilon_high, strict=False)
  if not isinstance(mask_clipped, bool):
    raise ValueError(f"mask_clipped must be a Python bool, got {mask_clipped!r}.")
  x = ratios.token_inputs(logp, old_logp, advantages, mask, clamp=clamp, aggregation=aggregation)
  r = jnp.exp(jax.lax.stop_gradient(x.d))
  # No lower bound is a floor of 0, i.e. epsilon_low = 1.
  clip = ratios.ppo_clip(r, x.adv, 1.0 if epsilon_low is None else epsilon_low, epsilon_high)
  floor = 0.0 if epsilon_low is None else 1.0 - epsilon_low
  weight = jnp.clip(r, floor, 1.0 + epsilon_high)  # data: the ratio is already stopped.

  lp = jnp.where(x.valid, logp.astype(jnp.float32), 0.0)
  per_token = -weight * x.adv * lp
  zeroed = (clip.low | clip.high) if mask_clipped else jnp.zeros_like(x.valid)
  means = dict(clip.fractions(), weight_mean=weight,
               weight_clip_frac=((r < floor) | (r > 1.0 + epsilon_high)).astype(jnp.float32))
  if is_weights is not None:
    w = jnp.where(x.valid, ppo.token_weights(is_weights, logp, "is_weights"), 0.0)
    per_token = per_token * w
    zeroed = zeroed | (x.valid & (w == 0))
    means["is_weight_mean"] = w
  per_token = jnp.where(zeroed, 0.0, per_token)
  loss = agg_lib.aggregate(per_token, x.m, aggregation, max_tokens=max_tokens,
                           normalizer=normalizer)
  metrics = ratios.token_loss_metrics(x, clamp, means=dict(means, masked_frac=zeroed))
  return ratios.loss_output(loss, metrics)
