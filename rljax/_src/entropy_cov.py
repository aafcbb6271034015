r"""Clip-Cov and KL-Cov: entropy control by restraining high-covariance tokens.

Cui, Zhang, Chen, Yuan, Wang, Zuo, Li, Fan, Chen, Chen, ... and Ding, "The Entropy Mechanism of
Reinforcement Learning for Reasoning Language Models", arXiv 2505.22617. For a softmax policy the
entropy change of one update is :math:`\Delta H \approx -\mathrm{Cov}_{a\sim\pi}(\log\pi(a),
\Delta z_a)`, and under policy gradient :math:`\Delta z_a \propto \pi(a)A(a)`: tokens that are both
likely and advantageous drive the entropy down. In a batch of N valid tokens the paper scores each
token by the centred product

.. math::
   \mathrm{Cov}_i = \big(\log\pi_\theta(y_i) - \overline{\log\pi_\theta}\big)\big(A_i - \bar A\big)

(means over the valid tokens; a per-token term, not a covariance over the vocabulary) and
restrains a small fraction of the highest-scoring tokens. rljax computes the statistics and the
selection over the *whole* batch given to one call (under ``jit`` over a mesh the means, counts
and top-k are global), not per micro-batch as the reference code does, so the selection does not
depend on how the batch is split; pass a precomputed `selection` to reuse a full-batch selection
on micro-batches.
"""

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from rljax._src import aggregation as agg_lib
from rljax._src import kernels
from rljax._src import ratios
from rljax._src import types
from rljax._src import validation


def _check_fraction(name: str, value) -> None:
  if isinstance(value, jax.core.Tracer):
    raise ValueError(f"{name} must be a static Python float (it sets a static top-k size).")
  v = float(value)
  if not 0.0 < v <= 1.0:
    raise ValueError(f"{name} must be in (0, 1], got {value}.")


def _num_selected(fraction: float, valid: jax.Array) -> Tuple[jax.Array, int]:
  """max(floor(fraction * N), 1) with N the number of valid tokens; and its static upper bound."""
  n = kernels.count(valid)
  k = jnp.maximum(jnp.floor(fraction * n.astype(jnp.float32)).astype(jnp.int32), 1)
  k_max = min(max(int(fraction * valid.size), 1), valid.size)
  return jnp.minimum(k, k_max), k_max


def _top_k_mask(scores: jax.Array, eligible: jax.Array, k: jax.Array, k_max: int) -> jax.Array:
  """Boolean mask of the `k` (traced, <= k_max) highest-scoring eligible entries.

  Ties go to the lower index; a NaN score ranks with -inf (below every number).
  """
  flat_eligible = eligible.reshape(-1)
  flat_scores = scores.reshape(-1)
  flat = jnp.where(flat_eligible & ~jnp.isnan(flat_scores), flat_scores, -jnp.inf)
  idx = kernels.top_k_indices(flat, k_max)
  take = (jnp.arange(k_max) < k) & flat_eligible[idx]
  return jnp.zeros(flat.shape, bool).at[idx].set(take).reshape(scores.shape)


def token_covariance(logp: jax.Array, advantages: jax.Array, mask: jax.Array) -> jax.Array:
  r"""Per-token centred product :math:`(\log\pi_i - \overline{\log\pi})(A_i - \bar A)`.

  Args:
    logp: [B, T] log-probs under the current policy (treated as data here).
    advantages: [B] or [B, T] advantages.
    mask: [B, T] weights; the means are weighted token means over the whole batch.

  Returns:
    [B, T] float32, 0 on masked tokens. Its token mean is the batch covariance.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> c = rljax.token_covariance(jnp.array([[-1., -3.]]), jnp.array([[1., -1.]]),
    ...                            jnp.ones((1, 2)))
    >>> [float(x) for x in c[0]]
    [1.0, 1.0]
  """
  validation.check_token_inputs(logp, mask)
  m = validation.mask_as_float(mask)
  valid = m > 0
  lp = jax.lax.stop_gradient(logp.astype(jnp.float32))
  count = jnp.maximum(jnp.sum(m), 1.0)  # the denominator of `rljax.masked_mean`
  # The means as masked row sums (`masked_row_sums`: one fused pass on the CPU, the select only
  # where a weight-0 token holds inf or NaN), and no [B, T] broadcast of sequence advantages.
  lp_mean = jnp.sum(agg_lib.masked_row_sums(lp, m)) / count
  adv = jax.lax.stop_gradient(jnp.asarray(advantages, jnp.float32))
  if adv.ndim == 1:  # sequence advantages: the token mean is a sum over rows of A_i |y_i|
    validation.check_shape("advantages", adv, (logp.shape[0],))
    adv_mean = jnp.sum(adv * jnp.sum(m, axis=-1)) / count
    adv = adv[:, None]
  else:
    validation.check_shape("advantages", adv, logp.shape)
    adv_mean = jnp.sum(agg_lib.masked_row_sums(adv, m)) / count
  return jnp.where(valid, (lp - lp_mean) * (adv - adv_mean), 0.0)


def clip_cov_selection(logp: jax.Array,
                       old_logp: jax.Array,
                       advantages: jax.Array,
                       mask: jax.Array,
                       key: jax.Array,
                       *,
                       clip_ratio: float = 2e-4,
                       cov_lower: float = 1.0,
                       cov_upper: float = 5.0,
                       epsilon_low: float = 1.0,
                       epsilon_high: float = 1.0,
                       clamp: Optional[float] = ratios.DEFAULT_CLAMP) -> jax.Array:
  r"""The tokens Clip-Cov detaches: a uniformly random subset of the covariance band.

  Candidates are valid tokens with ``cov_lower < Cov_i < cov_upper`` (strict, as in the paper's
  code) that PPO-clip has not already clipped; ``max(floor(clip_ratio * N), 1)`` of them (N the
  number of valid tokens; all of them if there are fewer) are drawn uniformly without
  replacement: each candidate gets an independent uniform priority from `key`'s Threefry stream
  (both 32-bit words of each block, see `kernels.uniform_priority`) and the highest priorities win.
  Deterministic given `key` and independent of how the batch is sharded.

  Args:
    logp, old_logp: [B, T] current and old log-probs.
    advantages: [B] or [B, T].
    mask: [B, T].
    key: a PRNG key.
    clip_ratio, cov_lower, cov_upper, epsilon_low, epsilon_high, clamp: as in `clip_cov_loss`.

  Returns:
    bool [B, T], True on the selected tokens.
  """
  validation.check_token_inputs(logp, mask, old_logp=old_logp)
  _check_fraction("clip_ratio", clip_ratio)
  traced = any(isinstance(x, jax.core.Tracer) for x in (cov_lower, cov_upper))
  if not traced and not float(cov_lower) < float(cov_upper):
    raise ValueError(f"cov_lower={cov_lower} must be < cov_upper={cov_upper}.")
  valid = validation.mask_as_float(mask) > 0
  adv = jnp.where(valid, validation.advantages_as_tokens(advantages, logp), 0.0)
  d = ratios.log_ratio(logp, old_logp, mask, level="token", clamp=clamp)
  clip = ratios.ppo_clip(jnp.exp(jax.lax.stop_gradient(d)), adv, epsilon_low, epsilon_high)
  candidate = _candidates(valid, clip, token_covariance(logp, advantages, mask), cov_lower,
                          cov_upper)
  k, k_max = _num_selected(clip_ratio, valid)
  return _top_k_mask(kernels.uniform_priority(key, logp.shape), candidate, k, k_max)


def _candidates(valid, clip, cov, cov_lower, cov_upper):
  """Clip-Cov's candidates: valid tokens PPO-clip keeps, strictly inside the covariance band."""
  return valid & ~(clip.low | clip.high) & (cov > cov_lower) & (cov < cov_upper)


def kl_cov_selection(logp: jax.Array,
                     advantages: jax.Array,
                     mask: jax.Array,
                     *,
                     kl_cov_ratio: float = 2e-3) -> jax.Array:
  """The tokens KL-Cov penalises: the ``max(floor(kl_cov_ratio * N), 1)`` largest ``Cov_i``.

  Over all valid tokens of the batch (N of them); ties go to the lower flat index. Deterministic.

  Args:
    logp: [B, T] current log-probs.
    advantages: [B] or [B, T].
    mask: [B, T].
    kl_cov_ratio: the fraction k of tokens to penalise.

  Returns:
    bool [B, T], True on the selected tokens.
  """
  validation.check_token_inputs(logp, mask)
  _check_fraction("kl_cov_ratio", kl_cov_ratio)
  valid = validation.mask_as_float(mask) > 0
  cov = token_covariance(logp, advantages, mask)
  k, k_max = _num_selected(kl_cov_ratio, valid)
  return _top_k_mask(cov, valid, k, k_max)


def _check_selection(selection, logp, valid):
  validation.check_shape("selection", selection, logp.shape)
  return jax.lax.stop_gradient(jnp.asarray(selection)).astype(bool) & valid


def _metrics(x, clamp, cov, selected, means=None, sums=None):
  """Ratio statistics, selection counts and covariance, in one fused reduction."""
  sel = selected.astype(jnp.float32)
  means = dict(selected_frac=sel, cov_mean=cov, **(means or {}))
  return ratios.token_loss_metrics(x, clamp, means=means, sums=dict(num_selected=sel,
                                                                      **(sums or {})))


def clip_cov_loss(logp: jax.Array,
                  old_logp: jax.Array,
                  advantages: jax.Array,
                  mask: jax.Array,
                  key: jax.Array,
                  *,
                  clip_ratio: float = 2e-4,
                  cov_lower: float = 1.0,
                  cov_upper: float = 5.0,
                  epsilon_low: float = 1.0,
                  epsilon_high: float = 1.0,
                  clamp: Optional[float] = ratios.DEFAULT_CLAMP,
                  selection: Optional[jax.Array] = None,
                  aggregation: str = "token-mean",
                  max_tokens: Optional[int] = None,
                  normalizer: Optional[jax.Array] = None) -> types.LossOutput:
  r"""Clip-Cov: PPO-clip with a few random high-covariance tokens detached.

  Cui et al., arXiv 2505.22617 (see the module docstring for :math:`\mathrm{Cov}_i`). With
  :math:`\rho_t = \pi_\theta/\pi_{old}` and :math:`I` the tokens of `clip_cov_selection`,

  .. math:: \ell_t = \begin{cases}\max\big(-A_t\rho_t,\ -A_t\,\mathrm{clip}(\rho_t, 1-\varepsilon_l,
     1+\varepsilon_h)\big) & t\notin I\\ 0 & t\in I\end{cases}

  so the selected tokens contribute neither value nor gradient (they stay in the aggregation's
  denominator, as in the paper's code) and every other token has exactly PPO-clip's gradient.
  Defaults are the paper's recipe (``recipe/dapo/*_clip_cov.sh``, also verl's): r = 2e-4,
  band (1, 5), token-mean, and ``clip_ratio_low = clip_ratio_high = 1``, i.e. a PPO window of
  [0, 2] (verl's generic default is 0.2/0.2: pass ``epsilon_low=epsilon_high=0.2``). The recipe's
  dual-clip constant is not used by its Clip-Cov loss, and rljax has none here either.

  Differences from the reference code and verl: the selection is global over the call and
  deterministic given `key` (they draw it with ``torch.randperm`` per micro-batch, so it is
  neither reproducible nor independent of the micro-batch size), and the log-ratio is clamped to
  ±`clamp` (they have no clamp). As in the paper, at least one token is detached whenever the
  band holds a candidate.

  Args:
    logp: [B, T] log π_θ of the sampled tokens (carries the gradient).
    old_logp: [B, T] log π_old (data).
    advantages: [B] or [B, T] advantages (data).
    mask: [B, T] weights.
    key: PRNG key for the random choice among candidates.
    clip_ratio: r in (0, 1], the fraction of valid tokens to detach (static).
    cov_lower, cov_upper: ω_low < ω_high, the covariance band.
    epsilon_low, epsilon_high: the PPO window [1-ε_l, 1+ε_h].
    clamp: bound on |log-ratio| before ``exp`` (None disables it).
    selection: optional bool [B, T] precomputed selection (e.g. from `clip_cov_selection` on the
      full batch, sliced per micro-batch); overrides `key` and the band.
    aggregation, max_tokens, normalizer: as in `rljax.aggregate`.

  Returns:
    `LossOutput(loss, metrics)` with ``ratio_mean/min/max``, ``approx_kl``,
    ``log_ratio_clamped_frac``, ``ess``, ``clip_frac_low/high``, ``clip_frac`` (PPO clipping),
    ``masked_frac`` (= ``selected_frac``, the fraction of valid tokens detached),
    ``num_selected``, ``num_candidates`` and ``cov_mean`` (the batch covariance).

  Example:
    >>> import jax, jax.numpy as jnp, rljax
    >>> logp = jnp.log(jnp.array([[.9, .1, .5, .5]]))
    >>> adv = jnp.array([[4., -4., 0., 0.]])  # Cov = [3.37, 5.42, 0, 0]: only token 0 in (1, 5)
    >>> out = rljax.clip_cov_loss(logp, logp, adv, jnp.ones((1, 4)), jax.random.PRNGKey(0))
    >>> float(out.metrics['num_selected']), float(out.loss)  # token 0 detached: (0 + 4) / 4
    (1.0, 1.0)
  """
  x = ratios.token_inputs(logp, old_logp, advantages, mask, clamp=clamp, aggregation=aggregation)
  clip = ratios.ppo_clip(jnp.exp(x.d), x.adv, epsilon_low, epsilon_high)
  cov = token_covariance(logp, advantages, mask)
  if selection is None:
    selected = clip_cov_selection(logp, old_logp, advantages, mask, key, clip_ratio=clip_ratio,
                                  cov_lower=cov_lower, cov_upper=cov_upper,
                                  epsilon_low=epsilon_low, epsilon_high=epsilon_high,
                                  clamp=clamp)
  else:
    selected = _check_selection(selection, logp, x.valid)
  per_token = jnp.where(selected, 0.0, clip.loss)
  loss = agg_lib.aggregate(per_token, x.m, aggregation, max_tokens=max_tokens,
                           normalizer=normalizer)
  candidates = _candidates(x.valid, clip, cov, cov_lower, cov_upper)
  metrics = _metrics(x, clamp, cov, selected, means=clip.fractions(),
                     sums={"num_candidates": candidates.astype(jnp.float32)})
  metrics["masked_frac"] = metrics["selected_frac"]
  return ratios.loss_output(loss, metrics)


def kl_cov_loss(logp: jax.Array,
                old_logp: jax.Array,
                advantages: jax.Array,
                mask: jax.Array,
                *,
                kl_cov_ratio: float = 2e-3,
                kl_coef: float = 1.0,
                clamp: Optional[float] = ratios.DEFAULT_CLAMP,
                selection: Optional[jax.Array] = None,
                aggregation: str = "token-mean",
                max_tokens: Optional[int] = None,
                normalizer: Optional[jax.Array] = None) -> types.LossOutput:
  r"""KL-Cov: the unclipped surrogate plus an absolute log-ratio penalty on the top-Cov tokens.

  Cui et al., arXiv 2505.22617 (see the module docstring for :math:`\mathrm{Cov}_i`). With
  :math:`d_t = \log\pi_\theta - \log\pi_{old}`, :math:`\rho_t = e^{d_t}` and :math:`I` the
  ``max(floor(k N), 1)`` valid tokens with the largest :math:`\mathrm{Cov}_i` (`kl_cov_selection`),

  .. math:: \ell_t = -A_t\rho_t + \beta_{KL}\,|d_t|\,[t\in I].

  There is no PPO clipping, and the penalty is the *absolute* log-ratio. Unselected tokens have
  exactly the gradient of :math:`-A\rho`. The reference code's ``abs`` (torch) has derivative 0 at
  0, so the penalty has no gradient while :math:`\pi_\theta = \pi_{old}`: on the first on-policy
  mini-batch KL-Cov equals the plain surrogate and acts only on later ones. rljax keeps that
  (``jnp.abs`` has derivative 1 at 0, which would push every selected token down on-policy).

  Defaults follow the paper's 7B setting (k = 2e-3, β_KL = 1; the recipe scripts store k as the
  percentage ``k_percent=0.2``; the 32B setting is k = 2e-4). verl's ``kl_cov`` uses
  ``kl_cov_ratio=2e-4`` and ``ppo_kl_coef=0.1`` in its yaml (1.0 in the code's fallback): pass
  ``kl_cov_ratio=2e-4, kl_coef=0.1`` to reproduce it. The selection is global over the call
  (the reference code selects per micro-batch), and the log-ratio is clamped to ±`clamp`.

  Args:
    logp: [B, T] log π_θ of the sampled tokens (carries the gradient).
    old_logp: [B, T] log π_old (data).
    advantages: [B] or [B, T] advantages (data).
    mask: [B, T] weights.
    kl_cov_ratio: k in (0, 1], the fraction of valid tokens to penalise (static).
    kl_coef: β_KL >= 0.
    clamp: bound on |log-ratio| before ``exp`` (None disables it).
    selection: optional bool [B, T] precomputed selection (e.g. `kl_cov_selection` on the full
      batch, sliced per micro-batch).
    aggregation, max_tokens, normalizer: as in `rljax.aggregate`.

  Returns:
    `LossOutput(loss, metrics)` with ``ratio_mean/min/max``, ``approx_kl``,
    ``log_ratio_clamped_frac``, ``ess``, ``num_selected``, ``selected_frac``, ``cov_mean``,
    ``kl_cov_abs_log_ratio`` (mean |d| over the selected tokens) and ``masked_frac`` (0: KL-Cov
    removes no token).

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> logp = jnp.log(jnp.array([[.5, .25, .25]]))
    >>> old = jnp.log(jnp.array([[.25, .25, .25]]))
    >>> out = rljax.kl_cov_loss(logp, old, jnp.array([[1., -1., 0.]]), jnp.ones((1, 3)))
    >>> # Cov = [.46, .23, 0]: token 0 penalised: (-1 * 2 + log 2) + (1 * 1) + 0, token mean
    >>> round(float(out.loss), 4)
    -0.1023
  """
  validation.check_positive("kl_coef", kl_coef, strict=False)
  x = ratios.token_inputs(logp, old_logp, advantages, mask, clamp=clamp, aggregation=aggregation)
  cov = token_covariance(logp, advantages, mask)
  if selection is None:
    selected = kl_cov_selection(logp, advantages, mask, kl_cov_ratio=kl_cov_ratio)
  else:
    selected = _check_selection(selection, logp, x.valid)
  # |d| as sign(d) * d: its derivative at d = 0 is 0, as torch's abs (jnp.abs has 1 there, which
  # would make the penalty push on-policy tokens down).
  abs_d = jnp.sign(x.d) * x.d
  per_token = -x.adv * jnp.exp(x.d) + jnp.where(selected, kl_coef * abs_d, 0.0)
  loss = agg_lib.aggregate(per_token, x.m, aggregation, max_tokens=max_tokens,
                           normalizer=normalizer)
  metrics = _metrics(x, clamp, cov, selected,
                     sums={"kl_cov_abs_log_ratio": jnp.where(selected, abs_d, 0.0)})
  metrics["kl_cov_abs_log_ratio"] /= jnp.maximum(metrics["num_selected"], 1.0)
  metrics["masked_frac"] = jnp.zeros((), jnp.float32)
  return ratios.loss_output(loss, metrics)
