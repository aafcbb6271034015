# Copyright 2026 The rljax Authors.
# SPDX-License-Identifier: Apache-2.0
"""MMR1 variance-aware sampling (VAS): prompts drawn by outcome variance and trajectory diversity.

"MMR1: Enhancing Multimodal Reasoning with Variance-Aware Sampling and Open Resources", Leng et
al., arXiv 2509.21268. Half the batch is drawn proportional to the Variance Promotion Score
``0.8 * outcome variance + 0.2 * trajectory diversity``, half uniformly.

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
from rljax.data.curricula.base import _check_choice
from rljax.data.curricula.base import _check_float
from rljax.data.curricula.base import _check_int
from rljax.data.curricula.base import _scatter_add
from rljax.data.curricula.base import Curriculum


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
class VarianceAwareSampler(Curriculum):
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

  mix: float = 0.5
  variance_weight: float = 0.8
  diversity_weight: float = 0.2
  momentum: float = 0.0
  normalize: str = "none"
  initial_pass_rate: float = 0.5
  initial_diversity: float = 0.0
  state_type = VarianceAwareState

  def __post_init__(self):
    super().__post_init__()
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

  def _check_batch_size(self, batch_size: Any) -> int:
    batch_size = _check_int("batch_size", batch_size, 1)
    _, num_uniform = self.split(batch_size)
    if num_uniform > self.num_arms:
      raise ValueError(
          f"batch_size={batch_size} asks for {num_uniform} uniform draws without replacement "
          f"but num_arms={self.num_arms}; lower batch_size or raise mix.")
    return batch_size

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
    arm_indices, rewards = self._check_update(state, arm_indices, rewards)
    n = arm_indices.shape[0]
    if diversity is not None:
      diversity = jnp.asarray(diversity, jnp.float32)
      if diversity.shape != (n,):
        raise ValueError(f"diversity must have shape [n] = ({n},), got {diversity.shape}.")
    return self._update(state, arm_indices, rewards, diversity)

  def _check_rewards(self, rewards: Any, n: int) -> jax.Array:
    return _as_group_rewards(rewards, n, min_group=2,
                             why=" (outcome variance needs several rollouts per prompt)")

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
