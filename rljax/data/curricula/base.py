# Copyright 2026 The rljax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The curriculum contract: a base class with the shared wrappers, and the validation helpers.

Every curriculum is a frozen, hashable dataclass of hyperparameters. :class:`Curriculum` holds
what they share: the ``num_arms`` check, the default ``init``, the ``sample`` and ``update``
wrappers (check the state, the batch size, the arm indices and the rewards on the host, then
call the subclass's jitted ``_sample`` / ``_update``) and the default :meth:`Curriculum.collect`,
which draws one fixed-size group per prompt. The default ``init`` / ``_sample`` / ``_update``
draw prompts uniformly (with the subclass's ``replace`` field) and count pulls; a bandit
overrides them with its ``state_type``, and ``_check_batch_size`` / ``_check_rewards`` where its
checks differ.

This module imports only jax and numpy.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

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


def _validate_state(state: Any, cls: type, who: str) -> None:
  if not isinstance(state, cls):
    raise ValueError(
        f"state must be a {cls.__name__} (from {who}.init()), got {type(state).__name__}. "
        "When restoring with orbax, pass the initial state as the restore target.")


def _scatter_add(num_arms: int, arm_indices: jax.Array, values: jax.Array) -> jax.Array:
  """Sums values [n] into [num_arms] by arm (duplicated arms accumulate)."""
  return jnp.zeros((num_arms,), values.dtype).at[arm_indices].add(values)


def _init_pulls_step(num_arms: int) -> tuple[jax.Array, jax.Array]:
  return jnp.zeros((num_arms,), jnp.int32), jnp.zeros((), jnp.int32)


# ---------------------------------------------------------------------------------------------
# The state every sampler starts from, and the count update that goes with it.
# ---------------------------------------------------------------------------------------------


class UniformState(NamedTuple):
  """State of :class:`UniformSampler` (and of :class:`ReinforceAda`'s prompt choice).

  Attributes:
    pulls: int32[K], number of groups reported to ``update`` for each arm.
    step: int32[], number of ``update`` calls.
  """

  pulls: jax.Array
  step: jax.Array


@functools.partial(jax.jit, static_argnums=(2,))
def _count_update(state, arm_indices, num_arms):
  ones = jnp.ones(arm_indices.shape, jnp.int32)
  return state._replace(pulls=state.pulls + _scatter_add(num_arms, arm_indices, ones),
                        step=state.step + 1)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _uniform_sample(state, key, num_arms, batch_size, replace):
  arms = jax.random.choice(key, num_arms, (batch_size,), replace=replace)
  return arms.astype(jnp.int32), state


# ---------------------------------------------------------------------------------------------
# What a curriculum hands the trainer for one batch.
# ---------------------------------------------------------------------------------------------


class Collected(NamedTuple):
  """One RL batch gathered by :meth:`Curriculum.collect`, host-side, B = P * G rows.

  Rows are prompt-major: row ``p * G + j`` is the j-th completion kept for the p-th prompt.

  Attributes:
    sample: the sampler's host-side ``rljax.sampling.Rollout`` (NumPy leaves with leading dim B:
      tokens, prompt_mask, completion_mask, behavior_logp, untruncated_logp, lengths, stopped).
    rewards: float32[B].
    correct: bool[B], the verifier's exact-answer flags.
    advantages: float32[B], or None when the train step computes them from the rewards.
    metrics: scalar diagnostics of the collection, name -> float.
  """

  sample: Any
  rewards: np.ndarray
  correct: np.ndarray
  advantages: Optional[np.ndarray]
  metrics: dict[str, float]


Draw = Callable[[jax.Array, int], tuple[Any, Any, Any]]


def _check_drawn(rewards: Any, correct: Any, rows: int) -> tuple[np.ndarray, np.ndarray]:
  """Host copies float32[rows] / bool[rows] of what a ``draw`` callback returned."""
  rewards = np.asarray(rewards, np.float32)
  correct = np.asarray(correct, bool)
  for name, value in (("rewards", rewards), ("correct", correct)):
    if value.shape != (rows,):
      raise ValueError(
          f"draw must return {name} of shape [num_prompts * per_prompt] = ({rows},), got "
          f"{value.shape}.")
  return rewards, correct


# ---------------------------------------------------------------------------------------------
# The base class.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Curriculum:
  """Base class of the prompt curricula: ``init`` / ``sample`` / ``update`` / ``collect``.

  Attributes:
    num_arms: K, the number of prompts or buckets.
    state_type: the NamedTuple class of the state (class attribute).
    provides_advantages: whether :meth:`collect` returns its own advantages (class attribute).
  """

  num_arms: int
  state_type: ClassVar[type] = UniformState
  provides_advantages: ClassVar[bool] = False

  def __post_init__(self):
    _check_int("num_arms", self.num_arms, 1)

  def init(self, key: Optional[jax.Array] = None) -> Any:
    """Initial state (pull counts); ``key`` is accepted for interface symmetry and unused."""
    del key
    return UniformState(*_init_pulls_step(self.num_arms))

  def _check_state(self, state: Any) -> None:
    _validate_state(state, self.state_type, type(self).__name__)

  def _check_batch_size(self, batch_size: Any) -> int:
    return _check_batch_size(batch_size, self.num_arms, self.replace)

  def _check_rewards(self, rewards: Any, n: int) -> jax.Array:
    return _as_group_rewards(rewards, n)

  def _check_update(self, state: Any, arm_indices: Any,
                    rewards: Any) -> tuple[jax.Array, jax.Array]:
    """Checks the inputs of ``update``; returns int32 arm indices and float32 rewards [n, G]."""
    self._check_state(state)
    arm_indices = _as_arm_indices(arm_indices, self.num_arms)
    return arm_indices, self._check_rewards(rewards, arm_indices.shape[0])

  def sample(self, state: Any, key: jax.Array, batch_size: int) -> tuple[jax.Array, Any]:
    """Draws int32[batch_size] arm indices and the next state."""
    self._check_state(state)
    return self._sample(state, key, self._check_batch_size(batch_size))

  def update(self, state: Any, arm_indices: jax.Array, rewards: jax.Array) -> Any:
    """Reports the groups of ``arm_indices`` int[n] with rewards float[n] or [n, G]."""
    arm_indices, rewards = self._check_update(state, arm_indices, rewards)
    return self._update(state, arm_indices, rewards)

  def _sample(self, state, key, batch_size):
    return _uniform_sample(state, key, self.num_arms, batch_size, self.replace)

  def _update(self, state, arm_indices, rewards):
    del rewards  # The uniform choice of prompts does not depend on them.
    return _count_update(state, arm_indices, self.num_arms)

  def collect(self, key: jax.Array, num_prompts: int, group_size: int, draw: Draw) -> Collected:
    """Samples the batch of the chosen prompts: one call ``draw(key, group_size)``.

    Args:
      key: PRNG key, passed to ``draw`` unchanged.
      num_prompts: P, the number of prompts chosen by :meth:`sample`.
      group_size: G, completions per prompt.
      draw: ``(key, per_prompt) -> (host_sample, rewards [P * per_prompt],
        correct [P * per_prompt])``, samples ``per_prompt`` completions of each chosen prompt,
        prompt-major.

    Returns:
      ``Collected(sample, rewards, correct, None, {})``: the train step computes advantages.
    """
    num_prompts = _check_int("num_prompts", num_prompts, 1)
    group_size = _check_int("group_size", group_size, 1)
    sample, rewards, correct = draw(key, group_size)
    rewards, correct = _check_drawn(rewards, correct, num_prompts * group_size)
    return Collected(sample, rewards, correct, None, {})
