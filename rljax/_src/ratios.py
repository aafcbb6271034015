"""Log-probability and importance-ratio helpers at token and sequence level."""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rljax._src import aggregation as agg_lib
from rljax._src import types
from rljax._src import validation

RATIO_LEVELS = ("token", "sequence", "sequence-sum")
DEFAULT_CLAMP = 20.0


def sequence_logp(logp: jax.Array, mask: jax.Array) -> jax.Array:
  r"""Sequence log-probability :math:`\log\pi(y) = \sum_t m_t \log\pi(y_t|y_{<t})`.

  Args:
    logp: [B, T] per-token log-probabilities.
    mask: [B, T] weights, 1 on the tokens of the sequence.

  Returns:
    [B] float32. Masked entries may hold -inf without producing NaN.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> rljax.sequence_logp(jnp.array([[-1., -2., -9.]]), jnp.array([[1, 1, 0]]))
    Array([-3.], dtype=float32)
  """
  validation.check_token_inputs(logp, mask)
  m = validation.mask_as_float(mask)
  return jnp.sum(jnp.where(m > 0, logp.astype(jnp.float32), 0.0) * m, axis=-1)


def _clamp(x, clamp):
  if clamp is None:
    return x
  validation.check_positive("clamp", clamp)
  return jnp.clip(x, -clamp, clamp)


def log_ratio(logp: jax.Array,
              behavior_logp: jax.Array,
              mask: jax.Array,
              *,
              level: str = "token",
              clamp: Optional[float] = DEFAULT_CLAMP) -> jax.Array:
  r"""Log importance ratio :math:`\log\pi_\theta - \log\mu`, per token or per sequence.

  * ``token``: :math:`d_t = \log\pi_\theta(y_t) - \mathrm{sg}(\log\mu(y_t))`, shape [B, T], 0 on
    masked tokens.
  * ``sequence``: the length-normalised (geometric-mean) ratio of GSPO (Zheng et al., "Group
    Sequence Policy Optimization", arXiv 2507.18071): :math:`\frac{1}{|y|}\sum_t m_t d_t`, [B].
  * ``sequence-sum``: the full trajectory ratio :math:`\sum_t m_t d_t`, [B] (TOPR, sequence TIS).

  Token log-ratios are clamped to ±`clamp` before any reduction and the reduced value again, so
  `exp` never overflows; beyond the clamp the gradient is zero (as in verl's ±20). `clamp=None`
  disables it (TRL). `behavior_logp` is treated as data (stop-gradient).

  Args:
    logp: [B, T] log-probs under the policy being trained (carries the gradient).
    behavior_logp: [B, T] log-probs under the behaviour/proximal policy.
    mask: [B, T] weights.
    level: one of `RATIO_LEVELS`.
    clamp: bound on the absolute log-ratio, or None.

  Returns:
    [B, T] for ``token``, [B] otherwise, float32.
  """
  validation.check_token_inputs(logp, mask, behavior_logp=behavior_logp)
  validation.check_choice("level", level, RATIO_LEVELS)
  m = validation.mask_as_float(mask)
  valid = m > 0
  # Double-where: masked entries may be -inf in either input; make them 0 before subtracting.
  d = jnp.where(valid, logp.astype(jnp.float32), 0.0) - jax.lax.stop_gradient(
      jnp.where(valid, behavior_logp.astype(jnp.float32), 0.0))
  d = _clamp(d, clamp)
  return d if level == "token" else reduce_log_ratio(d, m, level=level, clamp=clamp)


def reduce_log_ratio(d: jax.Array, m: jax.Array, *, level: str, clamp: Optional[float]):
  """The ``sequence`` or ``sequence-sum`` log-ratio [B] from clamped token log-ratios `d`."""
  seq = jnp.sum(d * m, axis=-1)
  if level == "sequence":
    seq = seq / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
  return _clamp(seq, clamp)


def importance_ratio(logp: jax.Array,
                     behavior_logp: jax.Array,
                     mask: jax.Array,
                     *,
                     level: str = "token",
                     clamp: Optional[float] = DEFAULT_CLAMP) -> jax.Array:
  r"""Importance ratio :math:`\exp(\texttt{log\_ratio}(\ldots))`; see `log_ratio` for the levels.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> r = rljax.importance_ratio(jnp.log(jnp.array([[.5, .2]])),
    ...                            jnp.log(jnp.array([[.25, .4]])), jnp.ones((1, 2)))
    >>> [round(float(x), 4) for x in r[0]]
    [2.0, 0.5]
  """
  return jnp.exp(log_ratio(logp, behavior_logp, mask, level=level, clamp=clamp))


def effective_sample_size(log_weights: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
  r"""Normalised effective sample size :math:`(\sum w)^2 / (n \sum w^2) \in (0, 1]`.

  Kong (1992); Owen, "Monte Carlo theory, methods and examples", §9.3. Computed from log-weights
  with log-sum-exp, so weights of any magnitude are fine. Returns 1 for uniform weights and 1/n
  when one weight dominates; 1 when no entry is valid. No gradient.

  Args:
    log_weights: [N] log importance weights (e.g. sequence log-ratios).
    mask: optional [N] validity.

  Returns:
    Scalar float32.
  """
  lw = jax.lax.stop_gradient(jnp.asarray(log_weights, jnp.float32))
  if lw.ndim != 1:
    raise ValueError(f"log_weights must have shape [N], got {list(lw.shape)}.")
  valid = jnp.ones_like(lw, bool) if mask is None else jnp.asarray(mask) > 0
  if mask is not None:
    validation.check_same_shape([("log_weights", lw), ("mask", mask)])
  n = jnp.sum(valid.astype(jnp.float32))
  # +inf is an overwhelming weight: make it the largest finite value (else inf - inf = NaN below).
  lw = jnp.where(valid, jnp.minimum(lw, jnp.finfo(jnp.float32).max), -jnp.inf)
  finite_max = jnp.max(jnp.where(valid, lw, -jnp.finfo(jnp.float32).max))
  lw = jnp.where(valid, lw - finite_max, -jnp.inf)
  log_ess = 2.0 * jax.nn.logsumexp(lw) - jax.nn.logsumexp(2.0 * lw)
  ess = jnp.exp(log_ess) / jnp.maximum(n, 1.0)
  return jnp.where(n > 0, ess, 1.0)


def ratio_metrics(log_ratios: jax.Array, mask: jax.Array, *, prefix: str = "ratio",
                  clamp: Optional[float] = DEFAULT_CLAMP) -> dict:
  """Diagnostics of token log-ratios [B, T]: ratio mean/min/max, approximate KL, clamp fraction.

  `approx_kl` is the k3 estimate of KL(π_old‖π_θ) from the tokens sampled under π_old,
  :math:`\\mathbb{E}[\\rho - 1 - \\log\\rho]` (Schulman, "Approximating KL divergence", 2020).
  """
  means, mins, maxs = ratio_stat_terms(log_ratios, clamp)
  out = agg_lib.masked_stats(mask, means=means, mins=mins, maxs=maxs)
  return {(prefix + k[len("ratio"):] if k.startswith("ratio_") else k): v for k, v in out.items()}


def ratio_stat_terms(d: jax.Array, clamp: Optional[float]):
  """The (means, mins, maxs) for `masked_stats` that give `ratio_metrics`'s metrics."""
  d = jax.lax.stop_gradient(d)
  r = jnp.exp(d)
  means = {"ratio_mean": r, "approx_kl": r - 1.0 - d}
  if clamp is not None:
    means["log_ratio_clamped_frac"] = (jnp.abs(d) >= clamp).astype(jnp.float32)
  return means, {"ratio_min": r}, {"ratio_max": r}


class PPOClip(NamedTuple):
  """What `ppo_clip` returns: the per-token surrogate and where the clip takes its gradient.

  Attributes:
    loss: [B, T] per-token clipped surrogate.
    low: bool [B, T], A < 0 and ρ < 1 - ε_low (clipped below: no gradient).
    high: bool [B, T], A > 0 and ρ > 1 + ε_high (clipped above: no gradient).
  """

  loss: jax.Array
  low: jax.Array
  high: jax.Array

  def fractions(self) -> dict:
    """The [B, T] indicators whose token means are ``clip_frac_low/high`` and ``clip_frac``."""
    as_float = lambda x: x.astype(jnp.float32)
    return {"clip_frac_low": as_float(self.low), "clip_frac_high": as_float(self.high),
            "clip_frac": as_float(self.low | self.high)}


def ppo_clip(ratio: jax.Array, advantages: jax.Array, epsilon_low, epsilon_high) -> PPOClip:
  r"""PPO's clipped surrogate per token (Schulman et al., arXiv 1707.06347),

  .. math:: \ell_t = \max\big(-A_t\rho_t,\ -A_t\,\mathrm{clip}(\rho_t, 1-\varepsilon_l,
     1+\varepsilon_h)\big),

  whose gradient is zero exactly where the clipped term is the larger: ``low`` or ``high``.
  `advantages` are data, 0 on masked tokens (so neither mask holds a masked token).
  """
  lo, hi = 1.0 - epsilon_low, 1.0 + epsilon_high
  loss = jnp.maximum(-advantages * ratio, -advantages * jnp.clip(ratio, lo, hi))
  r = jax.lax.stop_gradient(ratio)
  return PPOClip(loss, low=(advantages < 0) & (r < lo), high=(advantages > 0) & (r > hi))


class TokenInputs(NamedTuple):
  """What `token_inputs` returns, the common start of every token-ratio loss.

  Attributes:
    m: [B, T] float32 mask weights.
    valid: bool [B, T], m > 0.
    adv: [B, T] float32 advantages (data), 0 on masked tokens.
    d: [B, T] token log-ratios clamped to ±clamp, 0 on masked tokens (see `log_ratio`).
  """

  m: jax.Array
  valid: jax.Array
  adv: jax.Array
  d: jax.Array


def token_inputs(logp, old_logp, advantages, mask, *, clamp: Optional[float],
                 aggregation: str) -> TokenInputs:
  """Checks the inputs of a token-ratio loss and computes its mask, advantages and log-ratios."""
  validation.check_token_inputs(logp, mask, old_logp=old_logp)
  validation.check_choice("aggregation", aggregation, agg_lib.AGGREGATION_MODES)
  m = validation.mask_as_float(mask)
  valid = m > 0
  adv = jax.lax.stop_gradient(validation.advantages_as_tokens(advantages, logp))
  d = log_ratio(logp, old_logp, m, level="token", clamp=clamp)
  return TokenInputs(m, valid, jnp.where(valid, adv, 0.0), d)


def token_loss_metrics(inputs: TokenInputs, clamp: Optional[float], *, means=None,
                       sums=None) -> dict:
  """`ratio_metrics` of ``inputs.d``, extra token means and sums, and the sequence ``ess``.

  One fused reduction (`agg_lib.masked_stats`) for every token statistic; the
  effective sample size is that of the sequence log-ratios over non-empty rows.
  """
  ratio_means, mins, maxs = ratio_stat_terms(inputs.d, clamp)
  metrics = agg_lib.masked_stats(inputs.m, means=dict(ratio_means, **(means or {})),
                                         sums=sums, mins=mins, maxs=maxs)
  seq_d = reduce_log_ratio(inputs.d, inputs.m, level="sequence-sum", clamp=clamp)
  metrics["ess"] = effective_sample_size(seq_d, jnp.sum(inputs.m, axis=-1) > 0)
  return metrics


def loss_output(loss: jax.Array, metrics: dict) -> types.LossOutput:
  """`LossOutput(loss, metrics)` with every metric a stop-gradient diagnostic."""
  return types.LossOutput(loss, {k: jax.lax.stop_gradient(v) for k, v in metrics.items()})
