r"""Group-relative REINFORCE read as an off-policy algorithm: REC, OPMD and AsymRE.

Yao, Chen, Sun, Chen, Zhang, Pan, Li and Ding, "Group-Relative REINFORCE Is Secretly an
Off-Policy Algorithm: Demystifying Some Myths About GRPO and Its Friends", arXiv 2509.24203
(ICLR 2026); code in Trinity-RFT ``examples/rec_gsm8k``. For one prompt, the KL-regularised step
:math:`\max_\pi \mathbb{E}_\pi[r] - \tau\mathrm{KL}(\pi\|\pi_{\theta_t})` has the optimum
:math:`\pi^*\propto\pi_{\theta_t}e^{r/\tau}`, so every pair of responses satisfies
:math:`a_i = a_j` with :math:`a_i = r_i - \tau\log(\pi(y_i)/\pi_{\theta_t}(y_i))`. One gradient step
on :math:`\frac{1}{K^2}\sum_{i<j}(a_i-a_j)^2` at :math:`\theta=\theta_t` is :math:`2\tau` times the
group-relative REINFORCE gradient :math:`-\frac1K\sum_i (r_i-\bar r)\nabla\log\pi(y_i)`, whatever
distribution the :math:`y_i` came from. The paper draws two principles from this: *regularise*
the update (REC clipping masks; the OPMD and AsymRE regularisers) and *shape* the data.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from rljax._src import advantages as adv_lib
from rljax._src import aggregation as agg_lib
from rljax._src import ratios
from rljax._src import types
from rljax._src import validation

REC_CLIP_MODES = ("none", "oneside", "twoside", "ring")
REC_VARIANTS = tuple(f"{c}-{w}" for c in REC_CLIP_MODES for w in ("is", "nois"))
OPMD_BASELINES = ("mean", "logavgexp")
OPMD_LEVELS = ("sequence", "token")


def _grouped_rewards(rewards, group_size):
  """Rewards as [num_groups, group_size] (validated) and which groups have no spread."""
  r = adv_lib._grouped(rewards, group_size)  # pylint: disable=protected-access
  flat = jnp.max(r, axis=1, keepdims=True) == jnp.min(r, axis=1, keepdims=True)
  return r, flat


def opmd_advantages(rewards: jax.Array,
                    group_size: int,
                    *,
                    tau: float = 1.0,
                    baseline: str = "mean") -> jax.Array:
  r"""OPMD advantages :math:`A_i = r_i - b` with the group mean or the soft-max baseline.

  Kimi Team, "Kimi k1.5: Scaling Reinforcement Learning with LLMs", arXiv 2501.12599, online
  policy mirror descent: the optimum of the KL-regularised step has the baseline
  :math:`\tau\log Z = \tau\log\mathbb{E}_{y\sim\pi_{\theta_t}}[e^{r/\tau}]`;
  ``baseline='logavgexp'`` estimates it from the group,
  :math:`b = \tau(\mathrm{logsumexp}_j(r_j/\tau) - \log G)` (Trinity-RFT's
  ``opmd_baseline='logavgexp'``); ``baseline='mean'`` is Kimi's approximation :math:`b = \bar r`
  (the default in Kimi and Trinity-RFT). A group whose rewards are all equal (and a group of one)
  gets exactly 0. τ defaults to Trinity-RFT's 1.0.

  Args:
    rewards: [B] rewards, B a multiple of `group_size`.
    group_size: completions per prompt (static Python int).
    tau: τ > 0 (only used by ``logavgexp``).
    baseline: one of `OPMD_BASELINES`.

  Returns:
    [B] float32 advantages.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> a = rljax.opmd_advantages(jnp.array([1., 0.]), 2, baseline='logavgexp')
    >>> [round(float(x), 4) for x in a]  # b = log((e + 1) / 2) = 0.6201
    [0.3799, -0.6201]
  """
  validation.check_choice("baseline", baseline, OPMD_BASELINES)
  validation.check_positive("tau", tau)
  r, flat = _grouped_rewards(rewards, group_size)
  if baseline == "mean":
    b = jnp.mean(r, axis=1, keepdims=True)
  else:
    b = tau * (jax.nn.logsumexp(r / tau, axis=1, keepdims=True) - jnp.log(float(group_size)))
  return jnp.where(flat, 0.0, r - b).reshape(-1)


def asymre_advantages(rewards: jax.Array, group_size: int, *, shift: float = 0.1) -> jax.Array:
  r"""AsymRE advantages :math:`A_i = r_i - (\bar r - \delta)`: the group-mean baseline lowered by δ.

  Arnal, Narozniak, Cabannes, Tang, Kempe and Munos, "Asymmetric REINFORCE for off-Policy
  Reinforcement Learning: Balancing positive and negative rewards", arXiv 2506.20520. A baseline
  below the behaviour policy's mean reward (δ > 0) weights positives more than negatives and keeps
  off-policy REINFORCE stable; equivalently (arXiv 2509.24203) REINFORCE plus the regulariser
  :math:`\delta\cdot\mathrm{mean}_i(-\log\pi(y_i))`. δ = 0.1 is Trinity-RFT's, which spells it
  ``baseline_shift=-0.1`` (added to the baseline). A group of one gets δ.

  Use either this with `rljax.reinforce_loss`/`rljax.rec_loss`, or `rljax.asymre_loss` (which
  applies the shift itself), not both.

  Args:
    rewards: [B] rewards, B a multiple of `group_size`.
    group_size: completions per prompt (static Python int).
    shift: δ, how far the baseline is lowered.

  Returns:
    [B] float32.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> [round(float(x), 4) for x in rljax.asymre_advantages(jnp.array([1., 0.]), 2)]
    [0.6, -0.4]
  """
  r, _ = _grouped_rewards(rewards, group_size)
  return (r - jnp.mean(r, axis=1, keepdims=True) + shift).reshape(-1)


def asymre_loss(logp: jax.Array,
                rewards: jax.Array,
                mask: jax.Array,
                group_size: int,
                *,
                shift: float = 0.1,
                aggregation: str = "token-mean",
                max_tokens: Optional[int] = None,
                normalizer: Optional[jax.Array] = None) -> types.LossOutput:
  r"""Asymmetric REINFORCE: :math:`\ell_t = -(r_i - \bar r_g + \delta)\log\pi_\theta(y_{i,t})`.

  Arnal et al., arXiv 2506.20520; read by Yao et al. (arXiv 2509.24203) as REINFORCE plus the
  forward-KL-like regulariser :math:`\delta\cdot(-\log\pi_\theta)` on every sample: with data from
  a fixed μ and weights :math:`w(y) = A(y) + \delta`, the fixed point of the expected update is
  :math:`\pi\propto\mu\cdot w` when every weight is positive, while a negative weight pushes
  :math:`\log\pi(y)\to-\infty`. Equal to ``reinforce_loss(logp, asymre_advantages(rewards, G,
  shift=shift), mask)``. Defaults from Trinity-RFT's ``asymre`` preset (δ = 0.1, token-mean). That
  preset runs the advantage through Trinity's ``opmd`` policy loss, which divides by
  :math:`1+\tau = 2`: multiply our loss by 0.5 to reproduce it; Trinity's REC ``forward-kl``
  regulariser (coef 0.1) is this loss exactly.

  Args:
    logp: [B, T] log π_θ of the sampled tokens (carries the gradient).
    rewards: [B] rewards (data), B a multiple of `group_size`.
    mask: [B, T] weights.
    group_size: completions per prompt (static Python int).
    shift: δ, how far the baseline is lowered below the group mean.
    aggregation, max_tokens, normalizer: as in `rljax.aggregate`.

  Returns:
    `LossOutput(loss, metrics)` with ``advantage_mean`` and ``positive_frac`` (token means).

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> out = rljax.asymre_loss(jnp.log(jnp.array([[.5], [.5]])), jnp.array([1., 0.]),
    ...                         jnp.ones((2, 1)), 2)
    >>> round(float(out.loss), 4)  # -(0.6 - 0.4) * log .5 / 2
    0.0693
  """
  validation.check_token_inputs(logp, mask)
  validation.check_choice("aggregation", aggregation, agg_lib.AGGREGATION_MODES)
  validation.check_sequence_array("rewards", rewards, logp.shape[0])
  seq_adv = jax.lax.stop_gradient(asymre_advantages(rewards, group_size, shift=shift))
  loss = agg_lib.aggregate_advantage_weighted(logp, seq_adv, mask, aggregation,
                                              max_tokens=max_tokens, normalizer=normalizer)
  adv = validation.advantages_as_tokens(seq_adv, logp)
  m = validation.mask_as_float(mask)
  metrics = agg_lib.masked_stats(m, means={"advantage_mean": adv,
                                   "positive_frac": (adv > 0).astype(jnp.float32)})
  return types.LossOutput(loss, metrics)


def opmd_loss(logp: jax.Array,
              old_logp: jax.Array,
              rewards: jax.Array,
              mask: jax.Array,
              group_size: int,
              *,
              tau: float = 1.0,
              baseline: str = "mean",
              level: str = "sequence",
              aggregation: str = "seq-mean-token-sum",
              max_tokens: Optional[int] = None,
              normalizer: Optional[jax.Array] = None) -> types.LossOutput:
  r"""Online policy mirror descent: group REINFORCE plus a squared log-ratio to the old policy.

  Kimi Team, arXiv 2501.12599 (OPMD), as written by Yao et al., arXiv 2509.24203:

  .. math::
     \mathcal{L} = \frac1K\sum_i\Big[-A_i\log\pi_\theta(y_i)
       + \frac{\tau}{2}\big(\log\pi_\theta(y_i) - \log\pi_{old}(y_i)\big)^2\Big],

  with :math:`A_i` from `rljax.opmd_advantages` (same τ, ``baseline``). At
  :math:`\pi_\theta=\pi_{old}` the regulariser has zero gradient, so the first step is plain group
  REINFORCE; later steps are pulled back towards :math:`\pi_{old}`.

  * ``level='sequence'`` (the paper and Kimi): the squared *sequence* log-ratio
    :math:`D_i = \sum_t m_t(\log\pi_\theta - \log\pi_{old})`. The term is spread over the valid
    tokens of the row (each gets :math:`\frac\tau2 D_i^2 / \sum_t m_t`), exactly as the REINFORCE
    term :math:`-A_i\log\pi(y_i)` is a sum over tokens, so every aggregation mode treats both
    alike; the default ``seq-mean-token-sum`` is the formula above.
  * ``level='token'``: :math:`\frac\tau2\sum_t m_t d_t^2` per token. Trinity-RFT's REC
    ``regularizer='k2'`` (coef 0.1, the paper's experiments) is ``level='token', tau=0.2,
    aggregation='token-mean'``.

  The log-ratio is *not* clamped here (it enters no exponential; a clamp would switch the
  regulariser off exactly when the policy has moved far). Trinity-RFT's registered ``opmd``
  policy loss is a different, older form, REINFORCE divided by :math:`1+\tau`, with no squared
  term; it is not OPMD and is not reproduced. τ = 1.0 is Trinity-RFT's OPMD default; Kimi k1.5
  does not state one.

  Args:
    logp: [B, T] log π_θ of the sampled tokens (carries the gradient).
    old_logp: [B, T] log π_old (the policy at the start of the step; data).
    rewards: [B] rewards (data), B a multiple of `group_size`.
    mask: [B, T] weights.
    group_size: completions per prompt (static Python int).
    tau: τ > 0, the mirror-descent step (regulariser weight and soft-max baseline temperature).
    baseline: ``'mean'`` or ``'logavgexp'`` (see `rljax.opmd_advantages`).
    level: one of `OPMD_LEVELS`.
    aggregation, max_tokens, normalizer: as in `rljax.aggregate`.

  Returns:
    `LossOutput(loss, metrics)` with ``ratio_mean/min/max``, ``approx_kl`` and
    ``log_ratio_clamped_frac`` (of the token log-ratios clamped to ±20, for reporting only),
    ``ess``, ``advantage_mean`` and ``regularizer`` (the aggregated squared-log-ratio term, τ
    included).

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> lp, old = jnp.log(jnp.array([[.5], [.5]])), jnp.log(jnp.array([[.25], [.5]]))
    >>> out = rljax.opmd_loss(lp, old, jnp.array([1., 0.]), jnp.ones((2, 1)), 2)
    >>> # row 0: -.5 log .5 + (log 2)^2 / 2 = .5868; row 1: .5 log .5 = -.3466; mean
    >>> round(float(out.loss), 4)
    0.1201
  """
  validation.check_token_inputs(logp, mask, old_logp=old_logp)
  validation.check_choice("aggregation", aggregation, agg_lib.AGGREGATION_MODES)
  validation.check_sequence_array("rewards", rewards, logp.shape[0])
  validation.check_choice("level", level, OPMD_LEVELS)
  validation.check_positive("tau", tau)
  adv = opmd_advantages(rewards, group_size, tau=tau, baseline=baseline)
  adv = jax.lax.stop_gradient(validation.advantages_as_tokens(adv, logp))
  m = validation.mask_as_float(mask)
  valid = m > 0
  lp = jnp.where(valid, logp.astype(jnp.float32), 0.0)
  d = ratios.log_ratio(logp, old_logp, mask, level="token", clamp=None)
  if level == "sequence":
    seq_d = jnp.sum(d * m, axis=-1, keepdims=True)
    reg = 0.5 * tau * jnp.square(seq_d) / jnp.maximum(jnp.sum(m, axis=-1, keepdims=True), 1e-30)
  else:
    reg = 0.5 * tau * jnp.square(d)
  reg = jnp.where(valid, reg, 0.0)
  kwargs = dict(max_tokens=max_tokens, normalizer=normalizer)
  loss = agg_lib.aggregate(-adv * lp + reg, m, aggregation, **kwargs)
  means, mins, maxs = ratios.ratio_stat_terms(jnp.clip(d, -ratios.DEFAULT_CLAMP, ratios.DEFAULT_CLAMP),
                                       ratios.DEFAULT_CLAMP)
  means["advantage_mean"] = adv
  metrics = agg_lib.masked_stats(m, means=means, mins=mins, maxs=maxs)
  nonempty = jnp.sum(m, axis=-1) > 0
  metrics["ess"] = ratios.effective_sample_size(jnp.sum(d * m, axis=-1), nonempty)
  metrics["regularizer"] = agg_lib.aggregate(reg, m, aggregation, **kwargs)
  metrics = {k: jax.lax.stop_gradient(v) for k, v in metrics.items()}
  return types.LossOutput(loss, metrics)


def rec_loss(logp: jax.Array,
             old_logp: jax.Array,
             advantages: jax.Array,
             mask: jax.Array,
             *,
             variant: str = "oneside-nois",
             epsilon_low: float = 0.2,
             epsilon_high: float = 0.2,
             ring_epsilon_low: float = 0.6,
             ring_epsilon_high: float = 2.0,
             clamp: Optional[float] = ratios.DEFAULT_CLAMP,
             aggregation: str = "token-mean",
             max_tokens: Optional[int] = None,
             normalizer: Optional[jax.Array] = None) -> types.LossOutput:
  r"""REC, REINFORCE with clipping: tokens outside a trust region are *masked*, not clipped.

  Yao et al., arXiv 2509.24203. With the token ratio
  :math:`\rho_t = \mathrm{sg}(\pi_\theta/\pi_{old})` (log-ratio clamped to ±`clamp`),

  .. math::
     \ell_t = -\,M_t\,w_t\,A_t\log\pi_\theta(y_t),\qquad
     w_t = \rho_t\ (\text{-is})\ \text{or}\ 1\ (\text{-nois}),

  and the mask :math:`M_t` of the clip mode (ε = `epsilon_low/high`, ε' = `ring_epsilon_low/high`):

  * ``none``: 1 (``none-nois`` is plain REINFORCE, ``none-is`` unclipped IS-REINFORCE);
  * ``oneside``: :math:`[A\ge0,\ \rho\le1+\varepsilon_h] \lor [A\le0,\ \rho\ge1-\varepsilon_l]`,
    the region where PPO-clip has a gradient, so ``oneside-is`` has exactly PPO-clip's gradient
    (its loss value differs);
  * ``twoside``: :math:`1-\varepsilon_l\le\rho\le1+\varepsilon_h`;
  * ``ring``: ``twoside``, or :math:`[A\ge0,\ \rho\le1-\varepsilon'_l]`, or
    :math:`[A\le0,\ \rho\ge1+\varepsilon'_h]`:
    tokens that moved far in the *wrong* direction get their gradient back.

  Masked tokens keep their place in the denominator of the aggregation (as in Trinity-RFT). Paper
  names map as ``REC-OneSide-NoIS`` → ``'oneside-nois'``, ``REC-TwoSide-IS`` → ``'twoside-is'``,
  ``REC-Ring-NoIS`` → ``'ring-nois'``; the paper's GRPO is ``'oneside-is'`` with std-normalised
  advantages. The paper finds that dropping IS changes little while dropping the mask makes
  off-policy REINFORCE collapse, hence the default ``'oneside-nois'``. Advantages are usually
  ``rljax.group_advantages(rewards, G, scale='none')`` (Trinity-RFT's ``rec`` advantage without
  std; note Trinity uses the population std when ``std_normalize`` is on and crashes on groups of
  one, rljax uses n-1 and gives them 0).

  Defaults: ε = 0.2/0.2 and ring ε' = 0.6/2.0, the values of the paper's example configs and of
  Trinity-RFT's ``default_args``. Trinity-RFT's constructor defaults ε' to 0.4/0.4 instead, so a
  ring run built without the config silently uses a different ring; pass
  ``ring_epsilon_low=0.4, ring_epsilon_high=0.4`` to reproduce that. Trinity's extra weights
  (``truncated_importance_sampling``, ``gspo_importance_sampling``, which raises NameError outside
  its own clip mode) and ``gspo-one-side`` mode are not offered; RED-Weight's
  :math:`A e^{A/\mathrm{temp}}` can be passed in as `advantages`.

  Args:
    logp: [B, T] log π_θ of the sampled tokens (carries the gradient).
    old_logp: [B, T] log π_old (data).
    advantages: [B] or [B, T] advantages (data).
    mask: [B, T] weights.
    variant: one of `REC_VARIANTS`.
    epsilon_low, epsilon_high: ε_l, ε_h >= 0 of the trust region.
    ring_epsilon_low, ring_epsilon_high: ε'_l >= ε_l, ε'_h >= ε_h of the ring (``ring-*`` only).
    clamp: bound on |log-ratio| before ``exp`` (None disables it).
    aggregation, max_tokens, normalizer: as in `rljax.aggregate`.

  Returns:
    `LossOutput(loss, metrics)` with ``ratio_mean/min/max``, ``approx_kl``,
    ``log_ratio_clamped_frac``, ``ess``, ``clip_frac_low`` (A < 0, ρ < 1-ε_l), ``clip_frac_high``
    (A > 0, ρ > 1+ε_h), ``clip_frac`` (their union) and ``masked_frac`` (tokens with M = 0).

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> lp = jnp.log(jnp.array([[.5, .5]]))
    >>> old = jnp.log(jnp.array([[.5, .25]]))  # ratios 1 and 2: the second token is masked
    >>> out = rljax.rec_loss(lp, old, jnp.array([1.]), jnp.ones((1, 2)))
    >>> round(float(out.loss), 4), float(out.metrics['masked_frac'])  # -log .5 / 2
    (0.3466, 0.5)
  """
  validation.check_choice("variant", variant, REC_VARIANTS)
  clip_mode, weight = variant.rsplit("-", 1)
  _check_rec_epsilons(clip_mode, epsilon_low, epsilon_high, ring_epsilon_low, ring_epsilon_high)
  x = ratios.token_inputs(logp, old_logp, advantages, mask, clamp=clamp, aggregation=aggregation)
  adv, lp = x.adv, jnp.where(x.valid, logp.astype(jnp.float32), 0.0)
  rho = jnp.exp(jax.lax.stop_gradient(x.d))
  clip = ratios.ppo_clip(rho, adv, epsilon_low, epsilon_high)
  lo, hi = 1.0 - epsilon_low, 1.0 + epsilon_high
  inside = (rho >= lo) & (rho <= hi)
  if clip_mode == "none":
    keep = jnp.ones_like(x.valid)
  elif clip_mode == "oneside":
    keep = ((adv >= 0) & (rho <= hi)) | ((adv <= 0) & (rho >= lo))
  elif clip_mode == "twoside":
    keep = inside
  else:  # ring
    keep = (inside | ((adv >= 0) & (rho <= 1.0 - ring_epsilon_low))
            | ((adv <= 0) & (rho >= 1.0 + ring_epsilon_high)))
  w = rho if weight == "is" else jnp.ones_like(rho)
  per_token = jnp.where(keep, -w * adv * lp, 0.0)
  loss = agg_lib.aggregate(per_token, x.m, aggregation, max_tokens=max_tokens,
                           normalizer=normalizer)
  metrics = ratios.token_loss_metrics(
      x, clamp, means=dict(clip.fractions(), masked_frac=(~keep).astype(jnp.float32)))
  return ratios.loss_output(loss, metrics)


def _check_rec_epsilons(clip_mode, epsilon_low, epsilon_high, ring_epsilon_low,
                        ring_epsilon_high) -> None:
  for name, value in (("epsilon_low", epsilon_low), ("epsilon_high", epsilon_high)):
    validation.check_positive(name, value, strict=False)
  if clip_mode != "ring":
    return
  for name, value, inner in (("ring_epsilon_low", ring_epsilon_low, epsilon_low),
                             ("ring_epsilon_high", ring_epsilon_high, epsilon_high)):
    validation.check_positive(name, value, strict=False)
    traced = any(isinstance(x, jax.core.Tracer) for x in (value, inner))
    if not traced and float(value) < float(inner):
      raise ValueError(f"{name}={value} must be >= the inner epsilon {inner} for a ring.")
