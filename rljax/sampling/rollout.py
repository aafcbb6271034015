"""`Rollout`: what the sampler returns, aligned with the full token sequence."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Rollout:
  """A batch of sampled completions, every per-token array aligned with `tokens`.

  `L = P + N` (prompt width P, `max_new_tokens` N). For per-token arrays,
  entry `[b, t]` refers to `tokens[b, t]` given `tokens[b, :t]`.

  Attributes:
    tokens: int32 `[B, L]`: the left-padded prompt, then the completion (`pad_id` after a
      row stopped or where sampling ended early).
    prompt_mask: int32 `[B, L]`, 1 on real prompt tokens.
    completion_mask: int32 `[B, L]`, 1 on generated tokens up to and including the stop token.
    behavior_logp: float32 `[B, L]`, log-prob of each sampled token under the distribution it was
      actually drawn from (after temperature and top-k/top-p/min-p truncation); 0 elsewhere. With
      greedy decoding (temperature 0) this is 0 (the argmax has probability 1). This is the
      behaviour policy mu: pass it as `behavior_logp` to the off-policy corrections (TIS/MIS,
      TOPR) and as `old_logp` when the proximal anchor is the sampler (`rljax.train`'s
      `old_logp='behavior'`).
    untruncated_logp: float32 `[B, L]`, log-prob of each sampled token after temperature but
      before truncation (with greedy decoding: at temperature 1); 0 elsewhere. It equals
      `rljax.models.score(..., temperature=T)` at the sampling parameters within float32
      rounding (1e-5), so the importance ratio of a zero-step update against it is 1; without
      truncation it equals `behavior_logp`. `rljax.train` reports |trainer logp - this| as the
      sampler/trainer mismatch.
    lengths: int32 `[B]`, number of generated tokens (completion_mask.sum(-1)).
    stopped: bool `[B]`, True where the completion ended with a stop token.
  """

  tokens: jax.Array
  prompt_mask: jax.Array
  completion_mask: jax.Array
  behavior_logp: jax.Array
  untruncated_logp: jax.Array
  lengths: jax.Array
  stopped: jax.Array

  @property
  def input_mask(self) -> jax.Array:
    """int32 `[B, L]`, 1 on every real token (prompt or completion)."""
    return jnp.maximum(self.prompt_mask, self.completion_mask)

  @property
  def positions(self) -> jax.Array:
    """int32 `[B, L]` rotary positions `max(cumsum(input_mask) - 1, 0)`."""
    return jnp.maximum(jnp.cumsum(self.input_mask, axis=-1) - 1, 0)

  def replace(self, **changes: Any) -> "Rollout":
    return dataclasses.replace(self, **changes)
