"""Teacher-forced per-token log-probabilities (and entropies) of a sequence under the model.

For a full sequence `tokens[B, L]` (left-padded prompt followed by the completion) and a
temperature tau,

    logp[b, t] = log softmax(z_{b, t-1} / tau)[tokens[b, t]],    z_{b, t-1} = logits at t - 1,
    entropy[b, t] = -sum_v p_v log p_v  of the same distribution softmax(z_{b, t-1} / tau),

with rotary positions `max(cumsum(input_mask) - 1, 0)` and padding keys masked, exactly as the
sampler computes them; both are 0 at t = 0, where `mask == 0`, and where no real token precedes t.
The sampler's `untruncated_logp` equals `score(..., temperature=tau)` (within float32 rounding),
so a policy update evaluated at the sampling parameters has importance ratio 1.

Completion positions only: with `completion_width=N` the output projection and log-softmax run
on the last N positions alone (the hidden states of every position are still computed, since
attention needs them). Prompts are left-padded and the completion fills the last N columns, so
the completion mask is 0 elsewhere and nothing that is wanted is skipped; log-probs (and
entropies) before the last N columns are 0 whatever `mask` says there. With a real vocabulary
(V ~ 150k) and long prompts the projection over the prompt is most of the scoring FLOPs.

Shared prompts: with `completion_width=N` and `group_size=G`, rows that come in groups of G
sharing one prompt (the first L - N columns, as the sampler's completions of a prompt do) run
each prompt through the layers once per group (`rljax.models.kernels.
shared_prompt_hidden_states`); log-probs, entropies and gradients are those of the plain pass
to float32 rounding. The caller vouches that the groups share their prompts (the RL update
checks the batch before it asks for this).

Memory: the `[B, L, V]` float32 logits are never materialised at once when they would exceed
`max_logits_bytes`; the output projection and log-softmax then run over chunks of the sequence
inside a `lax.map` whose body is rematerialised (`jax.checkpoint`), so the backward pass also
holds one chunk of logits at a time.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from rljax.models import kernels
from rljax.models.transformer import (Transformer, check_same_shape, check_tokens, linear,
                                      positions_from_mask)

_DEFAULT_MAX_LOGITS_BYTES = 256 * 2**20


def _check_temperature(temperature):
  if isinstance(temperature, (int, float)) and not temperature > 0:
    raise ValueError(
        f"temperature must be > 0 for scoring (greedy decoding has no density), got "
        f"{temperature}.")


def _token_stats(hidden, weight, targets, temperature, return_entropy):
  """hidden [..., D], weight [V, D], targets int [...] -> (logp [...], entropy [...] or None)."""
  logits = linear(hidden, weight, preferred_element_type=jnp.float32) / temperature
  lse = jax.nn.logsumexp(logits, axis=-1)
  tgt = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  logp = tgt - lse
  if not return_entropy:
    return logp, None
  probs = jnp.exp(logits - lse[..., None])
  entropy = lse - jnp.sum(probs * logits, axis=-1)
  return logp, entropy


def logp_from_hidden(hidden: jax.Array, weight: jax.Array, targets: jax.Array, *,
                     temperature: float = 1.0, return_entropy: bool = False,
                     chunk_size: Optional[int] = None,
                     max_logits_bytes: int = _DEFAULT_MAX_LOGITS_BYTES):
  """Log-probs of `targets` under `softmax(hidden @ weight.T / temperature)`, chunked over T.

  Args:
    hidden: `[B, T, D]` hidden states (any float dtype).
    weight: `[V, D]` output projection.
    targets: int `[B, T]`.
    temperature: tau > 0.
    return_entropy: also return the entropy of each distribution.
    chunk_size: sequence positions per chunk; default: the whole sequence if its float32
      logits fit in `max_logits_bytes`, else the largest chunk that does.
    max_logits_bytes: logits budget used when `chunk_size` is None.

  Returns:
    `logp f32[B, T]`, and `entropy f32[B, T]` if `return_entropy`.
  """
  b, t, d = hidden.shape
  v = weight.shape[0]
  if chunk_size is None:
    chunk_size = max(1, max_logits_bytes // (4 * b * v))
  chunk_size = int(min(chunk_size, t))
  fn = functools.partial(_token_stats, weight=weight, temperature=temperature,
                         return_entropy=return_entropy)
  if chunk_size >= t:
    logp, entropy = fn(hidden, targets=targets)
  else:
    n = -(-t // chunk_size)
    pad = n * chunk_size - t
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    y = jnp.pad(targets, ((0, 0), (0, pad)))
    h = h.reshape(b, n, chunk_size, d).swapaxes(0, 1)
    y = y.reshape(b, n, chunk_size).swapaxes(0, 1)

    @jax.checkpoint
    def body(xs):
      lp, ent = fn(xs[0], targets=xs[1])
      return lp, (ent if ent is not None else jnp.zeros_like(lp))

    logp, entropy = jax.lax.map(body, (h, y))
    logp = logp.swapaxes(0, 1).reshape(b, n * chunk_size)[:, :t]
    entropy = entropy.swapaxes(0, 1).reshape(b, n * chunk_size)[:, :t]
  return (logp, entropy) if return_entropy else logp


def _scored_start(length: int, completion_width: Optional[int]) -> int:
  """First column whose log-prob is computed: `L - completion_width` (at least 1)."""
  if completion_width is None:
    return 1
  if not isinstance(completion_width, int) or completion_width < 1:
    raise ValueError(f"completion_width must be None or an int >= 1, got {completion_width!r}.")
  if completion_width > length:
    raise ValueError(f"completion_width={completion_width} exceeds the sequence length "
                     f"{length}.")
  return max(length - completion_width, 1)


def score(model: Transformer, tokens: jax.Array, input_mask: jax.Array, mask: jax.Array, *,
          temperature: float = 1.0, return_entropy: bool = False,
          chunk_size: Optional[int] = None, completion_width: Optional[int] = None,
          group_size: Optional[int] = None):
  """Teacher-forced per-token log-probs of `tokens` under `model` (see the module docstring).

  `logp[b, t] = log softmax(z_{b,t-1} / temperature)[tokens[b, t]]`, float32, aligned with
  `tokens`; 0 at t = 0, where `mask == 0` and where no real token precedes t.

  Args:
    model: a `Transformer`.
    tokens: int `[B, L]`, left-padded prompt followed by the completion.
    input_mask: `[B, L]`, 1 on real tokens (prompt or completion); sets positions and which
      keys are attended to.
    mask: `[B, L]`, 1 where a log-prob is wanted (usually the completion mask).
    temperature: tau > 0; use the sampler's temperature so that ratios are 1 on-policy.
    return_entropy: also return the per-position entropy of the same distribution.
    chunk_size: sequence chunk for the output projection (see `logp_from_hidden`).
    completion_width: None (score every position), or N: score only the last N columns, where
      a left-padded prompt's completion lies; columns before them are 0 (see the module
      docstring).
    group_size: None, or G: rows `g G .. g G + G - 1` share their first `L - completion_width`
      columns (tokens and `input_mask`), and each group's prompt is run once (see the module
      docstring). Needs `completion_width` (a ValueError without it); ignored when `completion_width` leaves no prompt
      column (`completion_width >= L`).

  Returns:
    `logp f32[B, L]`, or `(logp, entropy)` with `entropy f32[B, L]` if `return_entropy`.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from rljax.models import Transformer, TransformerConfig
    >>> cfg = TransformerConfig(vocab_size=16, d_model=16, num_layers=1, num_heads=2,
    ...                         num_kv_heads=2, head_dim=8, ffn_dim=32)
    >>> model = Transformer(cfg, rngs=nnx.Rngs(0))
    >>> tokens = jnp.array([[0, 3, 4, 5]]); ones = jnp.ones_like(tokens)
    >>> score(model, tokens, ones, jnp.array([[0, 0, 1, 1]])).shape
    (1, 4)
  """
  check_tokens("tokens", tokens)
  check_same_shape("input_mask", input_mask, "tokens", tokens)
  check_same_shape("mask", mask, "tokens", tokens)
  _check_temperature(temperature)
  start = _scored_start(tokens.shape[1], completion_width)
  input_mask = input_mask.astype(jnp.int32)
  # Column t's distribution comes from position t - 1: project positions start-1 .. L-2 only.
  if group_size is not None and completion_width is None:
    raise ValueError(f"group_size={group_size} needs completion_width (the prompt is the "
                     f"columns before the last completion_width).")
  prompt_width = tokens.shape[1] - (completion_width or tokens.shape[1])
  if group_size is not None and prompt_width >= 1:
    hidden = kernels.shared_prompt_hidden_states(model, tokens, input_mask,
                                                 group_size=group_size,
                                                 completion_width=completion_width)
  else:
    positions = positions_from_mask(input_mask)
    hidden = model.hidden_states(tokens, positions, input_mask)[:, start - 1:-1]
  out = logp_from_hidden(hidden, model.output_embedding, tokens[:, start:],
                         temperature=temperature, return_entropy=bool(return_entropy),
                         chunk_size=chunk_size)
  logp, entropy = out if return_entropy else (out, None)
  has_prefix = jnp.cumsum(input_mask, axis=-1)[:, start - 1:-1] > 0
  keep = (mask[:, start:] != 0) & has_prefix
  zero = jnp.zeros((tokens.shape[0], start), jnp.float32)
  logp = jnp.concatenate([zero, jnp.where(keep, logp, 0.0)], axis=1)
  if not return_entropy:
    return logp
  entropy = jnp.concatenate([zero, jnp.where(keep, entropy, 0.0)], axis=1)
  return logp, entropy


def score_fn(graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array,
             input_mask: jax.Array, mask: jax.Array, *, temperature: float = 1.0,
             return_entropy: bool = False, chunk_size: Optional[int] = None,
             completion_width: Optional[int] = None, group_size: Optional[int] = None):
  """`score` on a split model (`graphdef, state = nnx.split(model)`), for use inside `jax.jit`.

  Differentiable with respect to `state`:
  `jax.grad(lambda s: (score_fn(g, s, ...) * adv).sum())(state)`.
  """
  model = nnx.merge(graphdef, state)
  return score(model, tokens, input_mask, mask, temperature=temperature,
               return_entropy=return_entropy, chunk_size=chunk_size,
               completion_width=completion_width, group_size=group_size)
