"""Jitted autoregressive sampling with a key/value cache.

One `jax.jit` holds the whole generation:

1. **Prefill.** The left-padded prompt `[B, P]` runs through the model once (rotary positions
   `max(cumsum(prompt_mask) - 1, 0)`, padding keys masked); each layer's rotated keys and values
   go into that layer's cache, `k, v: [B, K, S, Dh]` (one pair of arrays per layer, updated in
   place on its own; `rljax.models.decode`). The last prompt position gives the logits
   of the first new token. With `group_size=G` each prompt is passed once and prefilled once; its
   logits and cache are then repeated to its G rows (the G completions of a group share the
   prompt's prefill; rows are prompt-major, as `np.repeat(prompts, G, axis=0)` gives them).
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
donated, so the train loop keeps using the same arrays). The prefill and the one-token decode
step are the model's, `rljax.models.decode` (fused q/k/v weights, a `[B, K, S, Dh]` cache,
feature-major activations in the decode step, so its logits come out `[V, B]`; that module
says why). They compute the model's forward pass; `tests/test_sampling.py` checks that
`untruncated_logp` equals `rljax.models.score` within 1e-5 in float32 (with bfloat16
parameters the two differ by bfloat16 rounding, ~1e-3). Prefill and decode share one jit
rather than two because that was measured a few percent faster on CPU and keeps the cache
internal.

`sample_jit` is `sample_fn` under `jax.jit` with `STATIC_ARGNAMES` static, the entry point
`sample` calls; `sample_fn`'s `ablate` option leaves parts of a step out, for timing only.

Recorded log-probs (see `Rollout`): `behavior_logp` under the truncated distribution actually
sampled from, `untruncated_logp` under `softmax(logits / T)`.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rljax.models import decode
from rljax.models.transformer import Transformer
from rljax.sampling.filters import filter_logits
from rljax.sampling.rollout import Rollout

# Number of times the sampling function has been traced (for recompilation tests).
trace_count = 0


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


def _argmax_choose(logits, noise, vocab_axis=-1):
  """`ablate=('sampling',)`: argmax, and logit 0 in place of both log-probs (timing only)."""
  del noise
  first = jnp.take(logits, 0, axis=vocab_axis)
  return jnp.argmax(logits, vocab_axis).astype(jnp.int32), first, first


def _recorder(key, shape, temperature, top_k, top_p, min_p, stop_tokens, pad_id, ablate):
  """`record(t, logits, out, vocab_axis)`: samples step t's token and writes it into `out`.

  `out` is `(tokens [B, N], completion_mask [B, N], behavior_logp [B, N],
  untruncated_logp [B, N], stopped [B])`; rows that have stopped get `pad_id` and zeros.
  """
  if "sampling" in ablate:
    choose = _argmax_choose
  else:
    choose = functools.partial(_choose, temperature=float(temperature), top_k=top_k,
                               top_p=top_p, min_p=min_p)
  stop_arr = jnp.asarray(sorted(set(int(s) for s in stop_tokens)) or [-1], jnp.int32)

  def noise_for(t):
    """Standard Gumbel noise [B, V] for step t, drawn with key fold_in(key, t)."""
    if temperature == 0.0:
      return None
    return jax.random.gumbel(jax.random.fold_in(key, t), shape, jnp.float32)

  def record(t, logits, out, vocab_axis=-1):
    tokens_out, cmask, blogp, ulogp, stopped = out
    tok, bl, ul = choose(logits, noise_for(t), vocab_axis=vocab_axis)
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

  return record


def _decode_segments(step, record, segments, p, tok, caches, out):
  """Runs decode steps `segments` (see `_segments`), one `lax.while_loop` per segment.

  `step(tok, t, caches) -> (logits [V, B], caches)` feeds step t-1's token; each segment
  first grows the cache to cover its last slot, `p + t_end - 2`. Returns the final `out`.
  """
  for i, (t0, t1) in enumerate(segments):
    if i > 0:
      caches = decode.grow_caches(caches, p + t1 - 1)

    def cond(carry, t1=t1):
      t, _, _, out = carry
      return (t < t1) & ~jnp.all(out[-1])

    def body(carry):
      t, tok, caches, out = carry
      logits, caches = step(tok, t, caches)
      tok, out = record(t, logits, out, vocab_axis=0)
      return t + 1, tok, caches, out

    _, tok, caches, out = jax.lax.while_loop(cond, body, (jnp.int32(t0), tok, caches, out))
  return out


def sample_fn(graphdef: nnx.GraphDef, state: nnx.State, prompt_tokens: jax.Array,
              prompt_mask: jax.Array, key: jax.Array, *, max_new_tokens: int,
              temperature: float = 1.0, top_k: Optional[int] = None,
              top_p: Optional[float] = None, min_p: Optional[float] = None,
              stop_tokens: Sequence[int] = (), pad_id: int = 0,
              segment_size: Optional[int] = None, ablate: Tuple[str, ...] = (),
              group_size: int = 1) -> Rollout:
  """`sample` on a split model, traceable inside the caller's `jax.jit`.

  The keyword options must be static (Python values; `STATIC_ARGNAMES` names them). See
  `sample` for the arguments; one more, for timing only:

  Args:
    ablate: a tuple of names from `ABLATIONS` to leave out of every step: 'attention' and
      'rope' (see `rljax.models.decode`) and 'sampling' (argmax in place of sampling, logit 0
      in place of the log-probs). The results are then wrong; `benchmarks/sampler_breakdown.py`
      uses this to attribute the time of a step. Default: nothing left out.
  """
  global trace_count
  trace_count += 1
  model = nnx.merge(graphdef, state)
  cfg = model.config
  _check_options(max_new_tokens, temperature, top_k, top_p, min_p, stop_tokens, pad_id,
                 cfg.vocab_size)
  decode.check_ablate(ablate, ABLATIONS)
  _check_prompt(prompt_tokens, prompt_mask)
  _check_group_size(group_size)
  b, p = prompt_tokens.shape
  b *= group_size
  n = max_new_tokens
  prompt_tokens = prompt_tokens.astype(jnp.int32)
  prompt_mask = prompt_mask.astype(jnp.int32)
  model_ablate = tuple(a for a in ablate if a in decode.ABLATIONS)
  w = decode.fuse_weights(model)
  segments = _segments(n, segment_size)
  record = _recorder(key, (b, cfg.vocab_size), temperature, top_k, top_p, min_p, stop_tokens,
                     pad_id, ablate)

  rope = decode.rope_tables(cfg, p + n)
  first_len = p + (segments[0][1] - 1 if segments else 0)
  logits, caches = decode.prefill(cfg, w, prompt_tokens, prompt_mask, first_len, rope,
                                  ablate=model_ablate)
  if group_size > 1:  # one prefill per prompt, shared by the rows of its group
    logits, caches, prompt_tokens, prompt_mask = jax.tree.map(
        lambda x: jnp.repeat(x, group_size, axis=0), (logits, caches, prompt_tokens, prompt_mask))
  rope_t = tuple(t.T for t in rope)  # [Dh, P + N]: the decode step gathers columns
  num_prompt = jnp.sum(prompt_mask, axis=-1)
  key_valid = jnp.concatenate([prompt_mask.astype(jnp.bool_),
                               jnp.ones((b, max(n - 1, 0)), jnp.bool_)], axis=1)

  def step(tok, t, caches):  # token t-1 at slot p + t - 1, position n_b + t - 1
    return decode.decode_step(cfg, w, tok, num_prompt + t - 1, p + t - 1, key_valid, caches,
                              rope_t, ablate=model_ablate)

  out = (jnp.full((b, n), pad_id, jnp.int32), jnp.zeros((b, n), jnp.int32),
         jnp.zeros((b, n), jnp.float32), jnp.zeros((b, n), jnp.float32),
         jnp.zeros((b,), jnp.bool_))
  tok, out = record(0, logits, out)
  out = _decode_segments(step, record, segments, p, tok, caches, out)
  return _rollout(prompt_tokens, prompt_mask, out)


def _rollout(prompt_tokens, prompt_mask, out):
  """The `Rollout` of prompts `[B, P]` and the completion buffers `out` (see `_recorder`)."""
  tokens_out, cmask, blogp, ulogp, stopped = out
  b, p = prompt_tokens.shape
  n = tokens_out.shape[1]
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


# Parts of a step that `ablate` may leave out (timing only; see `sample_fn`).
ABLATIONS = decode.ABLATIONS + ("sampling",)
# The keyword arguments of `sample_fn` that must be static under `jax.jit`.
STATIC_ARGNAMES = ("max_new_tokens", "temperature", "top_k", "top_p", "min_p", "stop_tokens",
                   "pad_id", "segment_size", "ablate", "group_size")
# `sample_fn` under `jax.jit`, compiled once per model structure, shapes and options. `sample`
# calls it; a benchmark can `.lower(...).compile()` it to time sampling without compilation.
sample_jit = jax.jit(sample_fn, static_argnames=STATIC_ARGNAMES)


def sample(model: Transformer, prompt_tokens: jax.Array, prompt_mask: jax.Array,
           key: jax.Array, *, max_new_tokens: int, temperature: float = 1.0,
           top_k: Optional[int] = None, top_p: Optional[float] = None,
           min_p: Optional[float] = None, stop_tokens: Sequence[int] = (), pad_id: int = 0,
           segment_size: Optional[int] = None, group_size: int = 1) -> Rollout:
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
    group_size: G >= 1 completions of each prompt: the result has `B * G` rows, the G of a
      prompt contiguous, each prompt prefilled once (the same tokens and log-probs, for the
      same key, as passing every prompt G times with `group_size=1`).

  Returns:
    A `Rollout` with `B * group_size` rows and `L = P + N` columns.

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
  _check_group_size(group_size)
  prompt_tokens = jnp.asarray(prompt_tokens)
  prompt_mask = jnp.asarray(prompt_mask)
  _check_prompt(prompt_tokens, prompt_mask, concrete=True)
  graphdef, state = nnx.split(model)
  return sample_jit(graphdef, state, prompt_tokens, prompt_mask, key,
                     max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                     top_k=top_k, top_p=top_p, min_p=min_p,
                     stop_tokens=tuple(int(s) for s in stop_tokens), pad_id=int(pad_id),
                     segment_size=segment_size, group_size=int(group_size))


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


def _check_group_size(group_size):
  if not isinstance(group_size, (int, np.integer)) or group_size < 1:
    raise ValueError(f"group_size must be an int >= 1, got {group_size!r}.")


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
