"""Tapered Off-Policy REINFORCE (TOPR)."""

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from rljax._src import aggregation as agg_lib
from rljax._src import ratios
from rljax._src import types
from rljax._src import validation


def _check_bounds(name: str, bounds) -> Tuple[float, float]:
  try:
    low, high = (float(b) for b in bounds)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a pair (low, high) of floats, got {bounds!r}.") from None
  if not (0.0 <= low <= high) or low == float("inf"):
    raise ValueError(f"{name} must satisfy 0 <= low <= high (high may be inf), got {bounds!r}.")
  return low, high


def topr_loss(logp: jax.Array,
              behavior_logp: jax.Array,
              rewards: jax.Array,
              mask: jax.Array,
              *,
              baseline: float = 0.0,
              level: str = "sequence-sum",
              negative_bounds: Tuple[float, float] = (0.0, 1.0),
              positive_bounds: Tuple[float, float] = (1.0, 1.0),
              clamp: Optional[float] = ratios.DEFAULT_CLAMP,
              aggregation: str = "seq-mean-token-mean",
              max_tokens: Optional[int] = None,
              normalizer: Optional[jax.Array] = None) -> types.LossOutput:
  r"""Tapered Off-Policy REINFORCE: SFT-like on positives, truncated IS on negatives.

  Le Roux, Bellemare, Lebensold, Bergeron, Greaves, Fréchette, Pelletier, Thibodeau-Laufer,
  Toth and Work, "Tapered Off-Policy REINFORCE: Stable and efficient reinforcement learning for
  LLMs", arXiv 2503.14286. With data drawn from a fixed behaviour policy :math:`\mu`,
  :math:`A(\tau) = R(\tau) - c` and the trajectory ratio :math:`\rho(\tau) = \pi(\tau)/\mu(\tau)`,
  TOPR follows

  .. math::
     \nabla J = \sum_{A(\tau)\ge 0} \mu(\tau)\,A(\tau)\,\nabla\log\pi(\tau)
       + \sum_{A(\tau)<0} \mu(\tau)\,[\rho(\tau)]_0^1\,A(\tau)\,\nabla\log\pi(\tau),

  as the per-token loss :math:`\ell_t = -\mathrm{sg}(w)\,A\,\log\pi_\theta(y_t)` with
  :math:`w = \mathrm{clip}(\rho, a^+, b^+)` when :math:`A \ge 0` and
  :math:`w = \mathrm{clip}(\rho, a^-, b^-)` when :math:`A < 0`. The paper's TOPR is
  :math:`[a^+, b^+] = [1, 1]` (positives get weight exactly 1, whatever the ratio: their gradient
  does not depend on :math:`\mu`) and :math:`[a^-, b^-] = [0, 1]` (a negative whose probability
  fell below :math:`\mu` contributes :math:`A\nabla\pi(\tau)`, which vanishes as
  :math:`\pi(\tau)\to 0`, instead of naive REINFORCE's constant push; one whose ratio is above 1
  gets weight exactly 1, not 0 as in PPO). The paper's Table 1 recovers other methods by the
  bounds: naive REINFORCE is ``positive_bounds=negative_bounds=(1, 1)``, importance-sampled
  REINFORCE ``(0, inf)`` on both, truncated IS ``(0, 1)`` on both.

  The baseline :math:`c` sets the effective share of positives: with ±1 rewards and a fraction
  :math:`p` of positives it is :math:`\tilde p = p(1-c)/(1 + c(1-2p))` (paper §4; reported as the
  metric ``effective_positive_frac`` = :math:`\sum_{A\ge0}|A| / \sum|A|`). The paper's defaults:
  ±1 rewards, ``baseline=0``, no KL, the loss of each sequence divided by its length
  (``aggregation='seq-mean-token-mean'``).

  Ratio level: the paper truncates the whole-trajectory ratio ``level='sequence-sum'``
  (:math:`\exp\sum_t m_t d_t`, clamped to ±`clamp` in log space). Trinity-RFT's ``topr`` uses
  per-token ratios and token-mean aggregation with no clamp: ``level='token',
  aggregation='token-mean', clamp=None`` reproduces it (Trinity calls a token negative when
  :math:`A \le 0` rather than :math:`A < 0`; a zero-advantage token contributes nothing either way,
  so the loss is identical). ``level='sequence'`` (length-normalised ratio, described in a later
  verl doc) is a third variant, not the paper's. verl, TRL and tunix have no TOPR.

  The weight is data (stop-gradient), so clamping the log-ratio never changes the gradient
  direction; it only keeps ``exp`` finite.

  Args:
    logp: [B, T] log π_θ of the sampled tokens (carries the gradient).
    behavior_logp: [B, T] log μ of the same tokens (data).
    rewards: [B] sequence rewards (or [B, T] per-token returns or advantages), data.
    mask: [B, T] weights, 1 on completion tokens.
    baseline: c, subtracted from `rewards` (0 in the paper).
    level: ratio level, one of `rljax.RATIO_LEVELS` (``'sequence-sum'`` is the paper's).
    negative_bounds: (a⁻, b⁻) truncation of the ratio where A < 0; ``b`` may be ``inf``.
    positive_bounds: (a⁺, b⁺) truncation of the ratio where A ≥ 0.
    clamp: bound on |log-ratio| before ``exp`` (None disables it).
    aggregation: aggregation mode (see `rljax.aggregate`).
    max_tokens: budget for ``seq-mean-token-sum-norm``.
    normalizer: external denominator for exact gradient accumulation.

  Returns:
    `LossOutput(loss, metrics)` with the token-ratio statistics ``ratio_mean/min/max``,
    ``approx_kl``, ``log_ratio_clamped_frac``, ``ess`` (of the trajectory log-ratios),
    ``weight_mean`` (token mean of w), ``negative_frac`` (token fraction with A < 0),
    ``capped_frac`` (token fraction where A < 0 and the ratio exceeded b⁻), ``masked_frac``
    (token fraction with w = 0) and ``effective_positive_frac``.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> logp = jnp.log(jnp.array([[.5, .5], [.5, .5]]))
    >>> behavior = jnp.log(jnp.array([[.5, .5], [1., 1.]]))  # row 1: ratio 1/4
    >>> out = rljax.topr_loss(logp, behavior, jnp.array([1., -1.]), jnp.ones((2, 2)))
    >>> # row 0: -1 * log .5 = .6931; row 1: -(1/4)(-1) log .5 = -.1733; mean of the two
    >>> round(float(out.loss), 4)
    0.2599
  """
  validation.check_token_inputs(logp, mask, behavior_logp=behavior_logp)
  validation.check_choice("aggregation", aggregation, agg_lib.AGGREGATION_MODES)
  validation.check_choice("level", level, ratios.RATIO_LEVELS)
  neg_low, neg_high = _check_bounds("negative_bounds", negative_bounds)
  pos_low, pos_high = _check_bounds("positive_bounds", positive_bounds)
  rewards = jnp.asarray(rewards)
  if rewards.ndim == 2:
    validation.check_shape("rewards", rewards, logp.shape)
  else:
    validation.check_sequence_array("rewards", rewards, logp.shape[0])
  m = validation.mask_as_float(mask)
  valid = m > 0
  adv = jax.lax.stop_gradient(validation.advantages_as_tokens(rewards, logp) - baseline)
  adv = jnp.where(valid, adv, 0.0)
  lp = jnp.where(valid, logp.astype(jnp.float32), 0.0)

  token_d = ratios.log_ratio(logp, behavior_logp, mask, level="token", clamp=clamp)
  if level == "token":
    d = token_d
  else:
    d = ratios.log_ratio(logp, behavior_logp, mask, level=level, clamp=clamp)[:, None]
  rho = jnp.exp(jax.lax.stop_gradient(d))
  taper = lambda rho, negative: jnp.where(negative, jnp.clip(rho, neg_low, neg_high),
                                          jnp.clip(rho, pos_low, pos_high))
  negative = adv < 0
  w = jax.lax.stop_gradient(jnp.broadcast_to(taper(rho, negative), logp.shape))
  if rewards.ndim == 1 and level != "token":
    # Sequence rewards and a sequence-level ratio make the token weight w·A a per-row constant,
    # so the loss aggregates from the row sums of log π, without a [B, T] product.
    seq_adv = jax.lax.stop_gradient(rewards.astype(jnp.float32) - baseline)
    loss = agg_lib.aggregate_advantage_weighted(logp, taper(rho[:, 0], seq_adv < 0) * seq_adv,
                                                mask, aggregation, max_tokens=max_tokens,
                                                normalizer=normalizer)
  else:
    loss = agg_lib.aggregate(-w * adv * lp, m, aggregation, max_tokens=max_tokens,
                             normalizer=normalizer)

  as_float = lambda x: x.astype(jnp.float32)
  means, mins, maxs = ratios.ratio_stat_terms(token_d, clamp)
  means.update({
      "weight_mean": w,
      "negative_frac": as_float(negative),
      "capped_frac": as_float(negative & (rho > neg_high)),
      "masked_frac": as_float(w == 0.0),
  })
  if rewards.ndim == 2:
    means.update({"_positive_mass": jnp.where(negative, 0.0, jnp.abs(adv)),
                  "_mass": jnp.abs(adv)})
  metrics = agg_lib.masked_stats(m, means=means, mins=mins, maxs=maxs)
  nonempty = jnp.sum(m, axis=-1) > 0
  if rewards.ndim == 1:  # per-sequence shares, as in the paper
    seq_adv = jax.lax.stop_gradient(rewards.astype(jnp.float32) - baseline)
    pos_mass = jnp.sum(jnp.where(nonempty & (seq_adv >= 0), jnp.abs(seq_adv), 0.0))
    all_mass = jnp.sum(jnp.where(nonempty, jnp.abs(seq_adv), 0.0))
  else:
    pos_mass, all_mass = metrics.pop("_positive_mass"), metrics.pop("_mass")
  metrics["effective_positive_frac"] = jnp.where(
      all_mass > 0, pos_mass / jnp.maximum(all_mass, 1e-30), 0.0)
  seq_d = ratios.log_ratio(logp, behavior_logp, mask, level="sequence-sum", clamp=clamp)
  metrics["ess"] = ratios.effective_sample_size(seq_d, nonempty)
  metrics = {k: jax.lax.stop_gradient(v) for k, v in metrics.items()}
  return types.LossOutput(loss, metrics)
