"""The training batch: the sampler's rollout plus rewards, advantages and group ids.

Sequence layout (see the project's contracts): `tokens[B, L]` is a left-padded prompt of width
P followed by the completion of width N; `prompt_mask` / `completion_mask` mark real prompt
tokens and generated tokens (up to and including the stop token); per-token log-prob arrays are
aligned with `tokens` (`logp[b, t] = log p(tokens[b, t] | tokens[b, :t])`). Groups are contiguous
runs of `group_size` completions of one prompt, `B = num_prompts * group_size`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Rollout:
  """A batch of sampled completions with everything the learner needs.

  Attributes:
    tokens: int32[B, L] prompt (left padded) followed by the completion.
    prompt_mask: [B, L] 1 on real prompt tokens.
    completion_mask: [B, L] 1 on generated tokens up to and including the stop token.
    behavior_logp: f32[B, L] log-prob of each sampled token under the distribution actually
      sampled from (after temperature and top-k/top-p/min-p truncation); 0 off the completion.
    untruncated_logp: f32[B, L] log-prob after temperature, before truncation (what the
      trainer's `score(..., temperature=T)` recomputes).
    lengths: int32[B] completion lengths.
    stopped: bool[B] whether the completion ended with a stop token (else it was truncated).
    rewards: f32[B] scalar reward of each completion.
    advantages: f32[B] (or f32[B, L]) advantages; may be filled inside the train step.
    group_ids: int32[B] index of the prompt each completion answers (contiguous groups).
  """

  tokens: jax.Array
  prompt_mask: jax.Array
  completion_mask: jax.Array
  behavior_logp: jax.Array
  untruncated_logp: jax.Array
  lengths: jax.Array
  stopped: jax.Array
  rewards: jax.Array
  advantages: jax.Array
  group_ids: jax.Array

  @property
  def input_mask(self) -> jax.Array:
    """[B, L] 1 on every real token (prompt or completion)."""
    return jnp.maximum(self.prompt_mask, self.completion_mask)

  @property
  def batch_size(self) -> int:
    return int(self.tokens.shape[0])

  def replace(self, **changes: Any) -> 'Rollout':
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_sample(cls, sample: Any, rewards: Any, *, group_size: int,
                  advantages: Any | None = None) -> 'Rollout':
    """Extends a `rljax.sampling.Rollout` (any object with its fields) with rewards.

    Args:
      sample: the sampler's output (tokens, prompt_mask, completion_mask, behavior_logp,
        untruncated_logp, lengths, stopped), B rows in contiguous groups of `group_size`.
      rewards: [B] rewards.
      group_size: completions per prompt; B must be a multiple of it.
      advantages: optional [B] or [B, L] advantages (zeros if omitted: the train step computes
        them from the rewards).

    Returns:
      A `Rollout` with `group_ids = arange(B) // group_size`.

    Raises:
      ValueError: on inconsistent shapes, naming the field.
    """
    tokens = sample.tokens
    b, length = tokens.shape
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
    if advantages is None:
      advantages = jnp.zeros((b,), jnp.float32)
    return cls(
        tokens=tokens.astype(jnp.int32),
        prompt_mask=sample.prompt_mask,
        completion_mask=sample.completion_mask,
        behavior_logp=sample.behavior_logp.astype(jnp.float32),
        untruncated_logp=untruncated.astype(jnp.float32),
        lengths=jnp.asarray(sample.lengths, jnp.int32),
        stopped=jnp.asarray(sample.stopped, bool),
        rewards=rewards,
        advantages=jnp.asarray(advantages, jnp.float32),
        group_ids=jnp.arange(b, dtype=jnp.int32) // group_size,
    )


def to_numpy(rollout: Rollout) -> Rollout:
  """Host copy of every field (for reward computation and logging)."""
  return jax.tree.map(np.asarray, rollout)
