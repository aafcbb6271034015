"""Tests for rljax.sampling: filters against NumPy, the KV-cache sampler against full recomputation."""

import doctest
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rljax.models import Transformer, TransformerConfig, positions_from_mask, score_fn
from rljax.sampling import Rollout, filter_logits, sample, sample_fn
from rljax.sampling import filters as filters_lib
from rljax.sampling import sampler as sampler_lib

CFG = TransformerConfig(vocab_size=64, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2,
                        head_dim=16, ffn_dim=128, attention_bias=True)
PAD = 0


@pytest.fixture(scope="module")
def model():
  m = Transformer(CFG, rngs=nnx.Rngs(0))
  # Larger output weights give peaked next-token distributions, so truncation matters.
  m.lm_head.weight.set_value(m.lm_head.weight.get_value() * 40.0)
  return m


@pytest.fixture(scope="module")
def prompts():
  rng = np.random.RandomState(0)
  mask = np.array([[0, 0, 1, 1, 1, 1],
                   [1, 1, 1, 1, 1, 1],
                   [0, 0, 0, 0, 0, 1],
                   [0, 1, 1, 1, 1, 1]], np.int32)
  tokens = np.where(mask == 1, rng.randint(1, CFG.vocab_size, mask.shape), PAD).astype(np.int32)
  return jnp.asarray(tokens), jnp.asarray(mask)


_score_jit = jax.jit(score_fn, static_argnames=("temperature", "return_entropy", "chunk_size"))


@jax.jit
def _forward_jit(graphdef, state, tokens, mask):
  return nnx.merge(graphdef, state)(tokens, positions_from_mask(mask), mask)


def _score(model, rollout, temperature):
  return _score_jit(*nnx.split(model), rollout.tokens, rollout.input_mask,
                    rollout.completion_mask, temperature=temperature)


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  m = np.max(z, -1, keepdims=True)
  with np.errstate(invalid="ignore"):
    z = z - m
  return z - np.log(np.sum(np.exp(z), -1, keepdims=True))


def _np_filter(z, top_k=None, top_p=None, min_p=None):
  """Reference truncation, one row at a time in float64 (HF order: top-k, top-p, min-p)."""
  z = np.array(z, np.float64)
  for row in z.reshape(-1, z.shape[-1]):
    if top_k is not None and top_k < row.size:
      kth = np.sort(row)[::-1][top_k - 1]
      row[row < kth] = -np.inf
    if top_p is not None:
      p = np.exp(_log_softmax(row))
      mass, keep = 0.0, np.zeros(row.size, bool)
      for i in np.argsort(-p, kind="stable"):
        if mass < top_p:
          keep[i] = True
        mass += p[i]
      row[~keep] = -np.inf
    if min_p is not None:
      p = np.exp(_log_softmax(row))
      row[p < min_p * p.max()] = -np.inf
  return z


def _check_rollout_structure(r: Rollout, prompt_tokens, prompt_mask, stop_tokens, n):
  b, p = prompt_tokens.shape
  tokens, cmask = np.asarray(r.tokens), np.asarray(r.completion_mask)
  lengths, stopped = np.asarray(r.lengths), np.asarray(r.stopped)
  assert tokens.shape == (b, p + n) and r.behavior_logp.dtype == jnp.float32
  np.testing.assert_array_equal(tokens[:, :p], prompt_tokens)
  np.testing.assert_array_equal(np.asarray(r.prompt_mask)[:, :p], prompt_mask)
  assert not np.asarray(r.prompt_mask)[:, p:].any() and not cmask[:, :p].any()
  for i in range(b):
    comp = tokens[i, p:]
    np.testing.assert_array_equal(cmask[i, p:], np.arange(n) < lengths[i])
    assert (comp[lengths[i]:] == PAD).all()
    is_stop = np.isin(comp[:lengths[i]], stop_tokens)
    assert not is_stop[:-1].any()  # nothing is generated after a stop token
    assert stopped[i] == (lengths[i] > 0 and is_stop[-1])
    assert stopped[i] or lengths[i] == n
    for name in ("behavior_logp", "untruncated_logp"):
      lp = np.asarray(getattr(r, name))[i]
      assert (lp[:p] == 0).all() and (lp[p + lengths[i]:] == 0).all()
      assert (lp[p:p + lengths[i]] <= 0).all() and np.isfinite(lp).all()


# ------------------------------------------------------------------------------ filters


@pytest.mark.parametrize("kw", [dict(top_k=5), dict(top_p=0.7), dict(min_p=0.1),
                                dict(top_k=10, top_p=0.8, min_p=0.05), dict(top_k=1),
                                dict(top_p=1.0), dict(top_k=100)])
def test_filters_match_numpy(kw):
  z = np.random.RandomState(1).randn(6, 40).astype(np.float32) * 2.0
  got = np.asarray(jax.jit(functools.partial(filter_logits, **kw))(jnp.asarray(z)))
  expected = _np_filter(z, **kw)
  np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
  np.testing.assert_array_equal(got[np.isfinite(got)], z[np.isfinite(expected)])
  assert np.isfinite(got).sum(-1).min() >= 1


def test_filter_ties_and_validation():
  z = jnp.array([[1.0, 3.0, 3.0, 0.0]])
  assert np.isfinite(np.asarray(filters_lib.top_k_logits(z, 1))).tolist() == [
      [False, True, True, False]]
  with pytest.raises(ValueError, match="top_k"):
    filter_logits(z, top_k=0)
  with pytest.raises(ValueError, match="top_p"):
    filter_logits(z, top_p=0.0)
  with pytest.raises(ValueError, match="min_p"):
    filter_logits(z, min_p=1.5)


# ------------------------------------------------------------------------------ sampler


def test_sample_logps_equal_score_and_masks(model, prompts):
  """Plain sampling at temperature 1: untruncated_logp == score() so the ratio is exactly 1."""
  pt, pm = prompts
  stop = (5, 7, 11)
  kw = dict(max_new_tokens=20, temperature=1.0, stop_tokens=stop, pad_id=PAD)
  r = sample(model, pt, pm, jax.random.key(0), **kw)
  _check_rollout_structure(r, np.asarray(pt), np.asarray(pm), stop, 20)
  logp = _score(model, r, 1.0)
  np.testing.assert_allclose(r.untruncated_logp, logp, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(r.behavior_logp, r.untruncated_logp)
  # Reproducible from the key, no recompilation for new values of the same shapes.
  traces = sampler_lib.trace_count
  again = sample(model, pt, pm, jax.random.key(0), **kw)
  chex.assert_trees_all_equal(r, again)
  other = sample(model, (pt + 1) * pm, pm, jax.random.key(1), **kw)
  assert sampler_lib.trace_count == traces
  assert not np.array_equal(other.tokens, r.tokens)


def test_bfloat16_sampling_logps_match_score_to_bf16_precision(prompts):
  """With bfloat16 parameters the sampler and score() differ only by bfloat16 rounding."""
  m = Transformer(CFG.replace(param_dtype="bfloat16"), rngs=nnx.Rngs(0))
  assert m.lm_head.weight.get_value().dtype == jnp.bfloat16
  pt, pm = prompts
  r = sample(m, pt, pm, jax.random.key(3), max_new_tokens=8)
  assert r.untruncated_logp.dtype == jnp.float32
  logp = np.asarray(_score(m, r, 1.0))
  ulogp = np.asarray(r.untruncated_logp)
  assert np.isfinite(ulogp).all() and (ulogp[:, pt.shape[1]:] < 0).all()
  # bfloat16 keeps 8 bits of mantissa: log-probs of order 1-5 agree to a few 1e-3, not 1e-5.
  np.testing.assert_allclose(ulogp, logp, atol=2e-2, rtol=0)


def test_truncated_sampling_logps(model, prompts):
  """behavior_logp is the log-prob under the truncated distribution; untruncated matches score."""
  pt, pm = prompts
  t, opts = 0.7, dict(top_k=8, top_p=0.8, min_p=0.02)
  r = sample(model, pt, pm, jax.random.key(3), max_new_tokens=12, temperature=t, **opts)
  _check_rollout_structure(r, np.asarray(pt), np.asarray(pm), (), 12)
  np.testing.assert_allclose(r.untruncated_logp, _score(model, r, t), atol=1e-5, rtol=0)
  # Independent check of behavior_logp: full recomputation, NumPy truncation.
  logits = np.asarray(_forward_jit(*nnx.split(model), r.tokens, r.input_mask))
  p = pt.shape[1]
  prev = logits[:, p - 1:-1] / t
  ref_trunc = _log_softmax(_np_filter(prev, **opts))
  ref_full = _log_softmax(prev)
  toks = np.asarray(r.tokens)[:, p:]
  ref_b = np.take_along_axis(ref_trunc, toks[..., None], -1)[..., 0]
  ref_u = np.take_along_axis(ref_full, toks[..., None], -1)[..., 0]
  assert np.isfinite(ref_b).all()  # every sampled token survived the truncation
  np.testing.assert_allclose(r.behavior_logp[:, p:], ref_b, atol=1e-4)
  np.testing.assert_allclose(r.untruncated_logp[:, p:], ref_u, atol=1e-4)
  assert (np.asarray(r.behavior_logp) >= np.asarray(r.untruncated_logp) - 1e-6).all()
  assert (np.asarray(r.behavior_logp)[:, p:] > np.asarray(r.untruncated_logp)[:, p:]).any()


def test_greedy_matches_argmax_over_full_recomputation(model, prompts):
  pt, pm = prompts
  n = 10
  r = sample(model, pt, pm, jax.random.key(0), max_new_tokens=n, temperature=0.0)
  b, p = pt.shape
  buf = np.concatenate([np.asarray(pt), np.zeros((b, n), np.int32)], 1)
  mask = np.concatenate([np.asarray(pm), np.zeros((b, n), np.int32)], 1)
  graphdef, state = nnx.split(model)
  ulogp = np.zeros((b, n))
  for t in range(n):
    # The forward pass is causal, so logits at p + t - 1 ignore the unfilled tail of the buffer.
    logits = np.asarray(_forward_jit(graphdef, state, jnp.asarray(buf), jnp.asarray(mask)))
    nxt = logits[:, p + t - 1].argmax(-1)
    ulogp[:, t] = _log_softmax(logits[:, p + t - 1])[np.arange(b), nxt]
    buf[:, p + t] = nxt
    mask[:, p + t] = 1
  np.testing.assert_array_equal(r.tokens, buf)
  np.testing.assert_allclose(r.untruncated_logp[:, p:], ulogp, atol=1e-5)
  assert (np.asarray(r.behavior_logp) == 0).all()
  np.testing.assert_allclose(r.untruncated_logp, _score(model, r, 1.0), atol=1e-5, rtol=0)
  # A truncation filter never removes the argmax, so greedy decoding ignores it.
  r2 = sample(model, pt, pm, jax.random.key(0), max_new_tokens=n, temperature=0.0, top_k=2)
  np.testing.assert_array_equal(r2.tokens, buf)


def test_early_exit_and_segments_give_the_same_rollout(model, prompts):
  """All rows stop early; 2 cache segments and the default single one agree exactly."""
  pt, pm = prompts
  stop = tuple(range(0, 64, 2))  # half the vocabulary ends a row
  kw = dict(max_new_tokens=24, temperature=1.5, stop_tokens=stop, pad_id=PAD)
  a = sample(model, pt, pm, jax.random.key(5), **kw)
  b = sample(model, pt, pm, jax.random.key(5), segment_size=12, **kw)
  assert np.asarray(a.stopped).all() and np.asarray(a.lengths).max() < 24
  _check_rollout_structure(a, np.asarray(pt), np.asarray(pm), stop, 24)
  chex.assert_trees_all_equal(a.tokens, b.tokens)
  chex.assert_trees_all_equal(a.completion_mask, b.completion_mask)
  np.testing.assert_allclose(a.untruncated_logp, b.untruncated_logp, atol=1e-6)
  np.testing.assert_allclose(b.untruncated_logp, _score(model, b, 1.5), atol=1e-5, rtol=0)


def test_first_token_distribution(model):
  """Empirical frequencies of many draws match the truncated softmax computed in NumPy."""
  n, t, opts = 2048, 1.3, dict(top_k=6, top_p=0.95)
  pt = jnp.tile(jnp.array([[0, 3, 9, 4]], jnp.int32), (n, 1))
  pm = jnp.tile(jnp.array([[0, 1, 1, 1]], jnp.int32), (n, 1))
  r = sample(model, pt, pm, jax.random.key(11), max_new_tokens=1, temperature=t, **opts)
  logits = np.asarray(_forward_jit(*nnx.split(model), pt[:1], pm[:1]))[0, -1]
  probs = np.exp(_log_softmax(_np_filter(logits / t, **opts)))
  counts = np.bincount(np.asarray(r.tokens)[:, -1], minlength=CFG.vocab_size)
  assert counts[probs == 0].sum() == 0
  assert (probs > 0).sum() >= 2  # the test exercises a real distribution
  tol = 5 * np.sqrt(probs * (1 - probs) / n) + 1e-3
  np.testing.assert_array_less(np.abs(counts / n - probs), tol)
  np.testing.assert_allclose(np.exp(np.asarray(r.behavior_logp)[:, -1]),
                             probs[np.asarray(r.tokens)[:, -1]], rtol=1e-4)


def test_functional_form_inside_user_jit(model, prompts):
  """sample_fn traces once inside a caller's jit and equals sample()."""
  pt, pm = prompts
  kw = dict(max_new_tokens=3, temperature=1.0, stop_tokens=(5,))
  @jax.jit
  @chex.assert_max_traces(n=1)
  def fn(graphdef, state, prompt_tokens, prompt_mask, key):
    return sample_fn(graphdef, state, prompt_tokens, prompt_mask, key, **kw)

  graphdef, state = nnx.split(model)
  a = fn(graphdef, state, pt, pm, jax.random.key(2))
  fn(graphdef, state, pt, pm, jax.random.key(3))
  state2 = jax.tree.map(lambda x: x * 1.01, state)  # new parameter values: no retrace
  fn(graphdef, state2, pt, pm, jax.random.key(2))
  b = sample(model, pt, pm, jax.random.key(2), **kw)
  chex.assert_trees_all_equal(a.tokens, b.tokens)
  np.testing.assert_allclose(a.untruncated_logp, b.untruncated_logp, atol=1e-6)


def test_sample_validation(model, prompts):
  pt, pm = prompts
  key = jax.random.key(0)
  right_padded = jnp.asarray(np.asarray(pm)[:, ::-1].copy())
  with pytest.raises(ValueError, match="left padded"):
    sample(model, pt, right_padded, key, max_new_tokens=2)
  with pytest.raises(ValueError, match="temperature"):
    sample(model, pt, pm, key, max_new_tokens=2, temperature=-1.0)
  with pytest.raises(ValueError, match="max_new_tokens"):
    sample(model, pt, pm, key, max_new_tokens=0)
  with pytest.raises(ValueError, match="stop_tokens"):
    sample(model, pt, pm, key, max_new_tokens=2, stop_tokens=(CFG.vocab_size,))
  with pytest.raises(ValueError, match="prompt_mask"):
    sample(model, pt, pm[:, 1:], key, max_new_tokens=2)


def test_doctests():
  for module in (filters_lib, sampler_lib):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, module.__name__
