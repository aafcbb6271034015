# Copyright 2026 The rljax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Reinforce-Ada: adaptive multi-round sampling per prompt, with a global-statistics baseline.

"Reinforce-Ada: An Adaptive Sampling Framework for Reinforce-Style LLM Training",
arXiv 2510.04996. Prompts are drawn uniformly; each prompt gets rounds of samples until its
``pos`` / ``balanced`` exit rule holds, then a fixed-size diverse group whose advantages use the
mean reward of every sample drawn for the prompt (:func:`reinforce_ada_advantages`).

This module imports only jax and numpy.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rljax.data.curricula.base import _check_choice
from rljax.data.curricula.base import _check_drawn
from rljax.data.curricula.base import _check_float
from rljax.data.curricula.base import _check_int
from rljax.data.curricula.base import _concrete
from rljax.data.curricula.base import _validate_state
from rljax.data.curricula.base import Collected
from rljax.data.curricula.base import Curriculum
from rljax.data.curricula.base import Draw


def _as_advantage_inputs(kept_rewards, pool_rewards, pool_mask, kept_mask):
  """Checks the shapes of :func:`reinforce_ada_advantages`' arrays; returns them as arrays."""
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
  return kept_rewards, pool_rewards, pool_mask, kept_mask


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
  kept_rewards, pool_rewards, pool_mask, kept_mask = _as_advantage_inputs(
      kept_rewards, pool_rewards, pool_mask, kept_mask)
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
class ReinforceAda(Curriculum):
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

  The prompt-level contract (``init``/``sample``/``update``, inherited from
  :class:`Curriculum`) draws the batch of prompts uniformly, as the paper does, and counts the
  groups trained on; Reinforce-Ada decides how many samples each prompt gets through
  the per-batch round protocol::

      rs = ada.begin(P)
      while rs.active.any() (at most R times):
          rewards = <generate M completions for each active prompt>      # float[P, M]
          rs = ada.observe(rs, rewards)      # rows of inactive prompts are ignored
      groups, stats = ada.finish(rs)

  or :meth:`collect`, which runs that loop with a sampling callback and returns the batch of
  groups with their rows, rewards and advantages.

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

  group_size: int = 4
  samples_per_round: int = 8
  max_rounds: int = 4
  rule: str = "balanced"
  positive_threshold: float = 0.7
  advantage_scale: str = "none"
  replace: bool = False
  provides_advantages = True

  def __post_init__(self):
    super().__post_init__()
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

  def _collect_rounds(self, key: jax.Array, num_prompts: int,
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


  def collect(self, key: jax.Array, num_prompts: int, group_size: int, draw: Draw) -> Collected:
    """Runs the rounds with a sampling callback and returns the groups as one batch.

    Every round samples all P prompts (static shapes for the sampler); the round state ignores
    the rows of prompts that already exited.

    Args:
      key: PRNG key; round r passes ``fold_in(key, r)`` to ``draw``.
      num_prompts: P.
      group_size: the run's group size; must equal the ``group_size`` hyperparameter n.
      draw: ``(key, per_prompt) -> (host_sample, rewards [P * per_prompt],
        correct [P * per_prompt])``, called with ``per_prompt = samples_per_round`` (M),
        prompt-major; ``host_sample`` is a pytree of NumPy arrays with leading dim P * M.

    Returns:
      ``Collected``: the n kept rows of each prompt (prompt-major, B = P * n), their rewards,
      correct flags and float32 advantages, and metrics ``ada/<stat>`` (see :meth:`finish`) plus
      ``ada/drawn_pass_rate``, the fraction of correct samples among all drawn.
    """
    if group_size != self.group_size:
      raise ValueError(
          f"group_size must equal ReinforceAda.group_size={self.group_size}, got {group_size}.")
    p, m = _check_int("num_prompts", num_prompts, 1), self.samples_per_round
    rounds, drawn_correct = [], []

    def draw_rewards(round_key, active):
      del active  # All rows are sampled; the round state ignores inactive ones.
      sample, rewards, correct = draw(round_key, m)
      rewards, correct = _check_drawn(rewards, correct, p * m)
      rounds.append(sample)
      drawn_correct.append(correct.reshape(p, m))
      return rewards.reshape(p, m)

    groups, stats, round_state = self._collect_rounds(key, p, draw_rewards)
    index = np.asarray(groups.sample_index)                     # [P, n] slots r * M + j
    r, j = index // m, index % m
    rows = (r * p * m + np.arange(p)[:, None] * m + j).reshape(-1)  # rows of the round concat
    sample = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs])[rows],
                          *rounds)
    all_correct = np.concatenate(drawn_correct, axis=1)
    correct = all_correct[np.arange(p)[:, None], index].reshape(-1)
    metrics = {f"ada/{k}": float(v) for k, v in stats.items()}
    drawn = np.asarray(round_state.drawn)[:, :all_correct.shape[1]]
    metrics["ada/drawn_pass_rate"] = float((all_correct & drawn).sum() / max(drawn.sum(), 1))
    return Collected(sample=sample,
                     rewards=np.asarray(groups.rewards, np.float32).reshape(-1),
                     correct=correct,
                     advantages=np.asarray(groups.advantages, np.float32).reshape(-1),
                     metrics=metrics)
