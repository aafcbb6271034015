"""The training batch: the sampler's `Rollout` composed with rewards, advantages and group ids.

Sequence layout: `sample.tokens[B, L]` is a left-padded prompt of width P followed by the
completion of width N, and every per-token array of `sample` is aligned with it (see
`rljax.sampling.Rollout`). Groups are contiguous runs of `group_size` completions of one prompt,
`B = num_prompts * group_size`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from rljax.sampling.rollout import Rollout


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainBatch:
  """What one RL update consumes: the sampled completions and their learning signal.

  Attributes:
    sample: the sampler's `rljax.sampling.Rollout` (tokens, masks, behaviour and untruncated
      log-probs, lengths, stop flags), B rows.
    rewards: f32[B] scalar reward of each completion.
    advantages: f32[B] (or f32[B, L]) advantages given from outside the update (e.g. by
      Reinforce-Ada's curriculum); zeros when the update computes them from the rewards.
    group_ids: int32[B] index of the prompt each completion answers (contiguous groups).
  """

  sample: Rollout
  rewards: jax.Array
  advantages: jax.Array
  group_ids: jax.Array

  @property
  def batch_size(self) -> int:
    return int(self.sample.tokens.shape[0])

  def replace(self, **changes: Any) -> 'TrainBatch':
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_sample(cls, sample: Any, rewards: Any, *, group_size: int,
                  advantages: Any | None = None) -> 'TrainBatch':
    """Composes a sampler rollout (device or host arrays) with its rewards.

    Args:
      sample: a `rljax.sampling.Rollout` (or any object with its fields; `untruncated_logp` may
        be missing, then the behaviour log-probs stand in), B rows in contiguous groups.
      rewards: [B] rewards.
      group_size: completions per prompt; B must be a multiple of it.
      advantages: optional [B] or [B, L] advantages (zeros if omitted: the update computes them
        from the rewards).

    Returns:
      A `TrainBatch` with `group_ids = arange(B) // group_size`.

    Raises:
      ValueError: on inconsistent shapes, naming the field.
    """
    b, length = sample.tokens.shape
    if group_size < 1 or b % group_size:
      raise ValueError(f'batch size {b} is not a multiple of group_size={group_size}')
    rewards = jnp.asarray(rewards, jnp.float32)
    if rewards.shape != (b,):
      raise ValueError(f'rewards must have shape ({b},), got {rewards.shape}')
    for name in ('prompt_mask', 'completion_mask', 'behavior_logp'):
      shape = getattr(sample, name).shape
      if shape != (b, length):
        raise ValueError(f'sample.{name} must have shape {(b, length)}, got {shape}')
    untruncated = getattr(sample, 'untruncated_logp', None)
    if untruncated is None:
      untruncated = sample.behavior_logp
    advantages = jnp.zeros((b,), jnp.float32) if advantages is None else advantages
    advantages = jnp.asarray(advantages, jnp.float32)
    if advantages.shape not in ((b,), (b, length)):
      raise ValueError(f'advantages must have shape ({b},) or {(b, length)}, '
                       f'got {advantages.shape}')
    rollout = Rollout(
        tokens=jnp.asarray(sample.tokens, jnp.int32),
        prompt_mask=jnp.asarray(sample.prompt_mask),
        completion_mask=jnp.asarray(sample.completion_mask),
        behavior_logp=jnp.asarray(sample.behavior_logp, jnp.float32),
        untruncated_logp=jnp.asarray(untruncated, jnp.float32),
        lengths=jnp.asarray(sample.lengths, jnp.int32),
        stopped=jnp.asarray(sample.stopped, bool))
    return cls(sample=rollout, rewards=rewards, advantages=advantages,
               group_ids=jnp.arange(b, dtype=jnp.int32) // group_size)
