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
  so the loss is identical). ``level='sequence'`` (the length-normalised ratio) is a third
  variant, not the paper's; with advantages constant in a sequence it equals the ``topr`` loss
  of a verl branch that is not on verl's main branch (verl-project/verl commit dbeb49b,
  ``compute_policy_loss_topr``, which also caps the log-ratio at 10 and always aggregates with
  ``seq-mean-token-mean``). verl's main branch, TRL
  and tunix have no TOPR.

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
  validation.check_choice("level", level, ratios.RATIO_LEVELS)
  neg_low, neg_high = _check_bounds("negative_bounds", negative_bounds)
  pos_low, pos_high = _check_bounds("positive_bounds", positive_bounds)
  rewards = jnp.asarray(rewards)
  validation.check_token_inputs(logp, mask, behavior_logp=behavior_logp)
  if rewards.ndim == 2:
    validation.check_shape("rewards", rewards, logp.shape)
  else:
    validation.check_sequence_array("rewards", rewards, logp.shape[0])
  adv = jax.lax.stop_gradient(rewards.astype(jnp.float32) - baseline)
  x = ratios.token_inputs(logp, behavior_logp, adv, mask, clamp=clamp, aggregation=aggregation)
  d = x.d if level == "token" else ratios.reduce_log_ratio(x.d, x.m, level=level, clamp=clamp)
  # The weight and the advantage each per row [B] or per token [B, T]; their product w·A is per
  # row only when both are, and the aggregation then runs on row sums of log π.
  a = adv
  if d.ndim != a.ndim:
    d, a = (d, a[:, None]) if a.ndim == 1 else (d[:, None], a)
  rho = jnp.exp(jax.lax.stop_gradient(d))
  negative = a < 0
  w = jnp.where(negative, jnp.clip(rho, neg_low, neg_high), jnp.clip(rho, pos_low, pos_high))
  loss = agg_lib.aggregate_advantage_weighted(logp, w * a, x.m, aggregation,
                                              max_tokens=max_tokens, normalizer=normalizer)
  tokens = lambda v: jnp.broadcast_to(v if v.ndim == 2 else v[:, None], logp.shape)
  w, rho, negative = tokens(w), tokens(rho), tokens(negative)
  means = {"weight_mean": w, "negative_frac": negative.astype(jnp.float32),
           "capped_frac": (negative & (rho > neg_high)).astype(jnp.float32),
           "masked_frac": (w == 0.0).astype(jnp.float32)}
  if rewards.ndim == 2:
    means.update(_positive_mass=jnp.where(negative, 0.0, jnp.abs(x.adv)), _mass=jnp.abs(x.adv))
  metrics = ratios.token_loss_metrics(x, clamp, means=means)
  if rewards.ndim == 2:
    pos_mass, all_mass = metrics.pop("_positive_mass"), metrics.pop("_mass")
  else:  # per-sequence shares, as in the paper
    pos_mass, all_mass = _sequence_masses(adv, x.m)
  metrics["effective_positive_frac"] = jnp.where(
      all_mass > 0, pos_mass / jnp.maximum(all_mass, 1e-30), 0.0)
  return ratios.loss_output(loss, metrics)


def _sequence_masses(seq_adv, m):
  """Σ|A| over non-empty rows with A >= 0, and over all non-empty rows."""
  nonempty = jnp.sum(m, axis=-1) > 0
  pos_mass = jnp.sum(jnp.where(nonempty & (seq_adv >= 0), jnp.abs(seq_adv), 0.0))
  return pos_mass, jnp.sum(jnp.where(nonempty, jnp.abs(seq_adv), 0.0))
