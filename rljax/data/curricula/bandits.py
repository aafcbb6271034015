# Copyright 2026 The rljax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Bandit curricula over prompts or buckets: UCB1, Thompson sampling and Exp3.

What the bandits optimise (``objective``): a curriculum wants prompts that give a learning
signal, not prompts the policy already solves, so the default objective is ``'variance'``
(prefer pass rates near 1/2). ``'reward'`` gives the classic reward-maximising bandit.
:func:`group_signal` turns a group of rewards into the bandit's per-pull signal.

References: Auer, Cesa-Bianchi & Fischer, "Finite-time Analysis of the Multiarmed Bandit
Problem", Machine Learning 47, 2002 (UCB1); Agrawal & Goyal, "Analysis of Thompson Sampling for
the Multi-armed Bandit Problem", arXiv 1111.1797; Auer, Cesa-Bianchi, Freund & Schapire, "The
Nonstochastic Multiarmed Bandit Problem", SIAM J. Comput. 32(1), 2002 (Exp3); Slivkins,
"Introduction to Multi-Armed Bandits", arXiv 1904.07272.

This module imports only jax and numpy.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rljax.data.curricula.base import _as_group_rewards
from rljax.data.curricula.base import _check_batch_size
from rljax.data.curricula.base import _check_choice
from rljax.data.curricula.base import _check_float
from rljax.data.curricula.base import _init_pulls_step
from rljax.data.curricula.base import _scatter_add
from rljax.data.curricula.base import Curriculum

_OBJECTIVES = ("variance", "reward", "informative")


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



def _check_signal_rewards(objective: str, rewards: Any, n: int) -> jax.Array:
  """Rewards in [0, 1]; the spread-based objectives need at least two per group."""
  min_group = 1 if objective == "reward" else 2
  return _as_group_rewards(rewards, n, min_group=min_group, unit_interval=True,
                           why=f" for objective={objective!r}")


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
class UCBSampler(Curriculum):
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
  valued at 1, the top of the reward range, while it has pending pulls. ``sample`` returns the
  state unchanged; ``update`` takes rewards float[n] or float[n, G] in [0, 1], one signal a group.

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

  objective: str = "variance"
  exploration: float = 1.0
  discount: float = 1.0
  replace: bool = False
  state_type = UCBState

  def __post_init__(self):
    super().__post_init__()
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

  def _check_rewards(self, rewards: Any, n: int) -> jax.Array:
    return _check_signal_rewards(self.objective, rewards, n)

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
class ThompsonSampler(Curriculum):
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
  ``sample`` returns the state unchanged; ``update`` takes rewards float[n] or [n, G] in [0, 1].

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

  objective: str = "variance"
  prior_alpha: float = 1.0
  prior_beta: float = 1.0
  discount: float = 1.0
  replace: bool = False
  state_type = ThompsonState

  def __post_init__(self):
    super().__post_init__()
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

  @functools.partial(jax.jit, static_argnums=(0, 3))
  def _sample(self, state, key, batch_size):
    k_theta, k_tie = jax.random.split(key)
    if not self.replace:
      theta = jax.random.beta(k_theta, state.alpha, state.beta)
      return _top_k_distinct(k_tie, self._score(theta), batch_size), state
    theta = jax.random.beta(k_theta, state.alpha, state.beta, (batch_size, self.num_arms))
    return jnp.argmax(self._score(theta), axis=1).astype(jnp.int32), state

  def _check_rewards(self, rewards: Any, n: int) -> jax.Array:
    return _as_group_rewards(rewards, n, unit_interval=True)

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
class Exp3Sampler(Curriculum):
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
  replacement: the estimate needs each draw's marginal probability p(a). ``sample`` returns the
  state unchanged; ``update`` takes rewards float[n] or [n, G] in [0, 1].

  Attributes:
    num_arms: K.
    objective: ``'variance'`` (default), ``'reward'`` or ``'informative'``.
    gamma: exploration mixing γ in (0, 1]; every p(a) >= γ / K.
    eta: learning rate η > 0; None means γ / K.

  >>> s = make_sampler('exp3', 4, gamma=0.2)
  >>> s.probabilities(s.init()).tolist()
  [0.25, 0.25, 0.25, 0.25]
  """

  objective: str = "variance"
  gamma: float = 0.1
  eta: Optional[float] = None
  state_type = Exp3State

  def __post_init__(self):
    super().__post_init__()
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

  def _check_batch_size(self, batch_size: Any) -> int:
    return _check_batch_size(batch_size, self.num_arms, replace=True)

  @functools.partial(jax.jit, static_argnums=(0, 3))
  def _sample(self, state, key, batch_size):
    logits = jnp.log(self.probabilities(state))
    return jax.random.categorical(key, logits, shape=(batch_size,)).astype(jnp.int32), state

  def _check_rewards(self, rewards: Any, n: int) -> jax.Array:
    return _check_signal_rewards(self.objective, rewards, n)

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


