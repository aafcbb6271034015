"""Incremental decoding of a `Transformer` with a key/value cache: prefill and one-token steps.

The same function as `Transformer.__call__` (`tests/test_decode.py` checks the logits against
it), computed in the layouts that make autoregressive sampling fast:

* **Fused weights** (`fuse_weights`). The q/k/v projections of each layer are concatenated
  into one `[(H + 2K) * Dh, D]` matrix (biases likewise), so each layer starts with one matmul
  instead of three; gate and up stay separate. The arrays are read out of the model once per
  jitted call, so the train loop's parameters are used as they are, with no copy kept.
* **Cache** (`prefill`). One `(k, v)` pair per layer, each `[B, K, S, Dh]`: key/value heads
  before positions, so a decode step's attention contracts contiguous `[S, Dh]` blocks per
  head, and each layer's pair is updated in place on its own. Keys are stored rotated.
* **Feature-major decode step** (`decode_step`). The activations of the one new token per row
  are kept `[D, B]`, so every projection is `weight [out, in] @ x [in, B]`: the weight is the
  left operand, read as stored, and only the small activation operand is repacked by the matmul
  (faster on CPU at small B than `x @ weight.T`; `benchmarks/sampler.py` measures it). The
  logits come out `[V, B]`.
* **Rotary tables** (`rope_tables`). `cos` / `sin` for every position are computed once per
  call and gathered per step rather than recomputed inside every fused kernel.

Rotary positions follow the model's convention for left padding, `max(cumsum(mask) - 1, 0)`.

Precision and sharding follow the model's: `fuse_weights` casts every weight to the activation
dtype (`config.activation_dtype`), the cache is held in it, logits are float32. Under a mesh
(`jax.set_mesh`) the cache `[B, K, S, Dh]` is constrained to rows on `('data', 'fsdp')` and
key/value heads on `tensor` (`rljax.models.sharding`; an axis that does not divide its
dimension is left out), where it is created and after every write, so each device holds the
cache of its rows and heads only.

`trace_counts` counts how often `prefill` and `decode_step` are traced (each trace is a
compilation of the jitted function that calls them), for tests of recompilation.

`ablate` (a collection of names from `ABLATIONS`) leaves a part of the computation out, for
timing only: the results are then wrong. `benchmarks/sampler_breakdown.py` uses it to attribute
the time of a decode step; with the default (nothing left out) the computation is the model's.
"""

from __future__ import annotations

import collections
from typing import Collection

import jax
import jax.numpy as jnp

from rljax.models import sharding
from rljax.models.config import TransformerConfig
from rljax.models.sharding import BATCH, HEADS
from rljax.models.transformer import (Transformer, apply_rope, attention, causal_mask, linear,
                                      positions_from_mask, rms_norm, rope_cos_sin, rope_inv_freq)

# Parts of the computation that `ablate` may leave out: attention over the keys (the queries
# pass through in its place) and rotary embeddings (the identity in their place).
ABLATIONS = ("attention", "rope")

# Number of traces of `prefill` and `decode_step` (keys 'prefill', 'decode_step').
trace_counts: collections.Counter = collections.Counter()

# The cache layout `[B, K, S, Dh]`: rows on the batch axes, key/value heads on `tensor`.
_CACHE_SPEC = (BATCH, HEADS)


def constrain_cache(c: jax.Array) -> jax.Array:
  """Constrains one `[B, K, S, Dh]` cache array to the cache layout (no-op outside a mesh)."""
  return sharding.constrain(c, _CACHE_SPEC)


def fuse_weights(model: Transformer) -> dict:
  """The model's arrays for decoding, with each layer's q/k/v projections fused into one.

  Every array is cast to the activation dtype (`config.activation_dtype`).

  Returns:
    `dict(embed [V, D], norm [D], out [V, D], layers=[dict(ln1, ln2, wqkv [(H+2K)*Dh, D],
    bqkv or None, wo, bo, wg, bg, wu, bu, wd, bd)])`, weights `[out, in]` as the model stores
    them; absent biases are None.
  """
  dtype = model.config.activation_dtype
  get = lambda p: None if p is None else p[...].astype(dtype)
  cat = lambda *ps: jnp.concatenate([get(p) for p in ps], axis=0)
  layers = []
  for layer in model.layers:
    a, m = layer.self_attn, layer.mlp
    layers.append(dict(
        ln1=get(layer.input_layernorm.weight),
        ln2=get(layer.post_attention_layernorm.weight),
        wqkv=cat(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight),
        bqkv=(None if a.q_proj.bias is None else cat(a.q_proj.bias, a.k_proj.bias,
                                                     a.v_proj.bias)),
        wo=get(a.o_proj.weight), bo=get(a.o_proj.bias),
        wg=get(m.gate_proj.weight), wu=get(m.up_proj.weight),
        bg=get(m.gate_proj.bias), bu=get(m.up_proj.bias),
        wd=get(m.down_proj.weight), bd=get(m.down_proj.bias),
    ))
  return dict(embed=get(model.embed_tokens.weight), layers=layers,
              norm=get(model.norm.weight), out=model.output_embedding)


def rope_tables(config: TransformerConfig, length: int) -> tuple[jax.Array, jax.Array]:
  """Rotary `(cos, sin)`, float32 `[length, Dh]` each, for positions 0..length-1.

  `prefill` takes them as they are; `decode_step` takes them transposed, `[Dh, length]`.
  """
  cos, sin = rope_cos_sin(jnp.arange(length)[None], rope_inv_freq(config))
  return cos[0], sin[0]


def check_ablate(ablate: Collection[str], valid: Collection[str] = ABLATIONS) -> None:
  """Raises ValueError unless `ablate` is a tuple or frozenset of names from `valid`."""
  if isinstance(ablate, str) or not isinstance(ablate, (tuple, frozenset)) or not set(
      ablate) <= set(valid):
    raise ValueError(f"ablate must be a tuple of names from {sorted(valid)}, got {ablate!r}.")


def _attention_fn(ablate):
  if "attention" in ablate:
    return lambda q, k, v, mask, kv_layout=None: q.reshape(q.shape[0], q.shape[1], -1)
  return attention


def _block(cfg, p, x, cos, sin, attend, last_only=False, ablate=()):
  """One decoder layer on x `[B, S, D]`; `attend(q, k, v) -> [B, S', H*Dh]` handles the cache.

  With `last_only`, keys and values are still computed for all S positions, but the queries,
  the attention output and the MLP only for the last one (`[B, 1, D]` out): the last layer of
  the prefill needs nothing else.
  """
  b, s, _ = x.shape
  h, kv, dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  rope = (lambda x, cos, sin: x) if "rope" in ablate else apply_rope
  y = rms_norm(x, p["ln1"], cfg.rms_norm_eps)
  qkv = linear(y, p["wqkv"], p["bqkv"])
  heads = lambda y, n: sharding.constrain(y.reshape(b, s, n, dh), (BATCH, None, HEADS))
  q = heads(qkv[..., :h * dh], h)
  k = heads(qkv[..., h * dh:(h + kv) * dh], kv)
  v = heads(qkv[..., (h + kv) * dh:], kv)
  if last_only:
    q, x, q_cos, q_sin = q[:, -1:], x[:, -1:], cos[:, -1:], sin[:, -1:]
  else:
    q_cos, q_sin = cos, sin
  q, k = rope(q, q_cos, q_sin), rope(k, cos, sin)
  x = x + linear(attend(q, k, v), p["wo"], p["bo"])
  y = rms_norm(x, p["ln2"], cfg.rms_norm_eps)
  y = jax.nn.silu(linear(y, p["wg"], p["bg"])) * linear(y, p["wu"], p["bu"])
  return x + linear(y, p["wd"], p["bd"])


def prefill(config: TransformerConfig, weights: dict, tokens: jax.Array,
            prompt_mask: jax.Array, cache_len: int, rope: tuple[jax.Array, jax.Array], *,
            ablate: Collection[str] = ()):
  """Runs left-padded prompts through the model and fills a fresh cache.

  Args:
    config: the model's config.
    weights: `fuse_weights(model)`.
    tokens: int32 `[B, P]`, left-padded.
    prompt_mask: int32 `[B, P]`, 1 on real tokens (padding keys are never attended to).
    cache_len: S >= P, the cache length; slots P..S-1 are zeros, for `decode_step` to fill.
    rope: `rope_tables(config, n)` with n > every position used.
    ablate: names from `ABLATIONS` to leave out (timing only; see the module docstring).

  Returns:
    `(logits, caches)`: float32 `[B, V]` logits at the last prompt position (the
    distribution of the first new token), and one `(k, v)` pair of `[B, K, S, Dh]` per layer.
  """
  trace_counts["prefill"] += 1
  cos, sin = (jnp.take(t, positions_from_mask(prompt_mask), axis=0) for t in rope)
  mask = causal_mask(prompt_mask)
  attend_fn = _attention_fn(ablate)
  p = tokens.shape[1]
  x = sharding.constrain(jnp.take(weights["embed"], tokens, axis=0), (BATCH,))
  caches = []
  for i, lw in enumerate(weights["layers"]):
    kv_out = []

    def attend(q, k, v, kv_out=kv_out):
      kv_out.append((k, v))
      return attend_fn(q, k, v, mask[:, -q.shape[1]:])

    x = _block(config, lw, x, cos, sin, attend, last_only=i == len(weights["layers"]) - 1,
               ablate=ablate)
    k, v = kv_out[0]
    pad = ((0, 0), (0, 0), (0, cache_len - p), (0, 0))
    caches.append(tuple(constrain_cache(jnp.pad(c.transpose(0, 2, 1, 3), pad)) for c in (k, v)))
  h = rms_norm(x[:, -1], weights["norm"], config.rms_norm_eps)
  return linear(h, weights["out"], preferred_element_type=jnp.float32), caches


def grow_caches(caches, length: int):
  """Zero-pads every `[B, K, S, Dh]` cache array along S to `length`."""
  grow = lambda c: constrain_cache(
      jnp.pad(c, ((0, 0), (0, 0), (0, length - c.shape[2]), (0, 0))))
  return [(grow(k), grow(v)) for k, v in caches]


def _linear_t(weight, x_t, bias=None, preferred_element_type=None):
  """`weight @ x_t (+ bias[:, None])`: `linear` on feature-major activations `[in, B]`."""
  y = jax.lax.dot_general(weight, x_t, (((1,), (0,)), ((), ())),
                          preferred_element_type=preferred_element_type)
  if bias is not None:
    y = y + bias.astype(y.dtype)[:, None]
  return y


def _rope_t(x_t, cos_t, sin_t):
  """`apply_rope` on `[N, Dh, B]` with tables `[Dh, B]`; returns `[B, N, Dh]`."""
  cos_t = cos_t.astype(x_t.dtype)[None]
  sin_t = sin_t.astype(x_t.dtype)[None]
  half = x_t.shape[1] // 2
  rotated = jnp.concatenate([-x_t[:, half:], x_t[:, :half]], axis=1)
  return (x_t * cos_t + rotated * sin_t).transpose(2, 0, 1)


def decode_step(config: TransformerConfig, weights: dict, tokens: jax.Array,
                positions: jax.Array, slot, key_valid: jax.Array, caches,
                rope_t: tuple[jax.Array, jax.Array], *, ablate: Collection[str] = ()):
  """Feeds one token per row at cache `slot`; returns its logits and the updated caches.

  Args:
    config: the model's config.
    weights: `fuse_weights(model)`.
    tokens: int32 `[B]`, the newest token of each row.
    positions: int32 `[B]`, their rotary positions.
    slot: int32 scalar < S, the cache slot the new keys/values are written to; keys at slots
      above it are not attended to.
    key_valid: bool `[B, >= S]`, False on cache slots that hold padding.
    caches: one `(k, v)` pair of `[B, K, S, Dh]` per layer (from `prefill` / `grow_caches`).
    rope_t: the `rope_tables` transposed, float32 `[Dh, n]` each.
    ablate: names from `ABLATIONS` to leave out (timing only; see the module docstring).

  Returns:
    `(logits, caches)`: float32 logits `[V, B]` (feature-major, see the module docstring) of
    the next token, and the caches with slot `slot` written.

  Example (a prompt of two real tokens, then one step at slot 3, position 2):
    >>> from flax import nnx
    >>> cfg = TransformerConfig(vocab_size=16, d_model=16, num_layers=1, num_heads=2,
    ...                         num_kv_heads=1, head_dim=8, ffn_dim=32)
    >>> model = Transformer(cfg, rngs=nnx.Rngs(0))
    >>> w, rope = fuse_weights(model), rope_tables(cfg, 4)
    >>> mask = jnp.array([[0, 1, 1]])
    >>> logits, caches = prefill(cfg, w, jnp.array([[0, 3, 4]]), mask, 4, rope)
    >>> logits, caches = decode_step(cfg, w, jnp.argmax(logits, -1), jnp.array([2]), 3,
    ...                              jnp.array([[False, True, True, True]]), caches,
    ...                              tuple(t.T for t in rope))
    >>> logits.shape, caches[0][0].shape
    ((16, 1), (1, 1, 4, 8))
  """
  trace_counts["decode_step"] += 1
  cache_len = caches[0][0].shape[2]
  h, kv, dh = config.num_heads, config.num_kv_heads, config.head_dim
  b = tokens.shape[0]
  attend = _attention_fn(ablate)
  rope = (lambda x_t, cos_t, sin_t: x_t.transpose(2, 0, 1)) if "rope" in ablate else _rope_t
  cos_t, sin_t = (jnp.take(t, positions, axis=1) for t in rope_t)
  visible = (jnp.arange(cache_len) <= slot)[None, :] & key_valid[:, :cache_len]
  mask = visible[:, None, :]
  x = sharding.constrain(jnp.take(weights["embed"], tokens, axis=0).T, (None, BATCH))
  new_caches = []
  for lw, (kc, vc) in zip(weights["layers"], caches):
    y = rms_norm(x, lw["ln1"], config.rms_norm_eps, axis=0)
    qkv = _linear_t(lw["wqkv"], y, lw["bqkv"])
    q = rope(qkv[:h * dh].reshape(h, dh, b), cos_t, sin_t)
    k = rope(qkv[h * dh:(h + kv) * dh].reshape(kv, dh, b), cos_t, sin_t)
    v = qkv[(h + kv) * dh:].reshape(kv, dh, b).transpose(2, 0, 1)
    kc = constrain_cache(
        jax.lax.dynamic_update_slice(kc, k[:, :, None].astype(kc.dtype), (0, 0, slot, 0)))
    vc = constrain_cache(
        jax.lax.dynamic_update_slice(vc, v[:, :, None].astype(vc.dtype), (0, 0, slot, 0)))
    new_caches.append((kc, vc))
    att = attend(q[:, None], kc, vc, mask, kv_layout="BKTD")[:, 0]
    x = x + _linear_t(lw["wo"], att.T, lw["bo"])
    y = rms_norm(x, lw["ln2"], config.rms_norm_eps, axis=0)
    y = jax.nn.silu(_linear_t(lw["wg"], y, lw["bg"])) * _linear_t(lw["wu"], y, lw["bu"])
    x = x + _linear_t(lw["wd"], y, lw["bd"])
  y = rms_norm(x, weights["norm"], config.rms_norm_eps, axis=0)
  return _linear_t(weights["out"], y, preferred_element_type=jnp.float32), new_caches
