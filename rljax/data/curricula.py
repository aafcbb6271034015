# Copyright 2026 The rljax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Prompt curricula: pure state-in/state-out samplers over prompts or difficulty buckets.

RL with verifiable rewards learns nothing from a group of completions whose rewards are all equal:
group-relative advantages vanish. The samplers here decide which prompts ("arms": prompts of a
pool, or buckets such as difficulty levels) the trainer spends its samples on, and, for
Reinforce-Ada, how many samples each prompt gets.

Every sampler is a frozen, hashable dataclass of hyperparameters with three pure methods that
follow the ``rljax.data.curricula`` contract::

    sampler = make_sampler(name, num_arms, **hyperparameters)
    state = sampler.init()                                    # pytree of arrays
    arms, state = sampler.sample(state, key, batch_size)      # int32[batch_size]
    state = sampler.update(state, arms, rewards)              # rewards [n] or [n, group_size]

States are ``NamedTuple`` pytrees of ``jax.Array`` (checkpoint them with orbax next to the
training state); ``sample`` is a deterministic function of ``(state, key)``; ``sample`` and
``update`` are jitted internally (hyperparameters and ``batch_size`` are static) and may also be
called inside a user's ``jax.jit``. Shapes are always checked; value checks (indices in range,
finite rewards, rewards in [0, 1] where required) run on concrete inputs only, so they read the
arrays back to the host: call the methods inside ``jax.jit`` to skip that synchronisation.

==================  ==========================================================================
name                rule
==================  ==========================================================================
``uniform``         uniform over arms (with or without replacement inside a batch)
``ucb`` (``ucb1``)  UCB1 index ``mean + c sqrt(2 ln T / n)``; top-``B`` arms per batch
``thompson``        Beta-Bernoulli posterior on each arm's pass rate; score ``theta`` or
                    ``theta (1 - theta)`` of a posterior draw
``exp3``            exponential weights on importance-weighted reward estimates, mixed with
                    ``gamma``-uniform exploration
``reinforce_ada``   uniform prompts; multi-round sampling per prompt until the ``pos`` /
                    ``balanced`` exit rule holds, then a fixed-size diverse group
``variance_aware``  MMR1 variance-aware sampling: half the batch proportional to
(``vas``)           ``0.8 * outcome variance + 0.2 * trajectory diversity``, half uniform
==================  ==========================================================================

:func:`dynamic_filter` is DAPO's dynamic sampling filter (drop groups whose rewards are all
equal) and reports what it dropped. :func:`reinforce_ada_advantages` is Reinforce-Ada's
global-statistics baseline. :func:`distinct_n` is a host-side trajectory-diversity score.

What the bandits optimise (``objective``): a curriculum wants prompts that give a learning
signal, not prompts the policy already solves, so the default objective is ``'variance'``
(prefer pass rates near 1/2). ``'reward'`` gives the classic reward-maximising bandit.

This module imports only jax and numpy.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "AdaGroups",
    "AdaRoundState",
    "Exp3Sampler",
    "Exp3State",
    "ReinforceAda",
    "SAMPLER_NAMES",
    "ThompsonSampler",
    "ThompsonState",
    "UCBSampler",
    "UCBState",
    "UniformSampler",
    "UniformState",
    "VarianceAwareSampler",
    "VarianceAwareState",
    "distinct_n",
    "dynamic_filter",
    "group_signal",
    "make_sampler",
    "reinforce_ada_advantages",
]

_OBJECTIVES = ("variance", "reward", "informative")

# ---------------------------------------------------------------------------------------------
# Validation helpers.
# ---------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
  return int(value)


def _check_float(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
                 hi_open: bool = False) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
    raise ValueError(f"{name} must be a number, got {value!r}.")
  v = float(value)
  bad = (not np.isfinite(v) and not (np.isinf(v) and v == hi == np.inf)) or v < lo or v > hi
  bad = bad or (lo_open and v == lo) or (hi_open and v == hi)
  if bad:
    interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    raise ValueError(f"{name} must lie in {interval}, got {value!r}.")
  return v


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
  return value


def _concrete(x: Any) -> Optional[np.ndarray]:
  """Returns x as a NumPy array, or None when x is traced (inside jit/vmap)."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _as_arm_indices(arm_indices: Any, num_arms: int) -> jax.Array:
  arm_indices = jnp.asarray(arm_indices)
  if arm_indices.ndim != 1 or not jnp.issubdtype(arm_indices.dtype, jnp.integer):
    raise ValueError(
        "arm_indices must be a 1-D integer array [n], got dtype "
        f"{arm_indices.dtype} and shape {arm_indices.shape}.")
  values = _concrete(arm_indices)
  if values is not None and values.size and (values.min() < 0 or values.max() >= num_arms):
    raise ValueError(
        f"arm_indices must lie in [0, num_arms={num_arms}), got values in "
        f"[{values.min()}, {values.max()}].")
  return arm_indices.astype(jnp.int32)


def _as_group_rewards(rewards: Any, n: int, *, min_group: int = 1,
                      unit_interval: bool = False, why: str = "") -> jax.Array:
  """Validates rewards [n] or [n, G] and returns float32 [n, G]."""
  rewards = jnp.asarray(rewards)
  if rewards.ndim == 1:
    rewards = rewards[:, None]
  if rewards.ndim != 2 or rewards.shape[0] != n:
    raise ValueError(
        f"rewards must have shape [n] or [n, group_size] with n = len(arm_indices) = {n}, "
        f"got shape {jnp.shape(rewards)}.")
  if rewards.shape[1] < min_group:
    raise ValueError(
        f"rewards must have group_size >= {min_group}{why}, got shape {rewards.shape}.")
  values = _concrete(rewards)
  if values is not None and values.size:
    if not np.all(np.isfinite(values)):
      raise ValueError("rewards must be finite; got NaN or inf.")
    if unit_interval and (values.min() < 0.0 or values.max() > 1.0):
      raise ValueError(
          f"rewards must lie in [0, 1] for this sampler, got values in "
          f"[{values.min()}, {values.max()}]; rescale them first.")
  return rewards.astype(jnp.float32)


def _check_batch_size(batch_size: Any, num_arms: int, replace: bool) -> int:
  batch_size = _check_int("batch_size", batch_size, 1)
  if not replace and batch_size > num_arms:
    raise ValueError(
        f"batch_size={batch_size} exceeds num_arms={num_arms} with replace=False; "
        "pass replace=True to draw arms with replacement.")
  return batch_size


def _scatter_add(num_arms: int, arm_indices: jax.Array, values: jax.Array) -> jax.Array:
  """Sums values [n] into [num_arms] by arm (duplicated arms accumulate)."""
  return jnp.zeros((num_arms,), values.dtype).at[arm_indices].add(values)


def _top_k_distinct(key: jax.Array, scores: jax.Array, k: int) -> jax.Array:
  """The k arms with the largest scores; ties broken uniformly at random by `key`."""
  priority = jax.random.uniform(key, scores.shape)
  order = jnp.lexsort((-priority, -scores))  # Last key is the primary key.
  return order[:k].astype(jnp.int32)


def group_signal(rewards: jax.Array, objective: str = "variance") -> jax.Array:
  """Per-group bandit reward ("learning signal") used by UCB1 and Exp3.

  For a group of rewards ``r_1..r_G`` in [0, 1] of one arm:

  * ``'reward'``: the mean ``r̄``. With G = 1 this is the plain bandit reward.
  * ``'variance'``: ``4 * (1/G) Σ_g (r_g - r̄)^2``, which lies in [0, 1] (Popoviciu). For
    Bernoulli rewards with pass rate p its expectation is ``4 p (1 - p) (G - 1) / G``, a
    monotone function of the outcome variance ``p (1 - p)`` (MMR1's OVS), maximal at p = 1/2.
  * ``'informative'``: ``1[max_g r_g > min_g r_g]``, the indicator that the group has non-zero
    advantage (the complement of DAPO's zero-variance groups); for Bernoulli rewards its
    expectation is ``1 - p^G - (1 - p)^G``.

  Args:
    rewards: float[n, G] (or [n], read as G = 1).
    objective: ``'variance'``, ``'reward'`` or ``'informative'``.

  Returns:
    float32[n].

  >>> group_signal(jnp.array([[1., 0., 1., 0.], [1., 1., 1., 1.]]), 'variance').tolist()
  [1.0, 0.0]
  """
  _check_choice("objective", objective, _OBJECTIVES)
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim == 1:
    rewards = rewards[:, None]
  if objective == "reward":
    return jnp.mean(rewards, axis=1)
  if objective == "variance":
    return 4.0 * jnp.var(rewards, axis=1)
  return (jnp.max(rewards, axis=1) > jnp.min(rewards, axis=1)).astype(jnp.float32)


def _validate_state(state: Any, cls: type, who: str) -> None:
  if not isinstance(state, cls):
    raise ValueError(
        f"state must be a {cls.__name__} (from {who}.init()), got {type(state).__name__}. "
        "When restoring with orbax, pass the initial state as the restore target.")


# ---------------------------------------------------------------------------------------------
# Uniform.
# ---------------------------------------------------------------------------------------------


class UniformState(NamedTuple):
  """State of :class:`UniformSampler` (and of :class:`ReinforceAda`'s prompt choice).

  Attributes:
    pulls: int32[K], number of groups reported to ``update`` for each arm.
    step: int32[], number of ``update`` calls.
  """

  pulls: jax.Array
  step: jax.Array


def _init_pulls_step(num_arms: int) -> tuple[jax.Array, jax.Array]:
  return jnp.zeros((num_arms,), jnp.int32), jnp.zeros((), jnp.int32)


@dataclasses.dataclass(frozen=True)
class UniformSampler:
  """Uniform prompt sampling, the baseline every curriculum is compared with.

  ``replace=False`` draws ``batch_size`` distinct arms uniformly at random (every subset of that
  size equally likely); ``replace=True`` draws them i.i.d. uniform.

  Attributes:
    num_arms: K, the number of prompts or buckets.
    replace: draw with replacement inside a batch.

  >>> s = make_sampler('uniform', 10)
  >>> arms, state = s.sample(s.init(), jax.random.key(0), 4)
  >>> arms.shape, arms.dtype
  ((4,), dtype('int32'))
  """

  num_arms: int
  replace: bool = False

  def __post_init__(self):
    _check_int("num_arms", self.num_arms, 1)

  def init(self, key: Optional[jax.Array] = None) -> UniformState:
    """Initial state (``key`` is accepted for interface symmetry and unused)."""
    del key
    return UniformState(*_init_pulls_step(self.num_arms))

  def sample(self, state: UniformState, key: jax.Array,
             batch_size: int) -> tuple[jax.Array, UniformState]:
    """Draws int32[batch_size] arm indices; the state is returned unchanged."""
    _validate_state(state, UniformState, "UniformSampler")
    batch_size = _check_batch_size(batch_size, self.num_arms, self.replace)
    return self._sample(state, key, batch_size)

  @functools.partial(jax.jit, static_argnums=(0, 3))
  def _sample(self, state, key, batch_size):
    arms = jax.random.choice(key, self.num_arms, (batch_size,), replace=self.replace)
    return arms.astype(jnp.int32), state

  def update(self, state: UniformState, arm_indices: jax.Array,
             rewards: jax.Array) -> UniformState:
    """Counts the reported groups (rewards are validated but do not change the sampling)."""
    _validate_state(state, UniformState, "UniformSampler")
    arm_indices = _as_arm_indices(arm_indices, self.num_arms)
    _as_group_rewards(rewards, arm_indices.shape[0])
    return _count_update(state, arm_indices, self.num_arms)


@functools.partial(jax.jit, static_argnums=(2,))
def _count_update(state, arm_indices, num_arms):
  ones = jnp.ones(arm_indices.shape, jnp.int32)
  return state._replace(pulls=state.pulls + _scatter_add(num_arms, arm_indices, ones),
                        step=state.step + 1)


# ---------------------------------------------------------------------------------------------
# UCB1.
# ---------------------------------------------------------------------------------------------


class UCBState(NamedTuple):
  """State of :class:`UCBSampler`.

  Attributes:
    counts: float32[K], (discounted) number of signals observed per arm, ``n(a)``.
    value_sums: float32[K], (discounted) sum of those signals, ``S(a)``.
    pulls: int32[K], undiscounted number of groups reported per arm.
    step: int32[], number of ``update`` calls.
  """

  counts: jax.Array
  value_sums: jax.Array
  pulls: jax.Array
  step: jax.Array


@dataclasses.dataclass(frozen=True)
class UCBSampler:
  """UCB1 over arms, with batched selection and optional discounting.

  Rule (Auer, Cesa-Bianchi & Fischer, "Finite-time Analysis of the Multiarmed Bandit Problem",
  Machine Learning 47, 2002; Slivkins, "Introduction to Multi-Armed Bandits", arXiv 1904.07272,
  Ch. 1, "UCB1", anytime form)::

      index(a) = S(a) / n(a) + c * sqrt(2 ln T / n(a)),    T = Σ_a n(a)
      index(a) = +inf                                         if n(a) = 0

  so every arm is tried once before any is repeated. Update with the per-group signal ``s``
  (see :func:`group_signal`): ``n(a) <- γ n(a) + #groups of a``, ``S(a) <- γ S(a) + Σ s``;
  ``γ = discount`` (1 = UCB1; < 1 is discounted UCB, Garivier & Moulines, "On Upper-Confidence
  Bound Policies for Switching Bandit Problems", ALT 2011, arXiv 0805.3415, for pass rates that
  drift as the policy learns; applied once per ``update`` call).

  Batches: ``replace=False`` takes the ``batch_size`` arms with the largest index (ties broken
  at random by the key). ``replace=True`` picks arms one at a time and, after each pick, adds a
  pending ("hallucinated") pull to that arm's count before recomputing the index (the batch
  construction of GP-BUCB, Desautels, Krause & Burdick, JMLR 2014); a never-observed arm is
  valued at 1, the top of the reward range, while it has pending pulls.

  Attributes:
    num_arms: K.
    objective: per-group signal, ``'variance'`` (default), ``'reward'`` or ``'informative'``.
    exploration: c >= 0, the bonus scale (1 in UCB1, for signals in [0, 1]).
    discount: γ in (0, 1].
    replace: see above.

  >>> s = make_sampler('ucb', 4, objective='reward')
  >>> arms, state = s.sample(s.init(), jax.random.key(0), 4)
  >>> sorted(arms.tolist())   # every arm once before any repeat
  [0, 1, 2, 3]
  """

  num_arms: int
  objective: str = "variance"
  exploration: float = 1.0
  discount: float = 1.0
  replace: bool = False

  def __post_init__(self):
    _check_int("num_arms", self.num_arms, 1)
    _check_choice("objective", self.objective, _OBJECTIVES)
    _check_float("exploration", self.exploration, 0.0, np.inf, hi_open=True)
    _check_float("discount", self.discount, 0.0, 1.0, lo_open=True)

  def init(self, key: Optional[jax.Array] = None) -> UCBState:
    """Initial state (no observations); ``key`` is unused."""
    del key
    zeros = jnp.zeros((self.num_arms,), jnp.float32)
    return UCBState(zeros, zeros, *_init_pulls_step(self.num_arms))

  def index(self, state: UCBState, pending: Optional[jax.Array] = None) -> jax.Array:
    """UCB1 indices float32[K] (``+inf`` for arms without observations).

    Args:
      state: a :class:`UCBState`.
      pending: optional float[K] of hallucinated pulls added to the counts (batch selection).
    """
    counts = state.counts if pending is None else state.counts + pending
    total = jnp.maximum(jnp.sum(counts), 1.0)
    observed = state.counts > 0
    mean = jnp.where(observed, state.value_sums / jnp.where(observed, state.counts, 1.0), 1.0)
    safe = jnp.where(counts > 0, counts, 1.0)
    bonus = self.exploration * jnp.sqrt(2.0 * jnp.log(total) / safe)
    return jnp.where(counts > 0, mean + bonus, jnp.inf)

  def sample(self, state: UCBState, key: jax.Array,
             batch_size: int) -> tuple[jax.Array, UCBState]:
    """Selects int32[batch_size] arms by UCB1 index; the state is returned unchanged."""
    _validate_state(state, UCBState, "UCBSampler")
    batch_size = _check_batch_size(batch_size, self.num_arms, self.replace)
    return self._sample(state, key, batch_size)

  @functools.partial(jax.jit, static_argnums=(0, 3))
  def _sample(self, state, key, batch_size):
    if not self.replace:
      return _top_k_distinct(key, self.index(state), batch_size), state

    def pick(pending, k):
      idx = self.index(state, pending)
      is_max = idx == jnp.max(idx)
      arm = jnp.argmax(jnp.where(is_max, jax.random.uniform(k, idx.shape), -1.0))
      return pending.at[arm].add(1.0), arm.astype(jnp.int32)

    _, arms = jax.lax.scan(pick, jnp.zeros((self.num_arms,), jnp.float32),
                           jax.random.split(key, batch_size))
    return arms, state

  def update(self, state: UCBState, arm_indices: jax.Array, rewards: jax.Array) -> UCBState:
    """Adds one signal per group: rewards float[n] or float[n, G] in [0, 1]."""
    _validate_state(state, UCBState, "UCBSampler")
    arm_indices = _as_arm_indices(arm_indices, self.num_arms)
    min_group = 1 if self.objective == "reward" else 2
    rewards = _as_group_rewards(rewards, arm_indices.shape[0], min_group=min_group,
                                unit_interval=True,
                                why=f" for objective={self.objective!r}")
    return self._update(state, arm_indices, rewards)

  @functools.partial(jax.jit, static_argnums=(0,))
  def _update(self, state, arm_indices, rewards):
    signal = group_signal(rewards, self.objective)
    ones = jnp.ones(arm_indices.shape, jnp.float32)
    return UCBState(
        counts=self.discount * state.counts + _scatter_add(self.num_arms, arm_indices, ones),
        value_sums=(self.discount * state.value_sums
                    + _scatter_add(self.num_arms, arm_indices, signal)),
        pulls=state.pulls + _scatter_add(self.num_arms, arm_indices, ones.astype(jnp.int32)),
        step=state.step + 1)


# ---------------------------------------------------------------------------------------------
# Thompson sampling.
# ---------------------------------------------------------------------------------------------


class ThompsonState(NamedTuple):
  """State of :class:`ThompsonSampler`.

  Attributes:
    alpha: float32[K], Beta posterior parameter (prior + successes).
    beta: float32[K], Beta posterior parameter (prior + failures).
    pulls: int32[K], number of groups reported per arm.
    step: int32[], number of ``update`` calls.
  """

  alpha: jax.Array
  beta: jax.Array
  pulls: jax.Array
  step: jax.Array


@dataclasses.dataclass(frozen=True)
class ThompsonSampler:
  """Thompson sampling with a Beta-Bernoulli posterior on each arm's pass rate.

  Rule (Thompson, Biometrika 1933; Agrawal & Goyal, "Analysis of Thompson Sampling for the
  Multi-armed Bandit Problem", COLT 2012, arXiv 1111.1797; Slivkins, arXiv 1904.07272, Ch. 3)::

      prior        θ_a ~ Beta(α0, β0)
      update       α_a <- α0 + γ (α_a - α0) + Σ_g r_g,   β_a <- β0 + γ (β_a - β0) + Σ_g (1 - r_g)
      selection    θ̃_a ~ Beta(α_a, β_a);  score_a = θ̃_a            (objective='reward')
                                           score_a = θ̃_a (1 - θ̃_a)   (objective='variance')

  Each of the G completions of a group counts as one Bernoulli trial; a reward in [0, 1] adds
  ``r`` successes and ``1 - r`` failures (the expected-value form of the Bernoulli update).
  ``γ = discount`` (1 = stationary) decays the evidence towards the prior once per ``update``.
  ``objective='variance'`` draws the pass rate from its posterior and scores the outcome variance
  ``θ (1 - θ)`` of the draw, so the sampler concentrates on prompts whose pass rate is near 1/2
  (those that give non-zero group advantages), exploring where the posterior is wide.

  Batches: ``replace=False`` takes the top-``batch_size`` arms of one joint posterior draw;
  ``replace=True`` makes ``batch_size`` independent posterior draws and takes the argmax of each.

  Attributes:
    num_arms: K.
    objective: ``'variance'`` (default) or ``'reward'``.
    prior_alpha: α0 > 0 (1 = uniform prior).
    prior_beta: β0 > 0.
    discount: γ in (0, 1].
    replace: see above.

  >>> s = make_sampler('thompson', 3, objective='reward')
  >>> state = s.update(s.init(), jnp.array([0, 2]), jnp.array([[1., 1., 0.], [0., 0., 0.]]))
  >>> state.alpha.tolist(), state.beta.tolist()
  ([3.0, 1.0, 1.0], [2.0, 1.0, 4.0])
  """

  num_arms: int
  objective: str = "variance"
  prior_alpha: float = 1.0
  prior_beta: float = 1.0
  discount: float = 1.0
  replace: bool = False

  def __post_init__(self):
    _check_int("num_arms", self.num_arms, 1)
    _check_choice("objective", self.objective, ("variance", "reward"))
    _check_float("prior_alpha", self.prior_alpha, 0.0, np.inf, lo_open=True, hi_open=True)
    _check_float("prior_beta", self.prior_beta, 0.0, np.inf, lo_open=True, hi_open=True)
    _check_float("discount", self.discount, 0.0, 1.0, lo_open=True)

  def init(self, key: Optional[jax.Array] = None) -> ThompsonState:
    """Prior state; ``key`` is unused."""
    del key
    ones = jnp.ones((self.num_arms,), jnp.float32)
    return ThompsonState(self.prior_alpha * ones, self.prior_beta * ones,
                         *_init_pulls_step(self.num_arms))

  def _score(self, theta):
    return theta if self.objective == "reward" else theta * (1.0 - theta)

  def sample(self, state: ThompsonState, key: jax.Array,
             batch_size: int) -> tuple[jax.Array, ThompsonState]:
    """Selects int32[batch_size] arms from posterior draws; the state is returned unchanged."""
    _validate_state(state, ThompsonState, "ThompsonSampler")
    batch_size = _check_batch_size(batch_size, self.num_arms, self.replace)
    return self._sample(state, key, batch_size)

  @functools.partial(jax.jit, static_argnums=(0, 3))
  def _sample(self, state, key, batch_size):
    k_theta, k_tie = jax.random.split(key)
    if not self.replace:
      theta = jax.random.beta(k_theta, state.alpha, state.beta)
      return _top_k_distinct(k_tie, self._score(theta), batch_size), state
    theta = jax.random.beta(k_theta, state.alpha, state.beta, (batch_size, self.num_arms))
    return jnp.argmax(self._score(theta), axis=1).astype(jnp.int32), state

  def update(self, state: ThompsonState, arm_indices: jax.Array,
             rewards: jax.Array) -> ThompsonState:
    """Adds successes/failures: rewards float[n] or float[n, G] in [0, 1]."""
    _validate_state(state, ThompsonState, "ThompsonSampler")
    arm_indices = _as_arm_indices(arm_indices, self.num_arms)
    rewards = _as_group_rewards(rewards, arm_indices.shape[0], unit_interval=True)
    return self._update(state, arm_indices, rewards)

  @functools.partial(jax.jit, static_argnums=(0,))
  def _update(self, state, arm_indices, rewards):
    successes = _scatter_add(self.num_arms, arm_indices, jnp.sum(rewards, axis=1))
    failures = _scatter_add(self.num_arms, arm_indices, jnp.sum(1.0 - rewards, axis=1))
    a0, b0, g = self.prior_alpha, self.prior_beta, self.discount
    ones = jnp.ones(arm_indices.shape, jnp.int32)
    return ThompsonState(
        alpha=a0 + g * (state.alpha - a0) + successes,
        beta=b0 + g * (state.beta - b0) + failures,
        pulls=state.pulls + _scatter_add(self.num_arms, arm_indices, ones),
        step=state.step + 1)


# ---------------------------------------------------------------------------------------------
# Exp3.
# ---------------------------------------------------------------------------------------------


class Exp3State(NamedTuple):
  """State of :class:`Exp3Sampler`.

  Attributes:
    log_weights: float32[K], log of the exponential weights, shifted so that the max is 0.
    pulls: int32[K], number of groups reported per arm.
    step: int32[], number of ``update`` calls.
  """

  log_weights: jax.Array
  pulls: jax.Array
  step: jax.Array


@dataclasses.dataclass(frozen=True)
class Exp3Sampler:
  """Exp3: exponential weights on importance-weighted reward estimates, with uniform exploration.

  Rule (Auer, Cesa-Bianchi, Freund & Schapire, "The Nonstochastic Multiarmed Bandit Problem",
  SIAM J. Comput. 32(1), 2002; Slivkins, "Introduction to Multi-Armed Bandits", arXiv 1904.07272,
  Ch. 6, which builds Exp3 as Hedge run on importance-weighted estimates with γ-uniform
  exploration mixed in; written here in the reward form)::

      p(a)   = (1 - γ) w(a) / Σ_b w(b) + γ / K
      a_j    ~ p  i.i.d. for j = 1..B                                   (sample)
      r̂(a)   = Σ_j 1[a_j = a] s_j / p(a)                                 (update)
      w(a)  <- w(a) exp(η r̂(a))

  with ``s_j`` the group's signal in [0, 1] (:func:`group_signal`). Each ``s_j 1[a_j = a] /
  p(a)`` is an unbiased estimate of arm a's mean signal, so a batch of B draws is B rounds of
  Exp3 whose feedback arrives together. Weights are stored as logs and shifted to max 0 after
  each update (p is unchanged by the shift). ``η`` defaults to ``γ / K`` (Auer et al.'s Exp3).
  Exp3 makes no stochastic assumption, so it tolerates the drift of pass rates during training.

  ``update`` must receive the arms from the preceding ``sample`` on the same state (p is
  recomputed from ``log_weights``, which only ``update`` changes). Draws are always with
  replacement: the estimate needs each draw's marginal probability p(a).

  Attributes:
    num_arms: K.
    objective: ``'variance'`` (default), ``'reward'`` or ``'informative'``.
    gamma: exploration mixing γ in (0, 1]; every p(a) >= γ / K.
    eta: learning rate η > 0; None means γ / K.

  >>> s = make_sampler('exp3', 4, gamma=0.2)
  >>> s.probabilities(s.init()).tolist()
  [0.25, 0.25, 0.25, 0.25]
  """

  num_arms: int
  objective: str = "variance"
  gamma: float = 0.1
  eta: Optional[float] = None

  def __post_init__(self):
    _check_int("num_arms", self.num_arms, 1)
    _check_choice("objective", self.objective, _OBJECTIVES)
    _check_float("gamma", self.gamma, 0.0, 1.0, lo_open=True)
    if self.eta is not None:
      _check_float("eta", self.eta, 0.0, np.inf, lo_open=True, hi_open=True)

  @property
  def learning_rate(self) -> float:
    """η actually used (``gamma / num_arms`` when ``eta`` is None)."""
    return self.gamma / self.num_arms if self.eta is None else float(self.eta)

  def init(self, key: Optional[jax.Array] = None) -> Exp3State:
    """Uniform weights; ``key`` is unused."""
    del key
    return Exp3State(jnp.zeros((self.num_arms,), jnp.float32),
                     *_init_pulls_step(self.num_arms))

  def probabilities(self, state: Exp3State) -> jax.Array:
    """Sampling distribution float32[K]: ``(1 - γ) softmax(log w) + γ / K``."""
    return ((1.0 - self.gamma) * jax.nn.softmax(state.log_weights)
            + self.gamma / self.num_arms)

  def sample(self, state: Exp3State, key: jax.Array,
             batch_size: int) -> tuple[jax.Array, Exp3State]:
    """Draws int32[batch_size] arms i.i.d. from p; the state is returned unchanged."""
    _validate_state(state, Exp3State, "Exp3Sampler")
    batch_size = _check_batch_size(batch_size, self.num_arms, replace=True)
    return self._sample(state, key, batch_size)

  @functools.partial(jax.jit, static_argnums=(0, 3))
  def _sample(self, state, key, batch_size):
    logits = jnp.log(self.probabilities(state))
    return jax.random.categorical(key, logits, shape=(batch_size,)).astype(jnp.int32), state

  def update(self, state: Exp3State, arm_indices: jax.Array, rewards: jax.Array) -> Exp3State:
    """Importance-weighted exponential-weights update: rewards float[n] or [n, G] in [0, 1]."""
    _validate_state(state, Exp3State, "Exp3Sampler")
    arm_indices = _as_arm_indices(arm_indices, self.num_arms)
    min_group = 1 if self.objective == "reward" else 2
    rewards = _as_group_rewards(rewards, arm_indices.shape[0], min_group=min_group,
                                unit_interval=True,
                                why=f" for objective={self.objective!r}")
    return self._update(state, arm_indices, rewards)

  @functools.partial(jax.jit, static_argnums=(0,))
  def _update(self, state, arm_indices, rewards):
    probs = self.probabilities(state)
    signal = group_signal(rewards, self.objective)
    estimate = _scatter_add(self.num_arms, arm_indices, signal / probs[arm_indices])
    log_w = state.log_weights + self.learning_rate * estimate
    ones = jnp.ones(arm_indices.shape, jnp.int32)
    return Exp3State(
        log_weights=log_w - jnp.max(log_w),
        pulls=state.pulls + _scatter_add(self.num_arms, arm_indices, ones),
        step=state.step + 1)


# ---------------------------------------------------------------------------------------------
# MMR1 variance-aware sampling.
# ---------------------------------------------------------------------------------------------


class VarianceAwareState(NamedTuple):
  """State of :class:`VarianceAwareSampler`.

  Attributes:
    pass_rate: float32[K], last (EMA) mean reward of each prompt, P(x).
    outcome_variance: float32[K], OVS(x) = P(x)(1 - P(x)) for binary rewards (the group's
      reward variance in general).
    diversity: float32[K], TDS(x), trajectory diversity in [0, 1].
    num_scored: int32[K], number of ``update`` calls that rescored each prompt.
    pulls: int32[K], number of groups reported per prompt.
    permutation: int32[K], the current random order of the uniform part.
    cursor: int32[], position of the next uniform draw in ``permutation`` (K = exhausted).
    step: int32[], number of ``update`` calls.
  """

  pass_rate: jax.Array
  outcome_variance: jax.Array
  diversity: jax.Array
  num_scored: jax.Array
  pulls: jax.Array
  permutation: jax.Array
  cursor: jax.Array
  step: jax.Array


@dataclasses.dataclass(frozen=True)
class VarianceAwareSampler:
  """MMR1 Variance-Aware Sampling (VAS) with the Variance Promotion Score.

  Rule ("MMR1: Enhancing Multimodal Reasoning with Variance-Aware Sampling and Open Resources",
  Leng et al., arXiv 2509.21268, §3.1-3.2 and Algorithm 1)::

      P(x)   = (1/G) Σ_g r_g                  pass rate over the prompt's rollouts
      OVS(x) = (1/G) Σ_g (r_g - P(x))^2        = P(x)(1 - P(x)) for rewards in {0, 1}
      TDS(x) = trajectory diversity in [0, 1] (e.g. :func:`distinct_n`)
      VPS(x) = α OVS(x) + β TDS(x)             α = 0.8, β = 0.2
      batch  = ⌊λB⌋ prompts drawn with replacement with probability ∝ VPS
               + B - ⌊λB⌋ prompts uniformly (λ = mix = 0.5)

  The uniform part walks a random permutation of the prompts without replacement and draws a
  fresh permutation when it wraps around (as the MMR1 sampler does). The returned batch holds
  the ⌊λB⌋ VPS draws first, then the uniform ones. ``update`` rescores the prompts it is given
  (EMA with ``momentum``, 0 = replace, the MMR1 default); MMR1 also rescores every prompt every
  ``T_update`` steps, which a trainer does by calling ``update`` with the whole pool.

  Prompts never scored start at ``initial_pass_rate`` (OVS = p(1 - p)) and
  ``initial_diversity``; the default pass rate 0.5 gives them the highest outcome variance, so
  they get explored; or pass a full initial scoring pass to ``init`` as MMR1 does. TDS stays at
  ``initial_diversity`` (default 0) until ``update`` receives ``diversity``: a constant TDS
  would add the same ``β·TDS`` to every score and flatten the VPS-proportional weights. If
  every VPS is 0 the weighted part falls back to uniform.

  Differences from the MMR1 code, chosen deliberately: weights are VPS itself as in the paper
  (``normalize='minmax'`` reproduces the code's min-max normalisation over the pool, which gives
  the lowest-scoring prompt weight 0 and makes a constant VPS uniform); diversity must increase
  with diversity (use ``1 - selfBLEU``, not raw self-BLEU) and be computed without pad tokens
  (:func:`distinct_n` takes a mask).

  Attributes:
    num_arms: K, the number of prompts.
    mix: λ in [0, 1], fraction of the batch drawn by VPS (0 = uniform, 1 = VPS only).
    variance_weight: α >= 0.
    diversity_weight: β >= 0 (α + β > 0).
    momentum: EMA momentum in [0, 1).
    normalize: ``'none'`` (paper) or ``'minmax'`` (MMR1 code).
    initial_pass_rate: in [0, 1].
    initial_diversity: in [0, 1].
  """

  num_arms: int
  mix: float = 0.5
  variance_weight: float = 0.8
  diversity_weight: float = 0.2
  momentum: float = 0.0
  normalize: str = "none"
  initial_pass_rate: float = 0.5
  initial_diversity: float = 0.0

  def __post_init__(self):
    _check_int("num_arms", self.num_arms, 1)
    _check_float("mix", self.mix, 0.0, 1.0)
    a = _check_float("variance_weight", self.variance_weight, 0.0, np.inf, hi_open=True)
    b = _check_float("diversity_weight", self.diversity_weight, 0.0, np.inf, hi_open=True)
    if a + b <= 0.0:
      raise ValueError("variance_weight + diversity_weight must be > 0, got 0.")
    _check_float("momentum", self.momentum, 0.0, 1.0, hi_open=True)
    _check_choice("normalize", self.normalize, ("none", "minmax"))
    _check_float("initial_pass_rate", self.initial_pass_rate, 0.0, 1.0)
    _check_float("initial_diversity", self.initial_diversity, 0.0, 1.0)

  def init(self, key: Optional[jax.Array] = None, *, pass_rate: Optional[jax.Array] = None,
           outcome_variance: Optional[jax.Array] = None,
           diversity: Optional[jax.Array] = None) -> VarianceAwareState:
    """Initial state, optionally from a full scoring pass over the pool.

    Args:
      key: unused (the first ``sample`` draws the first permutation from its own key).
      pass_rate: optional float[K] initial P(x).
      outcome_variance: optional float[K] initial OVS(x); defaults to P(1 - P).
      diversity: optional float[K] initial TDS(x) in [0, 1].
    """
    del key
    k = self.num_arms

    def vec(name, value, default):
      if value is None:
        return jnp.full((k,), default, jnp.float32)
      value = jnp.asarray(value, jnp.float32)
      if value.shape != (k,):
        raise ValueError(f"{name} must have shape [num_arms] = ({k},), got {value.shape}.")
      return value

    p = vec("pass_rate", pass_rate, self.initial_pass_rate)
    ovs = p * (1.0 - p) if outcome_variance is None else vec("outcome_variance",
                                                             outcome_variance, 0.0)
    tds = vec("diversity", diversity, self.initial_diversity)
    scored = jnp.zeros((k,), jnp.int32)
    return VarianceAwareState(p, ovs, tds, scored, scored, jnp.arange(k, dtype=jnp.int32),
                              jnp.asarray(k, jnp.int32), jnp.zeros((), jnp.int32))

  def scores(self, state: VarianceAwareState) -> jax.Array:
    """VPS float32[K] = ``variance_weight * OVS + diversity_weight * TDS``."""
    return (self.variance_weight * state.outcome_variance
            + self.diversity_weight * state.diversity)

  def weights(self, state: VarianceAwareState) -> jax.Array:
    """Sampling probabilities float32[K] of the VPS part (uniform when all weights are 0)."""
    vps = self.scores(state)
    if self.normalize == "minmax":
      lo, hi = jnp.min(vps), jnp.max(vps)
      vps = jnp.where(hi > lo, (vps - lo) / jnp.where(hi > lo, hi - lo, 1.0), 1.0)
    vps = jnp.maximum(vps, 0.0)
    total = jnp.sum(vps)
    return jnp.where(total > 0, vps / jnp.where(total > 0, total, 1.0), 1.0 / self.num_arms)

  def split(self, batch_size: int) -> tuple[int, int]:
    """``(⌊λB⌋, B - ⌊λB⌋)``: the number of VPS draws and of uniform draws."""
    num_weighted = int(np.floor(self.mix * batch_size + 1e-9))
    return num_weighted, batch_size - num_weighted

  def sample(self, state: VarianceAwareState, key: jax.Array,
             batch_size: int) -> tuple[jax.Array, VarianceAwareState]:
    """Draws int32[batch_size] prompts: ⌊λB⌋ by VPS, then the uniform ones."""
    _validate_state(state, VarianceAwareState, "VarianceAwareSampler")
    batch_size = _check_int("batch_size", batch_size, 1)
    _, num_uniform = self.split(batch_size)
    if num_uniform > self.num_arms:
      raise ValueError(
          f"batch_size={batch_size} asks for {num_uniform} uniform draws without replacement "
          f"but num_arms={self.num_arms}; lower batch_size or raise mix.")
    return self._sample(state, key, batch_size)

  @functools.partial(jax.jit, static_argnums=(0, 3))
  def _sample(self, state, key, batch_size):
    num_weighted, num_uniform = self.split(batch_size)
    k = self.num_arms
    k_w, k_perm = jax.random.split(key)
    weighted = jax.random.categorical(k_w, jnp.log(self.weights(state)), shape=(num_weighted,))
    pos = state.cursor + jnp.arange(num_uniform, dtype=jnp.int32)
    fresh = jax.random.permutation(k_perm, k).astype(jnp.int32)
    wrapped = pos >= k
    uniform = jnp.where(wrapped, fresh[jnp.clip(pos - k, 0, k - 1)],
                        state.permutation[jnp.clip(pos, 0, k - 1)])
    end = state.cursor + num_uniform
    new_state = state._replace(
        permutation=jnp.where(end > k, fresh, state.permutation),
        cursor=jnp.where(end > k, end - k, end).astype(jnp.int32))
    arms = jnp.concatenate([weighted.astype(jnp.int32), uniform])
    return arms, new_state

  def update(self, state: VarianceAwareState, arm_indices: jax.Array, rewards: jax.Array,
             diversity: Optional[jax.Array] = None) -> VarianceAwareState:
    """Rescores the given prompts from their groups.

    Args:
      state: a :class:`VarianceAwareState`.
      arm_indices: int[n] prompt indices (duplicates are averaged).
      rewards: float[n, G] rewards of the G >= 2 rollouts of each prompt.
      diversity: optional float[n] TDS of each group in [0, 1]; None keeps the stored TDS.

    Returns:
      The new state.
    """
    _validate_state(state, VarianceAwareState, "VarianceAwareSampler")
    arm_indices = _as_arm_indices(arm_indices, self.num_arms)
    n = arm_indices.shape[0]
    rewards = _as_group_rewards(rewards, n, min_group=2,
                                why=" (outcome variance needs several rollouts per prompt)")
    if diversity is not None:
      diversity = jnp.asarray(diversity, jnp.float32)
      if diversity.shape != (n,):
        raise ValueError(f"diversity must have shape [n] = ({n},), got {diversity.shape}.")
    return self._update(state, arm_indices, rewards, diversity)

  @functools.partial(jax.jit, static_argnums=(0,))
  def _update(self, state, arm_indices, rewards, diversity):
    k, m = self.num_arms, self.momentum
    ones = jnp.ones(arm_indices.shape, jnp.float32)
    count = _scatter_add(k, arm_indices, ones)
    hit = count > 0
    denom = jnp.where(hit, count, 1.0)

    def refresh(old, new_per_group):
      mean_new = _scatter_add(k, arm_indices, new_per_group) / denom
      return jnp.where(hit, m * old + (1.0 - m) * mean_new, old)

    tds = state.diversity if diversity is None else refresh(state.diversity, diversity)
    return state._replace(
        pass_rate=refresh(state.pass_rate, jnp.mean(rewards, axis=1)),
        outcome_variance=refresh(state.outcome_variance, jnp.var(rewards, axis=1)),
        diversity=tds,
        num_scored=state.num_scored + hit.astype(jnp.int32),
        pulls=state.pulls + count.astype(jnp.int32),
        step=state.step + 1)


def distinct_n(tokens: Any, mask: Any = None, *, n: int = 3) -> np.ndarray:
  """Trajectory diversity of a group: distinct n-grams over all n-grams (host-side, NumPy).

  ``distinct-n = |unique n-grams in the group| / |n-grams in the group|``, counted over the
  real tokens of each completion only (``mask`` removes padding; the MMR1 code counts pad
  tokens, which makes padded groups look repetitive). It is 1 when no n-gram repeats and falls
  towards ``1 / G`` as the G completions become identical. A group with no n-gram at all
  (every completion shorter than n) scores 0.

  Args:
    tokens: int[G, L] (one group) or int[P, G, L] (P groups).
    mask: optional {0,1}[same shape], 1 on real tokens.
    n: n-gram length >= 1.

  Returns:
    float32 scalar, or float32[P].

  >>> float(distinct_n(np.array([[1, 2, 3, 4], [1, 2, 3, 4]]), n=2))
  0.5
  """
  n = _check_int("n", n, 1)
  tokens = np.asarray(tokens)
  if tokens.ndim not in (2, 3):
    raise ValueError(f"tokens must have shape [G, L] or [P, G, L], got {tokens.shape}.")
  if mask is None:
    mask = np.ones(tokens.shape, bool)
  mask = np.asarray(mask).astype(bool)
  if mask.shape != tokens.shape:
    raise ValueError(f"mask must have the shape of tokens {tokens.shape}, got {mask.shape}.")
  if tokens.ndim == 3:
    return np.array([distinct_n(t, m, n=n) for t, m in zip(tokens, mask)], np.float32)
  grams = []
  for row, row_mask in zip(tokens, mask):
    real = row[row_mask].tolist()
    grams.extend(tuple(real[i:i + n]) for i in range(len(real) - n + 1))
  if not grams:
    return np.float32(0.0)
  return np.float32(len(set(grams)) / len(grams))


# ---------------------------------------------------------------------------------------------
# DAPO dynamic filtering.
# ---------------------------------------------------------------------------------------------


def dynamic_filter(group_rewards: jax.Array, *, valid: Optional[jax.Array] = None,
                   atol: float = 0.0, max_groups: Optional[int] = None,
                   positive_threshold: float = 0.5) -> tuple[jax.Array, dict[str, jax.Array]]:
  """DAPO dynamic sampling: keep only groups whose rewards are not all equal.

  Rule ("DAPO: An Open-Source LLM Reinforcement Learning System at Scale", Yu et al.,
  arXiv 2503.14476, §3.2, "Dynamic Sampling"): over-sample and filter out the prompts whose
  accuracy is 0 or 1, i.e. whose group has zero reward variance and so zero group-relative
  advantage; keep generating until the batch is full of groups with ``0 < acc < 1``. Here a
  group is kept iff ``max_g r_g - min_g r_g > atol`` over its valid entries (at least two). With
  ``max_groups`` the first ``max_groups`` informative groups (in order) are kept and the rest are
  reported as over budget, the truncation DAPO applies when the buffer overflows.

  Nothing is dropped silently: ``stats`` partitions the dropped groups by reason,
  ``num_dropped = num_dropped_all_positive + num_dropped_all_negative + num_dropped_too_small
  + num_over_budget``.

  Args:
    group_rewards: float[n, G], one row per prompt.
    valid: optional bool[n, G], False on padding entries of ragged groups.
    atol: spread at or below which a group counts as zero-variance (>= 0).
    max_groups: optional cap on the number of kept groups (>= 0).
    positive_threshold: a dropped group whose common reward is ``> positive_threshold`` is
      counted as all-positive (solved), otherwise as all-negative.

  Returns:
    ``(keep, stats)``: keep is bool[n]; stats maps ``num_groups``, ``num_kept``,
    ``num_dropped``, ``fraction_dropped``, ``num_dropped_all_positive``,
    ``num_dropped_all_negative``, ``num_dropped_too_small``, ``num_over_budget`` to scalars.

  >>> keep, stats = dynamic_filter(jnp.array([[1., 0.], [1., 1.], [0., 0.]]))
  >>> keep.tolist(), int(stats['num_dropped'])
  ([True, False, False], 2)
  """
  group_rewards = jnp.asarray(group_rewards)
  if group_rewards.ndim != 2:
    raise ValueError(f"group_rewards must have shape [n, G], got {group_rewards.shape}.")
  atol = _check_float("atol", atol, 0.0, np.inf, hi_open=True)
  positive_threshold = _check_float("positive_threshold", positive_threshold, -np.inf, np.inf,
                                    lo_open=True, hi_open=True)
  if max_groups is not None:
    max_groups = _check_int("max_groups", max_groups, 0)
  if valid is None:
    valid = jnp.ones(group_rewards.shape, bool)
  valid = jnp.asarray(valid)
  if valid.shape != group_rewards.shape:
    raise ValueError(
        f"valid must have the shape of group_rewards {group_rewards.shape}, got {valid.shape}.")
  values = _concrete(group_rewards)
  if values is not None and not np.all(np.isfinite(values)):
    raise ValueError("group_rewards must be finite; got NaN or inf.")
  return _dynamic_filter(group_rewards.astype(jnp.float32), valid.astype(bool), atol,
                         max_groups, positive_threshold)


@functools.partial(jax.jit, static_argnums=(3,))
def _dynamic_filter(rewards, valid, atol, max_groups, positive_threshold):
  n = rewards.shape[0]
  hi = jnp.max(jnp.where(valid, rewards, -jnp.inf), axis=1)
  lo = jnp.min(jnp.where(valid, rewards, jnp.inf), axis=1)
  num_valid = jnp.sum(valid, axis=1)
  too_small = num_valid < 2
  informative = (~too_small) & (hi - lo > atol)
  if max_groups is None:
    keep = informative
  else:
    keep = informative & (jnp.cumsum(informative) <= max_groups)
  flat = (~too_small) & ~informative
  all_positive = flat & (hi > positive_threshold)
  as_i32 = lambda x: jnp.sum(x).astype(jnp.int32)
  num_kept = as_i32(keep)
  stats = {
      "num_groups": jnp.asarray(n, jnp.int32),
      "num_kept": num_kept,
      "num_dropped": n - num_kept,
      "fraction_dropped": (n - num_kept) / jnp.maximum(n, 1),
      "num_dropped_all_positive": as_i32(all_positive),
      "num_dropped_all_negative": as_i32(flat & ~all_positive),
      "num_dropped_too_small": as_i32(too_small),
      "num_over_budget": as_i32(informative & ~keep),
  }
  return keep, stats


# ---------------------------------------------------------------------------------------------
# Reinforce-Ada.
# ---------------------------------------------------------------------------------------------


def reinforce_ada_advantages(kept_rewards: jax.Array, pool_rewards: jax.Array,
                             pool_mask: jax.Array, *, kept_mask: Optional[jax.Array] = None,
                             scale: str = "none", eps: float = 1e-6) -> jax.Array:
  """Reinforce-Ada's global-statistics advantage: baseline from every sample drawn.

  Rule (Reinforce-Ada, arXiv 2510.04996, §2.3)::

      A(x, a_i) = r_i - r̄_x,        r̄_x = mean of the rewards of ALL samples drawn for x
                                           (not only the n kept in the group)
      scale='std':  A(x, a_i) = (r_i - r̄_x) / max(σ_x, eps),  σ_x the unbiased (n-1) std of all
                    samples drawn for x (the paper uses scale='none')

  For binary rewards r̄_x = #pos / (#pos + #neg), the reference code's form. A prompt with at
  most one drawn sample gets advantage 0 (the reference code's GRPO path uses mean 0 and std 1
  there instead). This is the same quantity as ``rljax.global_baseline_advantages`` over all
  drawn samples, restricted to the kept ones.

  Args:
    kept_rewards: float[P, n], rewards of the samples kept in each prompt's group.
    pool_rewards: float[P, S], rewards of every sample slot drawn for each prompt.
    pool_mask: bool[P, S], True on slots that were actually drawn.
    kept_mask: optional bool[P, n], False on padding of groups shorter than n.
    scale: ``'none'`` (paper) or ``'std'``.
    eps: lower bound on σ for ``scale='std'``.

  Returns:
    float32[P, n], zero where ``kept_mask`` is False.

  >>> pool = jnp.array([[1.] + [0.] * 9])            # one success in ten draws: r̄ = 0.1
  >>> adv = reinforce_ada_advantages(jnp.array([[1., 1., 0., 0.]]), pool,
  ...                                jnp.ones_like(pool, bool))
  >>> np.asarray(adv, np.float64).round(6).tolist()
  [[0.9, 0.9, -0.1, -0.1]]
  """
  _check_choice("scale", scale, ("none", "std"))
  eps = _check_float("eps", eps, 0.0, np.inf, lo_open=True, hi_open=True)
  kept_rewards = jnp.asarray(kept_rewards, jnp.float32)
  pool_rewards = jnp.asarray(pool_rewards, jnp.float32)
  pool_mask = jnp.asarray(pool_mask).astype(bool)
  if kept_rewards.ndim != 2:
    raise ValueError(f"kept_rewards must have shape [P, n], got {kept_rewards.shape}.")
  if pool_rewards.ndim != 2 or pool_rewards.shape[0] != kept_rewards.shape[0]:
    raise ValueError(
        f"pool_rewards must have shape [P, S] with P = {kept_rewards.shape[0]}, got "
        f"{pool_rewards.shape}.")
  if pool_mask.shape != pool_rewards.shape:
    raise ValueError(
        f"pool_mask must have the shape of pool_rewards {pool_rewards.shape}, got "
        f"{pool_mask.shape}.")
  if kept_mask is None:
    kept_mask = jnp.ones(kept_rewards.shape, bool)
  kept_mask = jnp.asarray(kept_mask).astype(bool)
  if kept_mask.shape != kept_rewards.shape:
    raise ValueError(
        f"kept_mask must have the shape of kept_rewards {kept_rewards.shape}, got "
        f"{kept_mask.shape}.")
  count = jnp.sum(pool_mask, axis=1).astype(jnp.float32)
  mean = jnp.sum(jnp.where(pool_mask, pool_rewards, 0.0), axis=1) / jnp.maximum(count, 1.0)
  adv = kept_rewards - mean[:, None]
  if scale == "std":
    sq = jnp.sum(jnp.where(pool_mask, (pool_rewards - mean[:, None]) ** 2, 0.0), axis=1)
    std = jnp.sqrt(sq / jnp.maximum(count - 1.0, 1.0))
    adv = adv / jnp.maximum(std, eps)[:, None]
  return jnp.where(kept_mask & (count[:, None] > 1), adv, 0.0)


class AdaRoundState(NamedTuple):
  """Per-batch state of Reinforce-Ada's multi-round sampling (P prompts, S = R * M slots).

  Sample slot ``s`` of prompt ``p`` holds the ``s % M``-th completion drawn for ``p`` in round
  ``s // M``; a trainer stores completions in the same layout.

  Attributes:
    rewards: float32[P, S], rewards of the drawn samples (0 in slots not drawn).
    drawn: bool[P, S], True on slots that were drawn.
    active: bool[P], prompts that still receive samples in the next round.
    exit_round: int32[P], round in which the prompt met the exit rule (-1: never).
    round: int32[], number of rounds observed.
    active_per_round: int32[R], number of prompts sampled in each round.
  """

  rewards: jax.Array
  drawn: jax.Array
  active: jax.Array
  exit_round: jax.Array
  round: jax.Array
  active_per_round: jax.Array


class AdaGroups(NamedTuple):
  """The fixed-size groups Reinforce-Ada trains on.

  Attributes:
    sample_index: int32[P, n], slot (``round * M + j``) of each kept sample in the round layout.
    rewards: float32[P, n], their rewards (0 where invalid).
    valid: bool[P, n], False where a prompt has fewer than n drawn samples (never, with M >= n).
    advantages: float32[P, n], :func:`reinforce_ada_advantages` (0 where invalid).
    exited: bool[P], whether the prompt met the exit rule (False: fallback group).
    num_drawn: int32[P], samples drawn for the prompt.
    pool_mean: float32[P], mean reward over all drawn samples (the baseline r̄_x).
  """

  sample_index: jax.Array
  rewards: jax.Array
  valid: jax.Array
  advantages: jax.Array
  exited: jax.Array
  num_drawn: jax.Array
  pool_mean: jax.Array


@dataclasses.dataclass(frozen=True)
class ReinforceAda:
  """Reinforce-Ada: adaptive multi-round sampling per prompt (online successive elimination).

  Rule ("Reinforce-Ada: An Adaptive Sampling Framework for Reinforce-Style LLM Training",
  arXiv 2510.04996, Algorithm 1, §2.2-2.3)::

      all prompts x of the batch active, S_x = ∅
      for round 1..R (max_rounds):
          each active x: draw M (samples_per_round) responses, add them to S_x
          each active x: if Exit(S_x) the prompt leaves the active set
      Exit 'pos':      #pos(S_x) >= 1
      Exit 'balanced': #pos(S_x) >= ⌊n/2⌋ and #neg(S_x) >= n - ⌊n/2⌋
      pos ⇔ r > positive_threshold (0.7 in the reference code)
      group of x (n = group_size samples taken from S_x, exited or not):
          k_pos = min(⌊n/2⌋, #pos);  k_neg = min(n - k_pos, #neg)
          fill up to min(n, |S_x|) from spare positives, then spare negatives
      advantage: r_i - mean(all of S_x)                         (reinforce_ada_advantages)

  Under 'balanced' an exited group holds exactly ⌊n/2⌋ positives and n - ⌊n/2⌋ negatives; under
  'pos' it holds at least one positive and negatives if any were drawn. A prompt that never
  exits gets a group from all R·M samples drawn for it (for 'pos' such a prompt has no positive
  at all, so the reference code's ratio rule and this one both give n negatives); if its rewards
  are all equal its advantages are 0 and the group is passively filtered. Samples of each kind
  are taken in draw order (they are i.i.d.). Each prompt costs at most R·M samples.

  The prompt-level contract (``init``/``sample``/``update``) draws the batch of prompts
  uniformly, as the paper does; Reinforce-Ada decides how many samples each prompt gets through
  the per-batch round protocol::

      rs = ada.begin(P)
      while rs.active.any() (at most R times):
          rewards = <generate M completions for each active prompt>      # float[P, M]
          rs = ada.observe(rs, rewards)      # rows of inactive prompts are ignored
      groups, stats = ada.finish(rs)

  or :meth:`collect`, which runs that loop with a reward callback.

  Attributes:
    num_arms: K, the size of the prompt pool.
    group_size: n >= 2, samples per prompt in the update batch (paper: 4).
    samples_per_round: M >= n, samples per active prompt per round (paper: 8).
    max_rounds: R >= 1 (paper: 4).
    rule: ``'balanced'`` or ``'pos'``.
    positive_threshold: a sample is positive iff its reward is above this (code: 0.7).
    advantage_scale: ``'none'`` (paper) or ``'std'``.
    replace: prompt-level draws with replacement.
  """

  num_arms: int
  group_size: int = 4
  samples_per_round: int = 8
  max_rounds: int = 4
  rule: str = "balanced"
  positive_threshold: float = 0.7
  advantage_scale: str = "none"
  replace: bool = False

  def __post_init__(self):
    _check_int("num_arms", self.num_arms, 1)
    _check_int("group_size", self.group_size, 2)
    _check_int("samples_per_round", self.samples_per_round, 1)
    if self.samples_per_round < self.group_size:
      raise ValueError(
          f"samples_per_round must be >= group_size={self.group_size}, got "
          f"{self.samples_per_round}.")
    _check_int("max_rounds", self.max_rounds, 1)
    _check_choice("rule", self.rule, ("balanced", "pos"))
    _check_float("positive_threshold", self.positive_threshold, -np.inf, np.inf,
                 lo_open=True, hi_open=True)
    _check_choice("advantage_scale", self.advantage_scale, ("none", "std"))

  @property
  def budget_per_prompt(self) -> int:
    """Most samples one prompt can cost: ``max_rounds * samples_per_round``."""
    return self.max_rounds * self.samples_per_round

  # Prompt-level contract: uniform choice of the batch of prompts.

  def init(self, key: Optional[jax.Array] = None) -> UniformState:
    """Prompt-level state (pull counts); ``key`` is unused."""
    del key
    return UniformState(*_init_pulls_step(self.num_arms))

  def sample(self, state: UniformState, key: jax.Array,
             batch_size: int) -> tuple[jax.Array, UniformState]:
    """Draws the batch of prompts uniformly, int32[batch_size]."""
    _validate_state(state, UniformState, "ReinforceAda")
    batch_size = _check_batch_size(batch_size, self.num_arms, self.replace)
    return UniformSampler(self.num_arms, self.replace)._sample(state, key, batch_size)

  def update(self, state: UniformState, arm_indices: jax.Array,
             rewards: jax.Array) -> UniformState:
    """Counts the groups trained on (prompt choice does not depend on rewards)."""
    _validate_state(state, UniformState, "ReinforceAda")
    arm_indices = _as_arm_indices(arm_indices, self.num_arms)
    _as_group_rewards(rewards, arm_indices.shape[0])
    return _count_update(state, arm_indices, self.num_arms)

  # Per-batch round protocol.

  def begin(self, num_prompts: int) -> AdaRoundState:
    """Round state for a batch of ``num_prompts`` prompts, all active, nothing drawn."""
    p = _check_int("num_prompts", num_prompts, 1)
    s = self.budget_per_prompt
    return AdaRoundState(
        rewards=jnp.zeros((p, s), jnp.float32), drawn=jnp.zeros((p, s), bool),
        active=jnp.ones((p,), bool), exit_round=jnp.full((p,), -1, jnp.int32),
        round=jnp.zeros((), jnp.int32),
        active_per_round=jnp.zeros((self.max_rounds,), jnp.int32))

  def exit_condition(self, num_pos: jax.Array, num_neg: jax.Array) -> jax.Array:
    """The exit rule on counts int[...] of positive / negative samples drawn so far."""
    if self.rule == "pos":
      return num_pos >= 1
    half = self.group_size // 2
    return (num_pos >= half) & (num_neg >= self.group_size - half)

  def observe(self, state: AdaRoundState, rewards: jax.Array) -> AdaRoundState:
    """Records one round: rewards float[P, M] of the M samples of each prompt.

    Rows of prompts that are not active are ignored (pass anything there, e.g. zeros). After
    round R every prompt is inactive.
    """
    _validate_state(state, AdaRoundState, "ReinforceAda.begin")
    p = state.active.shape[0]
    rewards = jnp.asarray(rewards)
    if rewards.shape != (p, self.samples_per_round):
      raise ValueError(
          f"rewards must have shape [num_prompts, samples_per_round] = "
          f"({p}, {self.samples_per_round}), got {rewards.shape}.")
    done = _concrete(state.round)
    if done is not None and int(done) >= self.max_rounds:
      raise ValueError(f"observe was called more than max_rounds={self.max_rounds} times.")
    values, active = _concrete(rewards), _concrete(state.active)
    if values is not None and active is not None and not np.all(np.isfinite(values[active])):
      raise ValueError("rewards of active prompts must be finite; got NaN or inf.")
    return self._observe(state, rewards.astype(jnp.float32))

  @functools.partial(jax.jit, static_argnums=(0,))
  def _observe(self, state, rewards):
    m, r = self.samples_per_round, state.round
    live = state.active & (r < self.max_rounds)
    cols = r * m + jnp.arange(m)
    new_rewards = state.rewards.at[:, cols].set(
        jnp.where(live[:, None], rewards, 0.0), mode="drop")
    # The slots of round r are still empty, so inactive rows keep 0 / False there.
    new_drawn = state.drawn.at[:, cols].set(
        jnp.broadcast_to(live[:, None], rewards.shape), mode="drop")
    pos = new_drawn & (new_rewards > self.positive_threshold)
    num_pos = jnp.sum(pos, axis=1)
    num_neg = jnp.sum(new_drawn, axis=1) - num_pos
    exits = live & self.exit_condition(num_pos, num_neg)
    last = r + 1 >= self.max_rounds
    return AdaRoundState(
        rewards=new_rewards, drawn=new_drawn,
        active=live & ~exits & ~last,
        exit_round=jnp.where(exits, r, state.exit_round).astype(jnp.int32),
        round=r + 1,
        active_per_round=state.active_per_round.at[r].set(
            jnp.sum(live).astype(jnp.int32), mode="drop"))

  def finish(self, state: AdaRoundState) -> tuple[AdaGroups, dict[str, jax.Array]]:
    """Forms each prompt's group of ``group_size`` samples and its advantages.

    Returns:
      ``(groups, stats)``; stats maps ``num_prompts``, ``num_exited``, ``num_fallback``,
      ``num_samples_drawn``, ``sample_budget`` (P·R·M), ``num_samples_kept``,
      ``num_zero_variance_groups`` (kept groups with all-equal rewards, zero advantage) and
      ``rounds_used`` to scalars.
    """
    _validate_state(state, AdaRoundState, "ReinforceAda.begin")
    return self._finish(state)

  @functools.partial(jax.jit, static_argnums=(0,))
  def _finish(self, state):
    n = self.group_size
    drawn, rewards = state.drawn, state.rewards
    is_pos = drawn & (rewards > self.positive_threshold)
    is_neg = drawn & ~is_pos
    num_pos = jnp.sum(is_pos, axis=1)
    num_neg = jnp.sum(is_neg, axis=1)
    k_pos = jnp.minimum(n // 2, num_pos)
    k_neg = jnp.minimum(n - k_pos, num_neg)
    extra = jnp.minimum(num_pos - k_pos, n - k_pos - k_neg)
    k_pos = k_pos + extra
    k_neg = k_neg + jnp.minimum(num_neg - k_neg, n - k_pos - k_neg)
    pos_rank = jnp.cumsum(is_pos, axis=1) - 1
    neg_rank = jnp.cumsum(is_neg, axis=1) - 1
    keep_pos = is_pos & (pos_rank < k_pos[:, None])
    keep_neg = is_neg & (neg_rank < k_neg[:, None])
    big = rewards.shape[1] + n
    order = jnp.where(keep_pos, pos_rank, jnp.where(keep_neg, k_pos[:, None] + neg_rank, big))
    sample_index = jnp.argsort(order, axis=1, stable=True)[:, :n].astype(jnp.int32)
    take = k_pos + k_neg
    valid = jnp.arange(n)[None, :] < take[:, None]
    kept = jnp.where(valid, jnp.take_along_axis(rewards, sample_index, axis=1), 0.0)
    advantages = reinforce_ada_advantages(kept, rewards, drawn, kept_mask=valid,
                                          scale=self.advantage_scale)
    num_drawn = jnp.sum(drawn, axis=1).astype(jnp.int32)
    pool_mean = jnp.sum(rewards, axis=1) / jnp.maximum(num_drawn, 1)
    exited = state.exit_round >= 0
    spread = (jnp.max(jnp.where(valid, kept, -jnp.inf), axis=1)
              - jnp.min(jnp.where(valid, kept, jnp.inf), axis=1))
    zero_var = (take < 2) | (spread <= 0)
    p = drawn.shape[0]
    as_i32 = lambda x: jnp.sum(x).astype(jnp.int32)
    stats = {
        "num_prompts": jnp.asarray(p, jnp.int32),
        "num_exited": as_i32(exited),
        "num_fallback": as_i32(~exited),
        "num_samples_drawn": as_i32(drawn),
        "sample_budget": jnp.asarray(p * self.budget_per_prompt, jnp.int32),
        "num_samples_kept": as_i32(valid),
        "num_zero_variance_groups": as_i32(zero_var),
        "rounds_used": state.round,
    }
    groups = AdaGroups(sample_index, kept, valid, advantages, exited, num_drawn,
                       pool_mean.astype(jnp.float32))
    return groups, stats

  def collect(self, key: jax.Array, num_prompts: int,
              draw_rewards: Callable[[jax.Array, np.ndarray], Any]
              ) -> tuple[AdaGroups, dict[str, jax.Array], AdaRoundState]:
    """Runs the round loop on the host with a reward callback.

    Args:
      key: PRNG key; round r passes ``fold_in(key, r)`` to ``draw_rewards``.
      num_prompts: P.
      draw_rewards: ``(key, active bool[P]) -> float[P, M]``, generates and scores M completions
        for each active prompt (rows of inactive prompts are ignored).

    Returns:
      ``(groups, stats, round_state)``.
    """
    state = self.begin(num_prompts)
    for r in range(self.max_rounds):
      active = np.asarray(state.active)
      if not active.any():
        break
      state = self.observe(state, draw_rewards(jax.random.fold_in(key, r), active))
    groups, stats = self.finish(state)
    return groups, stats, state


# ---------------------------------------------------------------------------------------------
# Factory.
# ---------------------------------------------------------------------------------------------

_REGISTRY = {
    "uniform": UniformSampler,
    "ucb": UCBSampler,
    "ucb1": UCBSampler,
    "thompson": ThompsonSampler,
    "exp3": Exp3Sampler,
    "reinforce_ada": ReinforceAda,
    "variance_aware": VarianceAwareSampler,
    "vas": VarianceAwareSampler,
}
SAMPLER_NAMES = tuple(_REGISTRY)


def make_sampler(name: str, num_arms: int, **kwargs: Any):
  """Builds a prompt sampler by name.

  Args:
    name: one of ``SAMPLER_NAMES``: ``'uniform'``, ``'ucb'`` (``'ucb1'``), ``'thompson'``,
      ``'exp3'``, ``'reinforce_ada'``, ``'variance_aware'`` (``'vas'``).
    num_arms: K, the number of prompts or buckets.
    **kwargs: the sampler's hyperparameters (see its class).

  Returns:
    A frozen sampler with ``init``, ``sample`` and ``update``.

  >>> make_sampler('thompson', 8, objective='variance').objective
  'variance'
  """
  if name not in _REGISTRY:
    raise ValueError(f"name must be one of {SAMPLER_NAMES}, got {name!r}.")
  cls = _REGISTRY[name]
  fields = {f.name for f in dataclasses.fields(cls)} - {"num_arms"}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(
        f"unknown hyperparameter(s) {unknown} for sampler {name!r}; valid: {sorted(fields)}.")
  return cls(num_arms=num_arms, **kwargs)
