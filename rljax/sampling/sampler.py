"""Jitted autoregressive sampling with a key/value cache.

One `jax.jit` holds the whole generation:

1. **Prefill.** The left-padded prompt `[B, P]` runs through the model once (rotary positions
   `max(cumsum(prompt_mask) - 1, 0)`, padding keys masked); each layer's rotated keys and values
   go into that layer's cache, `k, v: [B, K, S, Dh]` (one pair of arrays per layer: a stacked
   `[layers, ...]` cache was measured slower on CPU). The last prompt position gives the logits
   of the first new token.
2. **Decode.** Token t-1 is fed at cache slot `P + t - 1` with position `n_b + t - 1`
   (`n_b` = number of real prompt tokens of row b), its key/value are written with
   `dynamic_update_slice`, and the query attends over the cache. The steps run in a few
   *segments*, each a `lax.while_loop` over a cache of static length that just covers the
   segment's last slot; between segments the cache is zero-padded to the next length. So
   attention reads only the filled part of the cache (up to one segment of slack) while all
   shapes stay static. The loop ends early once every row has produced a stop token.
3. **Sampling** at each step from `softmax(logits / T)` after top-k/top-p/min-p truncation
   (`rljax.sampling.filters`) by the Gumbel-max trick, `argmax(filtered + g)` with standard
   Gumbel noise `g` drawn with key `fold_in(key, t)` at step t (the same draw as
   `jax.random.categorical(fold_in(key, t), filtered)`; reproducible from `key` and independent
   of the segmentation); greedy argmax when `temperature == 0`.

The cache and output buffers are allocated inside the jit, so XLA updates them in place across
loop iterations (nothing to donate at the call boundary; parameters are read-only and not
donated, so the train loop keeps using the same arrays). The decoder inside the loop uses fused
q/k/v weights (concatenated once per call; gate and up stay separate) and keeps its activations
feature-major, `[D, B]`, so that each projection is `weight [out, in] @ x [in, B]` (the
logits come out as `[V, B]`); the rotary cos/sin are looked up in a table computed once per
call rather than recomputed inside every fused kernel. All of this is mathematically the same
as the model's forward pass; `tests/test_sampling.py` checks that `untruncated_logp` equals
`rljax.models.score` within 1e-5 in float32 (with bfloat16 parameters the two differ by
bfloat16 rounding, ~1e-3). Prefill and decode share one jit rather than two because that was
measured a few percent faster on CPU and keeps the cache internal.

Recorded log-probs (see `Rollout`): `behavior_logp` under the truncated distribution actually
sampled from, `untruncated_logp` under `softmax(logits / T)`.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rljax.models.transformer import (Transformer, apply_rope, attention, causal_mask, linear,
                                      positions_from_mask, rms_norm, rope_cos_sin, rope_inv_freq)
from rljax.sampling.filters import filter_logits
from rljax.sampling.rollout import Rollout

# Number of times the sampling function has been traced (for recompilation tests).
trace_count = 0


# ----------------------------------------------------------------------- decoder with cache


def _fused_weights(model: Transformer):
  """Per-layer arrays for the cached decoder, with the q/k/v projections fused into one."""
  layers = []
  for layer in model.layers:
    a, m = layer.self_attn, layer.mlp
    cat = lambda *ps: jnp.concatenate([p[...] for p in ps], axis=0)
    layers.append(dict(
        ln1=layer.input_layernorm.weight[...],
        ln2=layer.post_attention_layernorm.weight[...],
        wqkv=cat(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight),
        bqkv=(None if a.q_proj.bias is None else cat(a.q_proj.bias, a.k_proj.bias,
                                                     a.v_proj.bias)),
        wo=a.o_proj.weight[...],
        bo=None if a.o_proj.bias is None else a.o_proj.bias[...],
        wg=m.gate_proj.weight[...], wu=m.up_proj.weight[...],
        bg=None if m.gate_proj.bias is None else m.gate_proj.bias[...],
        bu=None if m.up_proj.bias is None else m.up_proj.bias[...],
        wd=m.down_proj.weight[...],
        bd=None if m.down_proj.bias is None else m.down_proj.bias[...],
    ))
  return dict(embed=model.embed_tokens.weight[...], layers=layers,
              norm=model.norm.weight[...], out=model.output_embedding)


def _block(cfg, p, x, cos, sin, attend, last_only=False):
  """One decoder layer on x `[B, S, D]`; `attend(q, k, v) -> [B, S', H*Dh]` handles the cache.

  With `last_only`, keys and values are still computed for all S positions, but the queries,
  the attention output and the MLP only for the last one (`[B, 1, D]` out): the last layer of
  the prefill needs nothing else.
  """
  b, s, _ = x.shape
  h, kv, dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  y = rms_norm(x, p["ln1"], cfg.rms_norm_eps)
  qkv = linear(y, p["wqkv"], p["bqkv"])
  q = qkv[..., :h * dh].reshape(b, s, h, dh)
  k = qkv[..., h * dh:(h + kv) * dh].reshape(b, s, kv, dh)
  v = qkv[..., (h + kv) * dh:].reshape(b, s, kv, dh)
  if last_only:
    q, x, q_cos, q_sin = q[:, -1:], x[:, -1:], cos[:, -1:], sin[:, -1:]
  else:
    q_cos, q_sin = cos, sin
  q, k = apply_rope(q, q_cos, q_sin), apply_rope(k, cos, sin)
  x = x + linear(attend(q, k, v), p["wo"], p["bo"])
  y = rms_norm(x, p["ln2"], cfg.rms_norm_eps)
  y = jax.nn.silu(linear(y, p["wg"], p["bg"])) * linear(y, p["wu"], p["bu"])
  return x + linear(y, p["wd"], p["bd"])


def _rope_tables(cfg, length):
  """Rotary `(cos, sin)` float32 `[length, Dh]` for positions 0..length-1."""
  cos, sin = rope_cos_sin(jnp.arange(length)[None], rope_inv_freq(cfg))
  return cos[0], sin[0]


def _prefill(cfg, w, tokens, prompt_mask, cache_len, rope):
  """Runs the prompt; returns (last-position float32 logits [B, V], caches)."""
  positions = positions_from_mask(prompt_mask)
  cos, sin = (jnp.take(t, positions, axis=0) for t in rope)
  mask = causal_mask(prompt_mask)
  p = tokens.shape[1]
  x = jnp.take(w["embed"], tokens, axis=0)
  caches = []
  for i, lw in enumerate(w["layers"]):
    kv_out = []

    def attend(q, k, v, kv_out=kv_out):
      kv_out.append((k, v))
      return attention(q, k, v, mask[:, -q.shape[1]:])

    x = _block(cfg, lw, x, cos, sin, attend, last_only=i == len(w["layers"]) - 1)
    k, v = kv_out[0]
    pad = ((0, 0), (0, 0), (0, cache_len - p), (0, 0))
    caches.append((jnp.pad(k.transpose(0, 2, 1, 3), pad), jnp.pad(v.transpose(0, 2, 1, 3), pad)))
  h = rms_norm(x[:, -1], w["norm"], cfg.rms_norm_eps)
  return linear(h, w["out"], preferred_element_type=jnp.float32), caches


def _grow(cache, length):
  """Zero-pads a `[B, K, S, Dh]` cache along S to `length`."""
  return jnp.pad(cache, ((0, 0), (0, 0), (0, length - cache.shape[2]), (0, 0)))


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


def _decode_one(cfg, w, tok, pos, slot, key_valid, caches, rope):
  """Feeds tokens `[B]` at cache `slot` / positions `[B]`; returns (logits [V, B], caches).

  The activations are kept feature-major (`[D, B]`), so every projection is
  `weight [out, in] @ x [in, B]`: the weight is the left operand, read as stored, and only the
  small activation operand is repacked by the matmul (faster on CPU at small B than
  `x @ weight.T`; `benchmarks/sampler.py` measures the whole sampler).
  """
  cache_len = caches[0][0].shape[2]
  h, kv, dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  b = tok.shape[0]
  cos_t, sin_t = (jnp.take(t, pos, axis=1) for t in rope)
  visible = (jnp.arange(cache_len) <= slot)[None, :] & key_valid[:, :cache_len]
  mask = visible[:, None, :]
  x = jnp.take(w["embed"], tok, axis=0).T
  new_caches = []
  for lw, (kc, vc) in zip(w["layers"], caches):
    y = rms_norm(x, lw["ln1"], cfg.rms_norm_eps, axis=0)
    qkv = _linear_t(lw["wqkv"], y, lw["bqkv"])
    q = _rope_t(qkv[:h * dh].reshape(h, dh, b), cos_t, sin_t)
    k = _rope_t(qkv[h * dh:(h + kv) * dh].reshape(kv, dh, b), cos_t, sin_t)
    v = qkv[(h + kv) * dh:].reshape(kv, dh, b).transpose(2, 0, 1)
    kc = jax.lax.dynamic_update_slice(kc, k[:, :, None].astype(kc.dtype), (0, 0, slot, 0))
    vc = jax.lax.dynamic_update_slice(vc, v[:, :, None].astype(vc.dtype), (0, 0, slot, 0))
    new_caches.append((kc, vc))
    att = attention(q[:, None], kc, vc, mask, kv_layout="BKTD")[:, 0]
    x = x + _linear_t(lw["wo"], att.T, lw["bo"])
    y = rms_norm(x, lw["ln2"], cfg.rms_norm_eps, axis=0)
    y = jax.nn.silu(_linear_t(lw["wg"], y, lw["bg"])) * _linear_t(lw["wu"], y, lw["bu"])
    x = x + _linear_t(lw["wd"], y, lw["bd"])
  y = rms_norm(x, w["norm"], cfg.rms_norm_eps, axis=0)
  return _linear_t(w["out"], y, preferred_element_type=jnp.float32), new_caches


# ------------------------------------------------------------------------------ sampling


def _choose(logits, noise, temperature, top_k, top_p, min_p, vocab_axis=-1):
  """Samples one token per row by Gumbel-max: argmax(filtered logits + Gumbel noise).

  Args:
    logits: float32 raw logits, `[B, V]` (or `[V, B]` with `vocab_axis=0`).
    noise: float32 `[B, V]` standard Gumbel noise, whatever the logits' layout (unused when
      greedy).

  Returns:
    `(token int32[B], behavior_logp f32[B], untruncated_logp f32[B])`.
  """
  truncated = top_k is not None or top_p is not None or min_p is not None
  if vocab_axis != -1:
    if truncated:  # the filters work on rows
      logits, vocab_axis = logits.T, -1
    elif noise is not None:
      noise = noise.T
  ax = vocab_axis
  if temperature == 0.0:
    tok = jnp.argmax(logits, axis=ax).astype(jnp.int32)
    ulogp = _gather(logits, tok, ax) - jax.nn.logsumexp(logits, axis=ax)
    return tok, jnp.zeros_like(ulogp), ulogp
  scaled = logits / jnp.float32(temperature)
  filtered = filter_logits(scaled, top_k=top_k, top_p=top_p, min_p=min_p) if truncated else scaled
  tok = jnp.argmax(filtered + noise, axis=ax).astype(jnp.int32)
  ulogp = _gather(scaled, tok, ax) - jax.nn.logsumexp(scaled, axis=ax)
  if not truncated:
    return tok, ulogp, ulogp
  blogp = _gather(filtered, tok, ax) - jax.nn.logsumexp(filtered, axis=ax)
  return tok, blogp, ulogp


def _gather(x, idx, axis=-1):
  """`x[b, idx[b]]` along the vocabulary axis (`x` is `[B, V]`, or `[V, B]` with axis 0)."""
  if axis == 0:
    return jnp.take_along_axis(x, idx[None, :], axis=0)[0]
  return jnp.take_along_axis(x, idx[:, None], axis=-1)[:, 0]


def _segments(num_steps: int, segment_size: Optional[int]):
  """Splits decode steps 1..num_steps-1 into [(t_start, t_end), ...] (t_end exclusive)."""
  total = num_steps - 1
  if total <= 0:
    return []
  if segment_size is None:
    segment_size = max(32, -(-total // 4))
  bounds = list(range(1, num_steps, segment_size)) + [num_steps]
  return list(zip(bounds[:-1], bounds[1:]))


def sample_fn(graphdef: nnx.GraphDef, state: nnx.State, prompt_tokens: jax.Array,
              prompt_mask: jax.Array, key: jax.Array, *, max_new_tokens: int,
              temperature: float = 1.0, top_k: Optional[int] = None,
              top_p: Optional[float] = None, min_p: Optional[float] = None,
              stop_tokens: Sequence[int] = (), pad_id: int = 0,
              segment_size: Optional[int] = None) -> Rollout:
  """`sample` on a split model, traceable inside the caller's `jax.jit`.

  The keyword options must be static (Python values). See `sample` for the arguments.
  """
  global trace_count
  trace_count += 1
  model = nnx.merge(graphdef, state)
  cfg = model.config
  _check_options(max_new_tokens, temperature, top_k, top_p, min_p, stop_tokens, pad_id,
                 cfg.vocab_size)
  _check_prompt(prompt_tokens, prompt_mask)
  b, p = prompt_tokens.shape
  n = max_new_tokens
  prompt_tokens = prompt_tokens.astype(jnp.int32)
  prompt_mask = prompt_mask.astype(jnp.int32)
  w = _fused_weights(model)
  segments = _segments(n, segment_size)
  first_len = p + (segments[0][1] - 1 if segments else 0)
  choose = functools.partial(_choose, temperature=float(temperature), top_k=top_k, top_p=top_p,
                             min_p=min_p)
  stop_arr = jnp.asarray(sorted(set(int(s) for s in stop_tokens)) or [-1], jnp.int32)

  rope = _rope_tables(cfg, p + n)
  logits, caches = _prefill(cfg, w, prompt_tokens, prompt_mask, first_len, rope)
  rope = tuple(t.T for t in rope)  # [Dh, P + N]: the decode step gathers columns
  num_prompt = jnp.sum(prompt_mask, axis=-1)
  key_valid = jnp.concatenate([prompt_mask.astype(jnp.bool_),
                               jnp.ones((b, max(n - 1, 0)), jnp.bool_)], axis=1)

  greedy = temperature == 0.0
  vocab = cfg.vocab_size

  def noise_for(t):
    """Standard Gumbel noise [B, V] for step t, drawn with key fold_in(key, t)."""
    if greedy:
      return None
    return jax.random.gumbel(jax.random.fold_in(key, t), (b, vocab), jnp.float32)

  def record(t, logits, noise, out, vocab_axis=-1):
    tokens_out, cmask, blogp, ulogp, stopped = out
    tok, bl, ul = choose(logits, noise, vocab_axis=vocab_axis)
    live = ~stopped
    tok = jnp.where(live, tok, pad_id)
    col = lambda a, v: jax.lax.dynamic_update_slice_in_dim(a, v[:, None], t, axis=1)
    tokens_out = col(tokens_out, tok)
    cmask = col(cmask, live.astype(jnp.int32))
    blogp = col(blogp, jnp.where(live, bl, 0.0))
    ulogp = col(ulogp, jnp.where(live, ul, 0.0))
    if stop_tokens:
      stopped = stopped | (live & jnp.any(tok[:, None] == stop_arr[None, :], axis=-1))
    return tok, (tokens_out, cmask, blogp, ulogp, stopped)

  out = (jnp.full((b, n), pad_id, jnp.int32), jnp.zeros((b, n), jnp.int32),
         jnp.zeros((b, n), jnp.float32), jnp.zeros((b, n), jnp.float32),
         jnp.zeros((b,), jnp.bool_))
  tok, out = record(0, logits, noise_for(0), out)

  for i, (t0, t1) in enumerate(segments):
    cache_len = p + t1 - 1
    if i > 0:
      caches = [(_grow(k, cache_len), _grow(v, cache_len)) for k, v in caches]

    def cond(carry, t1=t1):
      t, _, _, out = carry
      return (t < t1) & ~jnp.all(out[-1])

    def body(carry):
      t, tok, caches, out = carry
      slot = p + t - 1
      logits, caches = _decode_one(cfg, w, tok, num_prompt + t - 1, slot, key_valid, caches,
                                   rope)
      tok, out = record(t, logits, noise_for(t), out, vocab_axis=0)
      return t + 1, tok, caches, out

    _, tok, caches, out = jax.lax.while_loop(cond, body, (jnp.int32(t0), tok, caches, out))

  tokens_out, cmask, blogp, ulogp, stopped = out
  zeros_p = jnp.zeros((b, p), jnp.int32)
  zeros_f = jnp.zeros((b, p), jnp.float32)
  return Rollout(
      tokens=jnp.concatenate([prompt_tokens, tokens_out], axis=1),
      prompt_mask=jnp.concatenate([prompt_mask, jnp.zeros((b, n), jnp.int32)], axis=1),
      completion_mask=jnp.concatenate([zeros_p, cmask], axis=1),
      behavior_logp=jnp.concatenate([zeros_f, blogp], axis=1),
      untruncated_logp=jnp.concatenate([zeros_f, ulogp], axis=1),
      lengths=jnp.sum(cmask, axis=-1),
      stopped=stopped,
  )


_STATIC = ("max_new_tokens", "temperature", "top_k", "top_p", "min_p", "stop_tokens", "pad_id",
           "segment_size")
_sample_jit = jax.jit(sample_fn, static_argnames=_STATIC)


def sample(model: Transformer, prompt_tokens: jax.Array, prompt_mask: jax.Array,
           key: jax.Array, *, max_new_tokens: int, temperature: float = 1.0,
           top_k: Optional[int] = None, top_p: Optional[float] = None,
           min_p: Optional[float] = None, stop_tokens: Sequence[int] = (), pad_id: int = 0,
           segment_size: Optional[int] = None) -> Rollout:
  """Samples `max_new_tokens` continuations of left-padded prompts with a KV cache.

  Decoding (see the module docstring): prefill, then a `lax.while_loop` per cache segment,
  all in one jit that is compiled once per (model structure, batch, prompt width, options).
  Each step draws `x_t ~ softmax(filter(z_t / T))` where `filter` is top-k, then top-p
  (Holtzman et al., arXiv:1904.09751), then min-p (Nguyen et al., arXiv:2407.01082).

  Args:
    model: a `Transformer`.
    prompt_tokens: int `[B, P]`, prompts left-padded to width P.
    prompt_mask: `[B, P]`, 1 on real prompt tokens; every row needs at least one, and the
      padding must be on the left (the last column is a real token in every row).
    key: a PRNG key; the result is a deterministic function of it.
    max_new_tokens: N >= 1, completion width.
    temperature: T >= 0; 0 means greedy (argmax; `behavior_logp` is then 0 and
      `untruncated_logp` is taken at temperature 1).
    top_k: None, or keep the k most probable tokens.
    top_p: None, or nucleus mass in (0, 1].
    min_p: None, or keep tokens with probability >= min_p * max probability.
    stop_tokens: token ids that end a row (the stop token is part of the completion).
    pad_id: written after a row has stopped.
    segment_size: decode steps per cache segment (default: max(32, ceil((N - 1) / 4))).

  Returns:
    A `Rollout` with `L = P + N` columns.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from rljax.models import Transformer, TransformerConfig
    >>> cfg = TransformerConfig(vocab_size=16, d_model=16, num_layers=1, num_heads=2,
    ...                         num_kv_heads=1, head_dim=8, ffn_dim=32)
    >>> model = Transformer(cfg, rngs=nnx.Rngs(0))
    >>> out = sample(model, jnp.array([[0, 3, 4], [5, 6, 7]]), jnp.array([[0, 1, 1], [1, 1, 1]]),
    ...              jax.random.key(0), max_new_tokens=4, stop_tokens=(2,))
    >>> out.tokens.shape, out.completion_mask[:, 3:].sum() == out.lengths.sum()
    ((2, 7), Array(True, dtype=bool))
  """
  _check_options(max_new_tokens, temperature, top_k, top_p, min_p, stop_tokens, pad_id,
                 model.config.vocab_size)
  prompt_tokens = jnp.asarray(prompt_tokens)
  prompt_mask = jnp.asarray(prompt_mask)
  _check_prompt(prompt_tokens, prompt_mask, concrete=True)
  graphdef, state = nnx.split(model)
  return _sample_jit(graphdef, state, prompt_tokens, prompt_mask, key,
                     max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                     top_k=top_k, top_p=top_p, min_p=min_p,
                     stop_tokens=tuple(int(s) for s in stop_tokens), pad_id=int(pad_id),
                     segment_size=segment_size)


# ----------------------------------------------------------------------------- validation


def _check_options(max_new_tokens, temperature, top_k, top_p, min_p, stop_tokens, pad_id,
                   vocab_size):
  if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}.")
  if not isinstance(temperature, (int, float)) or not temperature >= 0:
    raise ValueError(f"temperature must be a float >= 0 (0 = greedy), got {temperature!r}.")
  if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
    raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}.")
  if top_p is not None and not 0.0 < top_p <= 1.0:
    raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}.")
  if min_p is not None and not 0.0 <= min_p <= 1.0:
    raise ValueError(f"min_p must be None or in [0, 1], got {min_p!r}.")
  for s in tuple(stop_tokens):
    if not 0 <= int(s) < vocab_size:
      raise ValueError(f"stop_tokens must be ids in [0, {vocab_size}), got {s!r}.")
  if not 0 <= int(pad_id) < vocab_size:
    raise ValueError(f"pad_id must be an id in [0, {vocab_size}), got {pad_id!r}.")


def _check_prompt(prompt_tokens, prompt_mask, concrete=False):
  if prompt_tokens.ndim != 2:
    raise ValueError(f"prompt_tokens must be int[B, P], got shape {prompt_tokens.shape}.")
  if not jnp.issubdtype(prompt_tokens.dtype, jnp.integer):
    raise ValueError(f"prompt_tokens must be integer, got {prompt_tokens.dtype}.")
  if prompt_mask.shape != prompt_tokens.shape:
    raise ValueError(f"prompt_mask must have the shape of prompt_tokens "
                     f"{prompt_tokens.shape}, got {prompt_mask.shape}.")
  if concrete and not isinstance(prompt_mask, jax.core.Tracer):
    m = np.asarray(prompt_mask) != 0
    if not m[:, -1].all():
      rows = np.nonzero(~m[:, -1])[0].tolist()
      raise ValueError(f"prompt_mask must be left padded with a real last token in every row; "
                       f"rows {rows[:8]} end in padding (or are empty).")
