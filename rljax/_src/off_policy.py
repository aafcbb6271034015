"""Rollout-vs-trainer importance weights: truncated (TIS) and masked (MIS) corrections."""

from typing import Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp

from rljax._src import aggregation as agg_lib
from rljax._src import ratios
from rljax._src import validation

IS_LEVELS = ("token", "sequence")
IS_MODES = ("truncate", "mask")


class ImportanceWeights(NamedTuple):
  """What `truncated_is_weights` returns.

  Attributes:
    weights: [B, T] float32 per-token weights (data, no gradient), 0 on masked tokens; pass them
      as ``is_weights=`` to a loss.
    metrics: mapping from name to scalar diagnostic.
  """

  weights: jax.Array
  metrics: Mapping[str, jax.Array]


def truncated_is_weights(behavior_logp: jax.Array,
                         old_logp: jax.Array,
                         mask: jax.Array,
                         *,
                         cap: float = 2.0,
                         level: str = "token",
                         mode: str = "truncate",
                         lower: Optional[float] = None,
                         clamp: Optional[float] = ratios.DEFAULT_CLAMP) -> ImportanceWeights:
  r"""Importance weights correcting for the sampler (μ) differing from the trainer (π_old).

  The rollout engine samples from μ (``behavior_logp``), the trainer scores the same tokens
  with π_old (``old_logp``); numerics (kernels, precision, MoE routing) make them differ, so the
  "on-policy" loss is off-policy. Yao, Liu et al., "Your Efficient RL Framework Secretly Brings
  You Off-Policy RL Training" (2025 report, no arXiv id), and the verl/TRL/tunix implementations.
  With :math:`\rho = \pi_{old}/\mu`,

  * ``level='token'``: :math:`\rho_t = \exp(\log\pi_{old}(y_t) - \log\mu(y_t))`;
  * ``level='sequence'``: :math:`\rho = \prod_t \rho_t = \exp\sum_t m_t(\log\pi_{old} - \log\mu)`,
    the full trajectory ratio (a product, not length-normalised, as verl and TRL), broadcast to
    every token of the row;
  * ``mode='truncate'`` (TIS): :math:`w = \mathrm{clip}(\rho, \text{lower}, \text{cap})` (upper
    truncation only when ``lower`` is None);
  * ``mode='mask'`` (MIS): :math:`w = \rho\cdot 1[\text{lower} \le \rho \le \text{cap}]`: tokens
    (or whole sequences) outside the range are dropped, their gradient is exactly 0.

  The weights multiply the per-token loss before aggregation (``is_weights=`` of
  `rljax.ppo_clip_loss`, `rljax.cispo_loss`). They are data: no gradient flows into
  `behavior_logp` or `old_logp`. When μ = π_old every weight is 1 and the loss is unchanged.
  Untruncated sequence weights make the policy gradient unbiased for samples from μ; truncation
  trades that bias for bounded variance.

  Defaults: ``cap=2.0`` as the report, verl's ``rollout_is_threshold`` and tunix. Peers: verl
  truncates token or sequence weights at 2.0 (``mode='truncate'``); TRL's default
  ``vllm_importance_sampling_mode='sequence_mask'`` with ``clip_max=3.0`` is
  ``level='sequence', mode='mask', cap=3.0``; tunix's ``sampler_is='token'`` is the token
  default here. Token log-ratios, and at sequence level also their sum, are clamped to ±`clamp`
  (verl's ``SAFETY_BOUND`` 20 bounds the token log-ratio at token level and only the sum at
  sequence level, so the two differ only where a token's |log-ratio| exceeds 20; tunix bounds the
  token log-ratio by 20; TRL clamps nothing: ``clamp=None``).

  Args:
    behavior_logp: [B, T] log μ of the sampled tokens (the sampler's log-probs).
    old_logp: [B, T] log π_old of the same tokens (the trainer's log-probs).
    mask: [B, T] weights, 1 on tokens that count. Masked entries may be ±inf.
    cap: upper bound C > 0 on the ratio.
    level: one of `IS_LEVELS`.
    mode: one of `IS_MODES`.
    lower: optional lower bound in [0, cap) (TRL's ``clip_min``; e.g. 1/C for two-sided MIS).
    clamp: bound on |log-ratio| before ``exp``, or None.

  Returns:
    `ImportanceWeights(weights, metrics)`: weights [B, T] (0 on masked tokens); metrics
    ``is_ratio_mean``/``is_ratio_min``/``is_ratio_max`` of the raw ratio (over valid tokens, or over
    non-empty rows at sequence level), ``is_weight_mean`` (token mean), ``truncated_frac``
    (valid tokens whose weight was truncated), ``masked_frac`` (valid tokens dropped by
    ``mode='mask'``), ``approx_kl`` (k3 estimate of KL(μ‖π_old) from token log-ratios), ``ess``
    (effective sample size of the sequence log-ratios), ``log_ratio_clamped_frac``.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> mu, old = jnp.log(jnp.array([[.5, .1]])), jnp.log(jnp.array([[.25, .4]]))
    >>> w, _ = rljax.truncated_is_weights(mu, old, jnp.ones((1, 2)))
    >>> [round(float(x), 4) for x in w[0]]  # ratios 0.5 and 4, the second truncated at 2
    [0.5, 2.0]
    >>> w, _ = rljax.truncated_is_weights(mu, old, jnp.ones((1, 2)), mode='mask')
    >>> [round(float(x), 4) for x in w[0]]
    [0.5, 0.0]
  """
  validation.check_floating("behavior_logp", behavior_logp)
  validation.check_floating("old_logp", old_logp)
  validation.check_shape("behavior_logp", behavior_logp, (None, None))
  validation.check_same_shape(
      [("behavior_logp", behavior_logp), ("old_logp", old_logp), ("mask", mask)])
  validation.check_choice("level", level, IS_LEVELS)
  validation.check_choice("mode", mode, IS_MODES)
  validation.check_positive("cap", cap)
  validation.check_positive("lower", lower, allow_none=True, strict=False)
  if (lower is not None and not isinstance(lower, jax.core.Tracer)
      and not isinstance(cap, jax.core.Tracer) and float(lower) >= float(cap)):
    raise ValueError(f"lower must be < cap, got lower={lower}, cap={cap}.")

  m = validation.mask_as_float(mask)
  valid = m > 0
  old_logp = jax.lax.stop_gradient(old_logp)
  d = ratios.log_ratio(old_logp, behavior_logp, m, level="token", clamp=clamp)
  seq_d = ratios.log_ratio(old_logp, behavior_logp, m, level="sequence-sum", clamp=clamp)
  nonempty = jnp.sum(m, axis=-1) > 0
  if level == "token":
    log_rho = d
    stat_mask = m
  else:
    log_rho = jnp.broadcast_to(seq_d[:, None], d.shape)
    stat_mask = nonempty
  rho = jnp.exp(log_rho)
  floor = 0.0 if lower is None else lower
  outside = (rho > cap) | (rho < floor)
  if mode == "truncate":
    weights = jnp.clip(rho, floor, cap)
  else:
    weights = jnp.where(outside, 0.0, rho)
  weights = jax.lax.stop_gradient(jnp.where(valid, weights, 0.0))

  stat_rho = rho if level == "token" else jnp.exp(seq_d)
  fmean = lambda x: agg_lib.masked_mean(x.astype(jnp.float32), m)
  tok_metrics = ratios.ratio_metrics(d, m, clamp=clamp)
  metrics = {
      "is_ratio_mean": agg_lib.masked_mean(stat_rho, stat_mask),
      "is_ratio_min": agg_lib.masked_min(stat_rho, stat_mask),
      "is_ratio_max": agg_lib.masked_max(stat_rho, stat_mask),
      "is_weight_mean": fmean(weights),
      "truncated_frac": fmean(valid & outside) if mode == "truncate" else jnp.float32(0.0),
      "masked_frac": fmean(valid & outside) if mode == "mask" else jnp.float32(0.0),
      "approx_kl": tok_metrics["approx_kl"],
      "ess": ratios.effective_sample_size(seq_d, nonempty),
  }
  if clamp is not None:
    metrics["log_ratio_clamped_frac"] = tok_metrics["log_ratio_clamped_frac"]
  metrics = {k: jax.lax.stop_gradient(v) for k, v in metrics.items()}
  return ImportanceWeights(weights, metrics)
