"""PPO clipped surrogate: PPO / GRPO / DAPO clip-higher / dual-clip, and GSPO at sequence level."""

from typing import Optional

import jax
import jax.numpy as jnp

from rljax._src import aggregation as agg_lib
from rljax._src import ratios
from rljax._src import types
from rljax._src import validation

PPO_LEVELS = ("token", "sequence")

# Paper defaults per level: PPO (arXiv 1707.06347) / GRPO use ε = 0.2 on token ratios; GSPO
# (arXiv 2507.18071, §5.1) uses ε_low = 3e-4, ε_high = 4e-4 on the length-normalised
# sequence ratio, three orders of magnitude smaller.
_DEFAULT_EPSILONS = {"token": (0.2, 0.2), "sequence": (3e-4, 4e-4)}
# Paper aggregation per level: PPO's empirical mean over timesteps (and DAPO's token-level
# mean, arXiv 2503.14476); GSPO's (1/G) Σ_i of a per-sequence term, which is
# seq-mean-token-mean for the stop-gradient token construction.
_DEFAULT_AGGREGATION = {"token": "token-mean", "sequence": "seq-mean-token-mean"}


def token_weights(weights, logp, name: str) -> jax.Array:
  """Broadcasts per-sequence [B] weights to [B, T]; passes [B, T] weights through (data)."""
  weights = jnp.asarray(weights, jnp.float32)
  if weights.ndim == 1:
    validation.check_shape(name, weights, (logp.shape[0],))
    weights = jnp.broadcast_to(weights[:, None], logp.shape)
  else:
    validation.check_shape(name, weights, logp.shape)
  return jax.lax.stop_gradient(weights)


def ppo_clip_loss(logp: jax.Array,
                  old_logp: jax.Array,
                  advantages: jax.Array,
                  mask: jax.Array,
                  *,
                  epsilon_low: Optional[float] = None,
                  epsilon_high: Optional[float] = None,
                  dual_clip: Optional[float] = None,
                  level: str = "token",
                  clamp: Optional[float] = ratios.DEFAULT_CLAMP,
                  is_weights: Optional[jax.Array] = None,
                  aggregation: Optional[str] = None,
                  max_tokens: Optional[int] = None,
                  normalizer: Optional[jax.Array] = None) -> types.LossOutput:
  r"""PPO clipped surrogate (PPO, GRPO, DAPO clip-higher, dual-clip; GSPO at sequence level).

  Per valid token, with :math:`\rho` the importance ratio, :math:`A` the advantage (data) and
  :math:`w` optional rollout-correction weights (data, e.g. from `rljax.truncated_is_weights`):

  .. math::

     \ell_{i,t} = w_{i,t}\,\max\big(-A_{i,t}\,\rho_{i,t},\;
                  -A_{i,t}\,\mathrm{clip}(\rho_{i,t}, 1-\epsilon_\text{low}, 1+\epsilon_\text{high})\big),
     \qquad \mathcal{L} = \mathrm{agg}_{i,t}(\ell_{i,t}).

  * ``level='token'``: :math:`\rho_{i,t} = \exp(\log\pi_\theta(y_{i,t}) - \mathrm{sg}(\log\pi_{old}(y_{i,t})))`.
    PPO: Schulman, Wolski, Dhariwal, Radford, Klimov, "Proximal Policy Optimization
    Algorithms", arXiv 1707.06347. GRPO: Shao et al., "DeepSeekMath", arXiv 2402.03300 (group
    advantages, ``aggregation='seq-mean-token-mean'``). DAPO clip-higher: Yu et al., "DAPO: An
    Open-Source LLM Reinforcement Learning System at Scale", arXiv 2503.14476
    (``epsilon_low=0.2, epsilon_high=0.28, aggregation='token-mean'``).
  * ``level='sequence'``: GSPO, Zheng et al., "Group Sequence Policy Optimization", arXiv
    2507.18071, in its GSPO-token form :math:`\rho_{i,t} = \mathrm{sg}(s_i)\,
    \exp(\log\pi_\theta(y_{i,t}) - \mathrm{sg}(\log\pi_\theta(y_{i,t})))` with
    :math:`s_i = \exp\big(\tfrac{1}{|y_i|}\sum_t m_{i,t}(\log\pi_\theta - \log\pi_{old})\big)`.
    Its value is :math:`s_i` on every token and its gradient is
    :math:`s_i\nabla\log\pi_\theta(y_{i,t})`, so per-token advantages are allowed; with advantages
    constant in a sequence and ``seq-mean-token-mean`` the gradient is exactly GSPO's
    :math:`-\frac1G\sum_i A_i s_i \frac{1}{|y_i|}\sum_t\nabla\log\pi_\theta(y_{i,t})` on unclipped
    sequences.
  * ``dual_clip=c`` (c > 1): Ye et al., "Mastering Complex Control in MOBA Games with Deep
    Reinforcement Learning", arXiv 1912.09729 (paper c = 3). For :math:`A < 0` the loss is
    additionally capped, :math:`\ell = \min(\ell, -cA)`, so a negative-advantage token whose
    ratio exceeds c has a bounded loss and zero gradient.

  Defaults and where they come from: ε = 0.2/0.2 at token level (PPO, GRPO, verl, TRL, tunix);
  ε = 3e-4/4e-4 at sequence level (GSPO paper; Trinity-RFT's default; verl, TRL and tunix keep
  0.2 and need them set by hand). Aggregation ``token-mean`` at token level (PPO's mean over
  timesteps, DAPO, verl and TRL defaults; the GRPO paper uses ``seq-mean-token-mean``) and
  ``seq-mean-token-mean`` at sequence level (GSPO). Log-ratios are clamped to ±`clamp` (±20 as
  verl's ``vanilla``, tunix's ``grpo_loss_fn`` and Trinity-RFT's ``ppo``; tunix's
  ``ppo_policy_loss_fn`` does not clamp) before ``exp``; beyond it the gradient is zero and the
  fraction is reported.

  How the peers differ, and the keyword that reproduces each:

  * verl ``vanilla`` and Trinity-RFT ``ppo`` always apply a dual clip with c = 3:
    ``dual_clip=3.0``. TRL and rlax have none (our default, ``dual_clip=None``); tunix applies it
    when ``epsilon_c`` is set.
  * TRL clamps no log-ratio: ``clamp=None``.
  * verl's ``gspo`` forces ``seq-mean-token-mean`` whatever its ``loss_agg_mode`` says; here
    ``aggregation`` is honoured and only *defaults* to that mode at sequence level. verl and tunix
    also clamp the GSPO log-weight to at most 10 (we clamp every token log-ratio and their mean
    to ±`clamp`); Trinity-RFT does not clamp. TRL differentiates through the sequence mean instead
    of the stop-gradient construction; with advantages constant in a sequence the gradients are
    identical for every aggregation mode. TRL's ``importance_sampling_level='sequence'`` is
    ``level='sequence', clamp=None`` with its ``loss_type``'s aggregation: ``'dapo'`` (its
    default) ``aggregation='token-mean'``; ``'grpo'`` ``seq-mean-token-mean`` with
    ``normalizer=B`` (TRL counts empty rows); ``'dr_grpo'`` ``seq-mean-token-sum-norm`` with
    ``max_tokens=max_completion_length``.
  * verl and tunix multiply the per-token loss by rollout IS weights before aggregation, as
    ``is_weights`` does.

  Args:
    logp: [B, T] log π_θ of the sampled tokens (carries the gradient), cast to float32.
    old_logp: [B, T] log π_old of the same tokens (data: stop-gradient).
    advantages: [B] or [B, T] advantages (data).
    mask: [B, T] weights, 1 on tokens that count. Masked entries of any input may be ±inf.
    epsilon_low: lower clip range ε_low >= 0 (ratio floor 1 - ε_low). None: the level's default.
    epsilon_high: upper clip range ε_high >= 0 (ratio cap 1 + ε_high). None: the level's default.
    dual_clip: None, or c > 1 for dual-clip PPO.
    level: ``'token'`` (PPO/GRPO/DAPO) or ``'sequence'`` (GSPO-token).
    clamp: bound on |log-ratio| before ``exp`` (token and sequence), or None (TRL).
    is_weights: optional [B, T] or [B] rollout-correction weights multiplying the per-token loss
      (data).
    aggregation: aggregation mode (see `rljax.aggregate`); None: the level's default.
    max_tokens: budget for ``seq-mean-token-sum-norm``.
    normalizer: external denominator for exact gradient accumulation (see
      `rljax.aggregation_normalizer`).

  Returns:
    `LossOutput(loss, metrics)`. Metrics (scalars, no gradient; token fractions are token means
    over `mask`): ``ratio_mean``/``ratio_min``/``ratio_max`` of the ratio the clip acts on (token
    ratios, or sequence ratios over non-empty rows at sequence level); ``approx_kl`` (k3 estimate
    of KL(π_old‖π_θ) from token log-ratios); ``clip_frac_low`` (A < 0 and ρ < 1 - ε_low),
    ``clip_frac_high`` (A > 0 and ρ > 1 + ε_high), ``clip_frac`` (their union);
    ``dual_clip_frac`` (A < 0 and ρ > c); ``masked_frac`` (tokens whose gradient the estimator
    zeroes: clipped, dual-clipped or with IS weight 0); ``ess`` (effective sample size of the
    sequence log-ratios Σ_t log ρ_t over non-empty rows); ``log_ratio_clamped_frac``;
    ``is_weight_mean`` when `is_weights` is given; ``seq_clip_frac`` at sequence level.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> out = rljax.ppo_clip_loss(jnp.log(jnp.array([[.6, .3]])), jnp.log(jnp.array([[.5, .5]])),
    ...                           jnp.array([1.]), jnp.ones((1, 2)))
    >>> round(float(out.loss), 4)  # ratios 1.2, 0.6: (-1.2 - 0.6) / 2
    -0.9
    >>> out = rljax.ppo_clip_loss(jnp.log(jnp.array([[.5]])), jnp.log(jnp.array([[.1]])),
    ...                           jnp.array([-1.]), jnp.ones((1, 1)), dual_clip=3.0)
    >>> round(float(out.loss), 4)  # ratio 5, A = -1: PPO gives 5, the dual clip caps it at 3
    3.0
  """
  validation.check_choice("level", level, PPO_LEVELS)
  default_low, default_high = _DEFAULT_EPSILONS[level]
  epsilon_low = default_low if epsilon_low is None else epsilon_low
  epsilon_high = default_high if epsilon_high is None else epsilon_high
  _check_clip(epsilon_low, epsilon_high, dual_clip)
  aggregation = _DEFAULT_AGGREGATION[level] if aggregation is None else aggregation
  x = ratios.token_inputs(logp, old_logp, advantages, mask, clamp=clamp, aggregation=aggregation)
  if level == "token":
    log_w = x.d
  else:
    s = jax.lax.stop_gradient(ratios.reduce_log_ratio(x.d, x.m, level="sequence", clamp=clamp))
    # GSPO-token: value s_i on every token, gradient ∇ log π_θ(y_t) (zero where d_t is clamped).
    log_w = s[:, None] + (x.d - jax.lax.stop_gradient(x.d))
  clip = ratios.ppo_clip(jnp.exp(log_w), x.adv, epsilon_low, epsilon_high)
  per_token, dual = clip.loss, jnp.zeros_like(x.valid)
  if dual_clip is not None:
    dual = (x.adv < 0) & (jnp.exp(jax.lax.stop_gradient(log_w)) > dual_clip)
    per_token = jnp.where(x.adv < 0, jnp.minimum(per_token, -x.adv * dual_clip), per_token)
  zeroed = clip.low | clip.high | dual
  means = dict(clip.fractions(), dual_clip_frac=dual.astype(jnp.float32))
  if is_weights is not None:
    w = jnp.where(x.valid, token_weights(is_weights, logp, "is_weights"), 0.0)
    per_token = per_token * w
    zeroed = zeroed | (x.valid & (w == 0))
    means["is_weight_mean"] = w
  loss = agg_lib.aggregate(per_token, x.m, aggregation, max_tokens=max_tokens,
                           normalizer=normalizer)
  metrics = ratios.token_loss_metrics(x, clamp, means=dict(means, masked_frac=zeroed))
  if level == "sequence":
    metrics.update(_sequence_ratio_metrics(s, clip, x.m))
  return ratios.loss_output(loss, metrics)


def _check_clip(epsilon_low, epsilon_high, dual_clip) -> None:
  validation.check_positive("epsilon_low", epsilon_low, strict=False)
  validation.check_positive("epsilon_high", epsilon_high, strict=False)
  if dual_clip is not None:
    validation.check_positive("dual_clip", dual_clip)
    if not isinstance(dual_clip, jax.core.Tracer) and float(dual_clip) <= 1.0:
      raise ValueError(f"dual_clip must be None or > 1 (Ye et al. use 3), got {dual_clip}.")


def _sequence_ratio_metrics(s, clip, m) -> dict:
  """GSPO's ratio statistics: of the sequence ratios over non-empty rows, and clipped rows."""
  nonempty = jnp.sum(m, axis=-1) > 0
  seq_r = jnp.exp(s)
  return dict(ratio_mean=agg_lib.masked_mean(seq_r, nonempty),
              ratio_min=agg_lib.masked_min(seq_r, nonempty),
              ratio_max=agg_lib.masked_max(seq_r, nonempty),
              seq_clip_frac=agg_lib.masked_mean(
                  jnp.any(clip.low | clip.high, axis=-1).astype(jnp.float32), nonempty))
