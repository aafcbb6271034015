"""rljax.models.kernels against the plain reference forms in rljax.models.transformer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.models import kernels
from rljax.models import transformer


def _inputs(b=3, s=7, h=4, kv=2, d=8):
  keys = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(keys[0], (b, s, h, d))
  k = jax.random.normal(keys[1], (b, s, kv, d))
  v = jax.random.normal(keys[2], (b, s, kv, d))
  # Row i has i left-pad tokens, so its first i query rows see no key at all.
  pad = (jnp.arange(s)[None] >= jnp.arange(b)[:, None]).astype(jnp.int32)
  return q, k, v, transformer.causal_mask(pad), jax.random.normal(keys[3], (b, s, h * d))


@pytest.mark.parametrize('kv_heads', [4, 2, 1])
def test_attention_matches_the_reference(kv_heads):
  q, k, v, mask, _ = _inputs(kv=kv_heads)
  fast = jax.jit(kernels.attention)(q, k, v, mask)
  ref = transformer.attention(q, k, v, mask)
  assert fast.shape == ref.shape == (3, 7, 32)
  np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-6)


def test_attention_gradients_match_the_reference():
  q, k, v, mask, cotangent = _inputs()
  grad = lambda fn: jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a, mask) * cotangent),
                                     argnums=(0, 1, 2)))(q, k, v)
  for fast, ref in zip(grad(kernels.attention), grad(transformer.attention)):
    assert np.all(np.isfinite(fast))
    np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-5)


def test_a_query_that_sees_no_key_averages_the_values_uniformly():
  q, k, v, mask, _ = _inputs()
  out = kernels.attention(q, k, v, mask)
  # Row 2's first query position is padding: every key is masked, so the softmax is uniform.
  expected = np.repeat(np.asarray(v[2]).mean(axis=0), 2, axis=0).reshape(-1)
  np.testing.assert_allclose(out[2, 0], expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------- shared_prompt_hidden_states against the plain


def _grouped_batch(groups=3, g=2, s=5, n=4, vocab=17):
  """Rows in groups of g sharing a left-padded prompt (pads 0, 2, 4), ragged completions."""
  rng = np.random.default_rng(1)
  prompts = rng.integers(3, vocab, size=(groups, s))
  pmask = (np.arange(s)[None] >= np.array([0, 2, 4])[:groups, None]).astype(np.int32)
  completions = rng.integers(3, vocab, size=(groups * g, n))
  lengths = np.array([n, 1, 3, n, 2, 1])[:groups * g]  # tokens after a row's end are padding
  cmask = (np.arange(n)[None] < lengths[:, None]).astype(np.int32)
  tokens = np.concatenate([np.repeat(prompts, g, 0), completions], 1).astype(np.int32)
  input_mask = np.concatenate([np.repeat(pmask, g, 0), cmask], 1)
  completion_mask = np.concatenate([np.zeros((groups * g, s), np.int32), cmask], 1)
  return jnp.asarray(tokens), jnp.asarray(input_mask), jnp.asarray(completion_mask)


def _model(remat='none'):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rljax.models import Transformer, TransformerConfig  # pylint: disable=g-import-not-at-top
  cfg = TransformerConfig(vocab_size=17, d_model=16, num_layers=2, num_heads=4, num_kv_heads=2,
                          head_dim=8, ffn_dim=32, max_seq_len=16, remat=remat)
  return nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize('remat', ['none', 'block'])
def test_shared_prompt_hidden_states_equal_the_plain_forward(remat):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, state = _model(remat)
  tokens, input_mask, _ = _grouped_batch()
  n = 4
  model = nnx.merge(graphdef, state)
  plain = model.hidden_states(tokens, transformer.positions_from_mask(input_mask), input_mask)
  shared = jax.jit(lambda p, t, m: kernels.shared_prompt_hidden_states(
      nnx.merge(graphdef, p), t, m, group_size=2, completion_width=n))(state, tokens, input_mask)
  assert shared.shape == (6, n, 16)
  np.testing.assert_allclose(shared, plain[:, -n - 1:-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('remat', ['none', 'block'])
def test_shared_prompt_scores_and_gradients_equal_the_plain_ones(remat):
  from rljax.models import score_fn  # pylint: disable=g-import-not-at-top
  graphdef, state = _model(remat)
  tokens, input_mask, cmask = _grouped_batch()
  weights = jax.random.normal(jax.random.key(2), tokens.shape)

  def objective(group_size):
    def f(p):
      logp, ent = score_fn(graphdef, p, tokens, input_mask, cmask, return_entropy=True,
                           completion_width=4, group_size=group_size)
      return jnp.sum(logp * weights) + 0.1 * jnp.sum(ent), (logp, ent)
    return jax.jit(jax.value_and_grad(f, has_aux=True))(state)

  (plain_val, plain_out), plain_grad = objective(None)
  (val, out), grad = objective(2)
  np.testing.assert_allclose(val, plain_val, rtol=1e-5)
  for a, b in zip(out, plain_out):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert np.count_nonzero(np.asarray(plain_out[0])) == int(np.sum(cmask))
  for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(plain_grad)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_shared_prompt_hidden_states_refuse_bad_shapes():
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, state = _model()
  model = nnx.merge(graphdef, state)
  tokens, input_mask, _ = _grouped_batch()
  with pytest.raises(ValueError, match='group_size=4'):
    kernels.shared_prompt_hidden_states(model, tokens, input_mask, group_size=4,
                                        completion_width=4)
  with pytest.raises(ValueError, match='completion_width must be in'):
    kernels.shared_prompt_hidden_states(model, tokens, input_mask, group_size=2,
                                        completion_width=9)


def test_score_refuses_group_size_without_completion_width():
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rljax.models import score  # pylint: disable=g-import-not-at-top
  graphdef, state = _model()
  tokens, input_mask, cmask = _grouped_batch()
  with pytest.raises(ValueError, match='group_size=2 needs completion_width'):
    score(nnx.merge(graphdef, state), tokens, input_mask, cmask, group_size=2)
