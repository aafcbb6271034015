"""Advantages and baselines: group-relative (GRPO, Dr. GRPO, REINFORCE++-baseline, Lite PPO),
RLOO, global per-prompt baselines (Reinforce-Ada), discounted returns and GAE.

Groups are contiguous runs of `group_size` completions of one prompt (B = num_prompts x
group_size), except `global_baseline_advantages`, which takes ragged `group_ids`.
Rewards are data: every function stops the gradient.
"""

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from rljax._src import validation

GROUP_SCALES = ("std", "none", "batch-std", "batch-raw-std")


def _grouped(rewards, group_size, name="rewards"):
  rewards = jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32))
  if rewards.ndim != 1:
    raise ValueError(f"{name} must have shape [B], got {list(rewards.shape)}.")
  if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
    raise ValueError(f"group_size must be a positive Python int, got {group_size!r}.")
  if rewards.shape[0] % group_size:
    raise ValueError(f"{name} has {rewards.shape[0]} entries, which is not a multiple of "
                     f"group_size={group_size} (groups are contiguous runs of group_size).")
  return rewards.reshape(-1, group_size)


def group_advantages(rewards: jax.Array,
                     group_size: int,
                     *,
                     scale: str = "std",
                     eps: float = 1e-6) -> jax.Array:
  r"""Group-relative advantages :math:`A_i = (r_i - \bar r_g) / (\sigma + \epsilon)`.

  :math:`\bar r_g` is the mean of the group of i; the modes differ in σ.

  * ``scale='std'``: GRPO (Shao et al., "DeepSeekMath", arXiv 2402.03300), σ the unbiased
    (n-1) standard deviation of the group, ε = 1e-6, as verl (``grpo``) and tunix; TRL's
    ``scale_rewards='group'`` is the same with ``eps=1e-4``.
  * ``scale='none'``: Dr. GRPO (Liu et al., "Understanding R1-Zero-Like Training", arXiv
    2503.20783): :math:`A_i = r_i - \bar r_g`. Its expected gradient is (G-1)/G times the policy
    gradient; `rloo_advantages` is the unbiased rescaling.
  * ``scale='batch-std'``: σ the (n-1) standard deviation of the *centred* rewards
    :math:`r_j - \bar r_{g(j)}` over the whole batch, the sequence-level form of
    REINFORCE++-baseline (Hu, arXiv 2501.03262). verl's and OpenRLHF's REINFORCE++-baseline
    whiten per token instead: they broadcast the centred reward over the completion's tokens,
    subtract the token-weighted batch mean and divide by the token-level std (verl
    ``masked_whiten``: Bessel over tokens, :math:`\sqrt{\mathrm{var}+10^{-8}}`; OpenRLHF:
    population variance; both without a KL reward). When every completion has the same number L
    of valid tokens that mean is 0 and their advantage is this one times
    :math:`\sqrt{(nL-1)/(L(n-1))}` (verl) or :math:`\sqrt{n/(n-1)}` (OpenRLHF), up to ε.
  * ``scale='batch-raw-std'``: σ the (n-1) standard deviation of the *raw* rewards over the whole
    batch, :math:`\sigma^2 = \frac{1}{n-1}\sum_j (r_j - \bar r)^2` with :math:`\bar r` the batch
    mean: the group-mean, batch-std advantage of Lite PPO (Liu et al., "Part I: Tricks or Traps?",
    arXiv 2508.08221) as TRL (``scale_rewards='batch'``, ``GRPOTrainer.
    _generate_and_score_completions``; reproduce it with ``eps=1e-4``) and Trinity-RFT
    (``grpo`` advantage with ``std_cal_level='batch'``, ε = 1e-6) compute it. It is never larger
    in magnitude than ``'batch-std'``: the raw variance adds the spread between group means.

  n is the batch size B. TRL gathers the rewards of every process before it takes σ; here `rewards`
  is the whole batch, so under `jit` with the batch sharded over a mesh the batch modes reduce
  over all shards the same way.

  A group whose rewards are all equal, and a group of size 1, get advantage exactly 0 (rljax's
  choice: verl and Trinity-RFT give a singleton mean 0 and σ = 1 in ``'std'``, so its raw
  reward, and Trinity-RFT's batch level divides a singleton's raw reward by the batch σ; TRL and
  tunix forbid singletons in training). A batch of one, and a batch whose rewards are all equal,
  get 0 in every mode (TRL also gives 0; Trinity-RFT gives a batch of one σ = 1).

  Args:
    rewards: [B] scalar rewards, B a multiple of `group_size`.
    group_size: completions per prompt (static Python int).
    scale: one of `GROUP_SCALES`.
    eps: added to the standard deviation.

  Returns:
    [B] float32 advantages.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> a = rljax.group_advantages(jnp.array([1., 0., 1., 1.]), 2)  # std of (1, 0) is 1/sqrt(2)
    >>> [round(float(x), 4) for x in a]
    [0.7071, -0.7071, 0.0, 0.0]
    >>> a = rljax.group_advantages(jnp.array([1., 0., 1., 1.]), 2, scale="batch-raw-std")
    >>> [round(float(x), 4) for x in a]  # the (n-1) std of (1, 0, 1, 1) is 1/2
    [1.0, -1.0, 0.0, 0.0]
  """
  validation.check_choice("scale", scale, GROUP_SCALES)
  validation.check_positive("eps", eps, strict=False)
  r = _grouped(rewards, group_size)
  mean = jnp.mean(r, axis=1, keepdims=True)
  centred = r - mean
  # A group with no spread carries no signal: exactly 0, not rounding noise / eps.
  flat = (jnp.max(r, axis=1, keepdims=True) == jnp.min(r, axis=1, keepdims=True))
  centred = jnp.where(flat, 0.0, centred)
  n = centred.size
  if scale == "none":
    adv = centred
  elif scale == "std":
    if group_size == 1:
      adv = jnp.zeros_like(r)
    else:
      std = jnp.sqrt(jnp.sum(jnp.square(centred), axis=1, keepdims=True) / (group_size - 1))
      adv = jnp.where(flat, 0.0, centred / (std + eps))
  elif n < 2:  # a batch of one has no batch std; its centred reward is 0 anyway
    adv = jnp.zeros_like(r)
  elif scale == "batch-std":
    std = jnp.sqrt(jnp.sum(jnp.square(centred)) / (n - 1))
    adv = centred / (std + eps)
  else:  # batch-raw-std
    # Two passes (batch mean, then squared deviations) keep float32 exact enough for rewards
    # with a large common offset, where E[r^2] - E[r]^2 would cancel.
    std = jnp.sqrt(jnp.sum(jnp.square(r - jnp.mean(r))) / (n - 1))
    adv = centred / (std + eps)
  return adv.reshape(-1)


def rloo_advantages(rewards: jax.Array, group_size: int) -> jax.Array:
  r"""REINFORCE leave-one-out advantages :math:`A_i = r_i - \frac{1}{G-1}\sum_{j\ne i} r_j`.

  Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from
  Human Feedback in LLMs", arXiv 2402.14740 (Kool et al. 2019). The baseline does not depend on
  :math:`y_i`, so the estimator is unbiased. Equal to :math:`\frac{G}{G-1}(r_i-\bar r)`. A group of
  size 1 has no other sample: its advantage is 0 (as tunix and verl's vectorised RLOO).

  Args:
    rewards: [B] rewards, B a multiple of `group_size`.
    group_size: completions per prompt.

  Returns:
    [B] float32.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> rljax.rloo_advantages(jnp.array([1., 0., 0.]), 3)
    Array([ 1. , -0.5, -0.5], dtype=float32)
  """
  r = _grouped(rewards, group_size)
  if group_size == 1:
    return jnp.zeros_like(r).reshape(-1)
  total = jnp.sum(r, axis=1, keepdims=True)
  return (r - (total - r) / (group_size - 1)).reshape(-1)


def global_baseline_advantages(rewards: jax.Array,
                               group_ids: jax.Array,
                               num_groups: int,
                               *,
                               mask: Optional[jax.Array] = None) -> jax.Array:
  r"""Advantages against the mean reward of *all* samples drawn for the same prompt.

  Reinforce-Ada (Xiong et al., "Reinforce-Ada: An Adaptive Sampling Framework for
  Reinforce-Style LLM Training", arXiv 2510.04996): after multi-round sampling, the baseline
  of prompt g is the mean over every sample drawn for it, :math:`A_i = r_i - \bar r_{g(i)}`, with
  no standard-deviation scaling. Groups may be ragged.

  Args:
    rewards: [N] rewards of all samples.
    group_ids: [N] int prompt index in [0, num_groups).
    num_groups: static number of prompts.
    mask: optional [N] validity (invalid samples get 0 and do not enter the baselines).

  Returns:
    [N] float32.
  """
  rewards = jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32))
  if rewards.ndim != 1:
    raise ValueError(f"rewards must have shape [N], got {list(rewards.shape)}.")
  validation.check_shape("group_ids", group_ids, rewards.shape)
  if not isinstance(num_groups, int) or num_groups < 1:
    raise ValueError(f"num_groups must be a positive Python int, got {num_groups!r}.")
  w = jnp.ones_like(rewards) if mask is None else validation.mask_as_float(mask)
  if mask is not None:
    validation.check_shape("mask", mask, rewards.shape)
  ids = jnp.asarray(group_ids, jnp.int32)
  if not isinstance(group_ids, jax.core.Tracer):
    lo, hi = int(jnp.min(ids, initial=0)), int(jnp.max(ids, initial=0))
    if lo < 0 or hi >= num_groups:
      raise ValueError(f"group_ids must lie in [0, num_groups={num_groups}), got values in "
                       f"[{lo}, {hi}].")
  sums = jax.ops.segment_sum(rewards * w, ids, num_segments=num_groups)
  counts = jax.ops.segment_sum(w, ids, num_segments=num_groups)
  means = sums / jnp.maximum(counts, 1.0)
  return jnp.where(w > 0, rewards - means[ids], 0.0)


def discounted_returns(rewards: jax.Array, mask: jax.Array, *, discount: float = 1.0) -> jax.Array:
  r"""Reward-to-go :math:`G_t = r_t + \gamma G_{t'}` over valid tokens (t' the next valid one).

  Batch-major [B, T]; a reverse `lax.scan` over time. Masked positions are skipped (their output
  is 0 and the running return passes through them unchanged).

  Args:
    rewards: [B, T] per-token rewards.
    mask: [B, T] validity.
    discount: γ in [0, 1].

  Returns:
    [B, T] float32.
  """
  rewards = jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32))
  validation.check_token_inputs(rewards, mask)
  valid = validation.mask_as_float(mask) > 0
  r = jnp.where(valid, rewards, 0.0)

  def step(g, xs):
    r_t, v_t = xs
    g = jnp.where(v_t, r_t + discount * g, g)
    return g, jnp.where(v_t, g, 0.0)

  _, out = jax.lax.scan(step, jnp.zeros(r.shape[0]), (r.T, valid.T), reverse=True)
  return out.T


def gae_advantages(rewards: jax.Array,
                   values: jax.Array,
                   mask: jax.Array,
                   *,
                   discount: float = 1.0,
                   lambda_: float = 1.0) -> Tuple[jax.Array, jax.Array]:
  r"""Generalised advantage estimation (Schulman et al., arXiv 1506.02438).

  :math:`\delta_t = r_t + \gamma V_{t'} - V_t`, :math:`A_t = \delta_t + \gamma\lambda A_{t'}`,
  with t' the next valid token and :math:`V = 0` after the last one. Masked positions are
  skipped. No whitening (do it explicitly if wanted). Returns are :math:`A_t + V_t`.

  Args:
    rewards: [B, T] per-token rewards.
    values: [B, T] value estimates (data; stop-gradient).
    mask: [B, T] validity.
    discount: γ.
    lambda_: λ.

  Returns:
    (advantages [B, T], returns [B, T]), both 0 on masked positions.
  """
  rewards = jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32))
  values = jax.lax.stop_gradient(jnp.asarray(values, jnp.float32))
  validation.check_token_inputs(rewards, mask, values=values)
  valid = validation.mask_as_float(mask) > 0
  r = jnp.where(valid, rewards, 0.0)
  v = jnp.where(valid, values, 0.0)

  def step(carry, xs):
    next_value, next_adv = carry
    r_t, v_t, ok = xs
    delta = r_t + discount * next_value - v_t
    adv = delta + discount * lambda_ * next_adv
    carry = (jnp.where(ok, v_t, next_value), jnp.where(ok, adv, next_adv))
    return carry, jnp.where(ok, adv, 0.0)

  zeros = jnp.zeros(r.shape[0])
  _, adv = jax.lax.scan(step, (zeros, zeros), (r.T, v.T, valid.T), reverse=True)
  adv = adv.T
  return adv, jnp.where(valid, adv + v, 0.0)
