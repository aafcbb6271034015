"""Fast forms of the model's computations, each beside the plain one it must equal.

* `attention` is `transformer.attention` (the plain reference: scores, mask, float32 softmax,
  weighted sum written out as einsums). On CPU it moves the (kv) heads next to the batch
  before the two matmuls and stacks each kv head's query heads into its rows, so XLA:CPU runs
  fewer, larger matmuls than for the reference's layout (where it inserts its own transposes
  around every batched matmul); elsewhere it is `jax.nn.dot_product_attention`, which XLA
  lowers to a fused attention (cuDNN's on GPU where it applies). `benchmarks/rl_step.py`
  times the update that runs it against TRL's and tunix's.
* `shared_prompt_hidden_states` is `Transformer.hidden_states` (the plain reference) for a
  batch whose rows come in groups that share one prompt, as GRPO's G completions of a prompt
  do: each prompt runs through the layers once per group instead of once per row, and the
  completions attend to its keys and values (the shared-prefix forward of PrefixGrouper, Liu et
  al., arXiv:2506.05433). The gradients are those of the repeated rows: the prompt's
  activations are broadcast to the G rows inside the computation, so autodiff sums their
  cotangents. With P prompts of S tokens and completions of N, the layers see P S + G P N
  tokens instead of G P (S + N).

tests/test_model_kernels.py checks each against its reference to float32 rounding, values and
gradients, with padding and grouped-query heads.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from rljax.models import sharding

# As `transformer._MASK_VALUE`: finite, so a query that sees no key averages the values.
_MASK_VALUE = -1e30


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Grouped-query softmax attention, as `transformer.attention` with kv_layout 'BTKD'.

  `out = softmax(q k^T / sqrt(Dh) + mask) v`, query head h using kv head h // (H / K); a query
  row with no visible key (a left-pad position) gets a uniform softmax, as in the reference.

  Args:
    q: `[B, S, H, Dh]`.
    k: `[B, T, K, Dh]`.
    v: `[B, T, K, Dh]`.
    mask: bool `[B, S, T]`, True where query s may attend to key t.

  Returns:
    `[B, S, H * Dh]` in `v.dtype`.
  """
  if jax.default_backend() == 'cpu':
    return _head_major_attention(q, k, v, mask)
  b, s, h, d = q.shape
  out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation=None)
  return out.astype(v.dtype).reshape(b, s, h * d)


def _head_major_attention(q, k, v, mask):
  """`attention` with (batch, kv head) leading: `[B, K, G S, Dh]` queries, `[B, K, T, Dh]` keys.

  XLA:CPU runs batched matmuls as one small matmul per batch entry; moving the heads next to
  the batch before the two matmuls (one explicit transpose of q, k, v and of the output) and
  stacking each kv head's G query heads into its rows makes those matmuls fewer and larger.
  """
  b, s, h, d = q.shape
  kv = k.shape[2]
  g = h // kv
  qh = q.reshape(b, s, kv, g, d).transpose(0, 2, 3, 1, 4).reshape(b, kv, g * s, d)
  kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
  scores = jnp.einsum('bkqd,bktd->bkqt', qh, kh, preferred_element_type=jnp.float32)
  scores = scores * np.float32(1.0 / math.sqrt(d))
  visible = jnp.tile(mask, (1, g, 1))[:, None]
  probs = jax.nn.softmax(jnp.where(visible, scores, _MASK_VALUE), axis=-1).astype(v.dtype)
  out = jnp.einsum('bkqt,bktd->bkqd', probs, vh)
  return out.reshape(b, kv, g, s, d).transpose(0, 3, 1, 2, 4).reshape(b, s, h * d)


def shared_prompt_hidden_states(model, tokens: jax.Array, input_mask: jax.Array, *,
                                group_size: int, completion_width: int) -> jax.Array:
  """`model.hidden_states(tokens, ...)[:, L - N - 1:-1]`, each group's prompt run once.

  Rows `g G .. g G + G - 1` must share their prompt columns (the first `S = L - N`: tokens and
  `input_mask`), as the sampler's rows of one prompt do; only the first row of each group's
  prompt is read. The prompt stream (`[B / G, S]`) attends causally to itself; the completion
  stream (`[B, N]`) attends to its group's prompt keys where `input_mask` is 1, and causally
  to its own. Positions are `positions_from_mask(input_mask)` of the whole row, as in the
  plain forward.

  Args:
    model: a `rljax.models.Transformer`.
    tokens: int `[B, L]`, left-padded prompts followed by the completions.
    input_mask: `[B, L]`, 1 on real tokens.
    group_size: G, rows per prompt (divides B).
    completion_width: N, with `1 <= N < L`.

  Returns:
    `[B, N, D]` final-normed hidden states at positions `S - 1 .. L - 2` (those whose output
    distributions give the completion columns' log-probs), in the activation dtype.
  """
  from rljax.models import transformer as tf  # pylint: disable=g-import-not-at-top
  # (transformer.py imports this module for `attention`; the import is deferred to break the
  # cycle.)
  b, length = tokens.shape
  s, g = length - completion_width, group_size
  if not 1 <= completion_width < length:
    raise ValueError(f'completion_width must be in [1, {length - 1}] for a shared prompt, '
                     f'got {completion_width}')
  if b % g:
    raise ValueError(f'batch size {b} is not a multiple of group_size={g}')
  input_mask = input_mask.astype(jnp.int32)
  positions = tf.positions_from_mask(input_mask)
  inv_freq = tf.rope_inv_freq(model.config)
  prompt_mask = input_mask[::g, :s]
  rope_p = tf.rope_cos_sin(positions[::g, :s], inv_freq)
  rope_c = tf.rope_cos_sin(positions[:, s:], inv_freq)
  mask_p = tf.causal_mask(prompt_mask)
  sees_prompt = jnp.repeat(prompt_mask.astype(jnp.bool_), g, axis=0)[:, None, :]
  mask_c = jnp.concatenate(
      [jnp.broadcast_to(sees_prompt, (b, completion_width, s)),
       tf.causal_mask(input_mask[:, s:])], axis=-1)
  embed = lambda t: sharding.constrain(
      model.embed_tokens(t).astype(model.config.activation_dtype), (sharding.BATCH,))
  xp, xc = embed(tokens[::g, :s]), embed(tokens[:, s:])
  layer_fn = tf.remat_layer(
      lambda layer, xp, xc, rope_p, rope_c, mask_p, mask_c: _shared_prompt_layer(
          layer, xp, xc, rope_p, rope_c, mask_p, mask_c, group_size=g), model.config.remat)
  for layer in model.layers:
    xp, xc = layer_fn(layer, xp, xc, rope_p, rope_c, mask_p, mask_c)
  last_prompt = jnp.repeat(xp[:, -1:], g, axis=0)
  return model.norm(jnp.concatenate([last_prompt, xc[:, :-1]], axis=1))


def _shared_prompt_layer(layer, xp, xc, rope_p, rope_c, mask_p, mask_c, *, group_size):
  """One decoder layer on the prompt stream `xp [P, S, D]` and completion stream `xc [B, N, D]`."""
  from rljax.models import transformer as tf  # pylint: disable=g-import-not-at-top
  attn = layer.self_attn
  qp, kp, vp = attn.project(layer.input_layernorm(xp), *rope_p)
  qc, kc, vc = attn.project(layer.input_layernorm(xc), *rope_c)
  with_prompt = lambda p, c: jnp.concatenate([jnp.repeat(p, group_size, axis=0), c], axis=1)
  xp = xp + attn.o_proj(attention(qp, kp, vp, mask_p))
  xc = xc + attn.o_proj(attention(qc, with_prompt(kp, kc), with_prompt(vp, vc), mask_c))
  xp = xp + layer.mlp(layer.post_attention_layernorm(xp))
  xc = xc + layer.mlp(layer.post_attention_layernorm(xc))
  return sharding.constrain(xp, (sharding.BATCH,)), sharding.constrain(xc, (sharding.BATCH,))
