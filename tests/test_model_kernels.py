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
