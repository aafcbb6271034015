"""Each kernel of rljax/_src/kernels.py against its plain reference: values and gradients.

Inputs hold inf and NaN where the weight is 0 (the fast form must give the reference's finite
value and derivative, treating those entries as absent), all-masked rows, entries of ±1e4, and
every kernel is checked under `jit` and `vmap`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax._src import kernels

B, T = 6, 37


def _batch(seed, dirty=True):
  """a, b [B, T] with ±1e4 entries; fractional weights, an all-masked row; inf/NaN at weight 0."""
  rng = np.random.default_rng(seed)
  a = rng.normal(0.0, 3.0, (B, T)).astype(np.float32)
  b = rng.normal(0.0, 3.0, (B, T)).astype(np.float32)
  a[0, :3], b[1, :3] = 1e4, -1e4
  m = (rng.uniform(size=(B, T)) < 0.7) * rng.choice([0.5, 1.0, 2.0], (B, T))
  m[2] = 0.0  # an all-masked row
  m[3] = 1.0  # a full row
  m = m.astype(np.float32)
  if dirty:
    junk = np.array([np.nan, np.inf, -np.inf], np.float32)[np.arange(B * T).reshape(B, T) % 3]
    a = np.where(m == 0, junk, a)
    b = np.where(m == 0, junk[::-1], b)
  return jnp.asarray(a), jnp.asarray(b), jnp.asarray(m)


def _close(x, y):
  np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# masked_row_sums
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_b", [True, False])
@pytest.mark.parametrize("dirty", [True, False])
def test_masked_row_sums_values_and_gradients_match_the_reference(with_b, dirty):
  a, b, m = _batch(0, dirty)
  b = b if with_b else None
  cot = jnp.arange(1.0, B + 1.0)
  for fast, ref in ((kernels.masked_row_sums, kernels.masked_row_sums_reference),
                    (jax.jit(kernels.masked_row_sums), jax.jit(kernels.masked_row_sums_reference))):
    got, want = fast(a, m, b), ref(a, m, b)
    assert np.all(np.isfinite(np.asarray(got)))
    _close(got, want)
    assert float(got[2]) == 0.0  # the all-masked row
    argnums = (0, 2) if with_b else 0
    g_fast = jax.grad(lambda a, m, b: jnp.sum(cot * fast(a, m, b)), argnums)(a, m, b)
    g_ref = jax.grad(lambda a, m, b: jnp.sum(cot * ref(a, m, b)), argnums)(a, m, b)
    for gf, gr in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref)):
      assert np.all(np.isfinite(np.asarray(gf)))
      _close(gf, gr)
    g_a = jax.tree.leaves(g_fast)[0]
    _close(g_a, cot[:, None] * m)  # the derivative is the weight, 0 where the weight is 0
    tangents = (jnp.ones_like(a), jnp.zeros_like(m)) + ((-jnp.ones_like(b),) if with_b else ())
    fn = lambda f: (lambda a, m, *b: f(a, m, *b))
    primals = (a, m) + ((b,) if with_b else ())
    _, t_fast = jax.jvp(fn(fast), primals, tangents)
    _, t_ref = jax.jvp(fn(ref), primals, tangents)
    _close(t_fast, t_ref)


def test_masked_row_sums_keep_a_real_infinity():
  a, b, m = _batch(1, dirty=False)
  a = a.at[3, 0].set(-jnp.inf)  # weight 1
  assert float(kernels.masked_row_sums(a, m)[3]) == -np.inf
  assert float(kernels.masked_row_sums_reference(a, m)[3]) == -np.inf


def test_masked_row_sums_under_vmap():
  batches = [_batch(s, dirty=s % 2 == 0) for s in range(3)]
  a, b, m = (jnp.stack(x) for x in zip(*batches))
  got = jax.jit(jax.vmap(kernels.masked_row_sums))(a, m, b)
  _close(got, jax.vmap(kernels.masked_row_sums_reference)(a, m, b))
  grad = lambda f: jax.grad(lambda a: jnp.sum(jax.vmap(f)(a, m, b)))(a)
  _close(grad(kernels.masked_row_sums), grad(kernels.masked_row_sums_reference))


# ------------------------------------------------------------------------------------------------
# masked_stats and count
# ------------------------------------------------------------------------------------------------


def _stats_operands(seed):
  a, b, m = _batch(seed)
  return m, {"mean_a": a, "mean_b": b}, {"sum_b": b}, {"min_a": a}, {"max_a": a, "max_b": b}


@pytest.mark.parametrize("seed", [0, 1])
def test_masked_stats_match_the_reference(seed):
  m, means, sums, mins, maxs = _stats_operands(seed)
  want = kernels.masked_stats_reference(m, means, sums, mins, maxs)
  for fast in (kernels.masked_stats, jax.jit(kernels.masked_stats)):
    got = fast(m, means, sums, mins, maxs)
    assert got.keys() == want.keys()
    for k in want:
      assert np.isfinite(float(got[k])), k
      np.testing.assert_allclose(float(got[k]), float(want[k]), rtol=1e-5, err_msg=k)


def test_masked_stats_of_an_empty_mask_are_zero():
  m, means, sums, mins, maxs = _stats_operands(2)
  m = jnp.zeros_like(m)
  for fn in (kernels.masked_stats, kernels.masked_stats_reference):
    out = fn(m, means, sums, mins, maxs)
    assert all(float(v) == 0.0 for v in out.values()), out


def test_masked_stats_under_vmap():
  ops = [_stats_operands(s) for s in range(3)]
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *ops)
  got = jax.jit(jax.vmap(kernels.masked_stats))(*stacked)
  want = jax.vmap(kernels.masked_stats_reference)(*stacked)
  for k in want:
    np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-5, err_msg=k)


def test_count_matches_the_reference():
  rng = np.random.default_rng(0)
  for valid in (rng.uniform(size=(B, T)) < 0.3, np.zeros((B, T), bool), np.ones((B, T), bool)):
    valid = jnp.asarray(valid)
    assert int(jax.jit(kernels.count)(valid)) == int(kernels.count_reference(valid))
  stacked = jnp.asarray(rng.uniform(size=(3, B, T)) < 0.5)
  np.testing.assert_array_equal(jax.vmap(kernels.count)(stacked),
                                jax.vmap(kernels.count_reference)(stacked))


# ------------------------------------------------------------------------------------------------
# uniform_priority
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (4, 8), (17, 1001)])
def test_uniform_priority_matches_the_reference_bit_for_bit(shape):
  for key in (jax.random.PRNGKey(7), jax.random.key(3), jax.random.key(7, impl="rbg")):
    got = jax.jit(kernels.uniform_priority, static_argnums=1)(key, shape)
    want = kernels.uniform_priority_reference(key, shape)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert got.shape == shape and got.dtype == jnp.float32
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  fn = functools.partial(kernels.uniform_priority, shape=shape)
  ref = functools.partial(kernels.uniform_priority_reference, shape=shape)
  np.testing.assert_array_equal(np.asarray(jax.vmap(fn)(keys)), np.asarray(jax.vmap(ref)(keys)))


def test_threefry_reference_is_jaxs_threefry_stream():
  # With partitionable Threefry, jax.random.bits hashes the counters (0, i) and XORs the two
  # output words: the plain reference must give exactly those words.
  key = jax.random.PRNGKey(11)
  counts = jnp.arange(1000, dtype=jnp.uint32)
  w0, w1 = kernels.threefry2x32_reference(key.astype(jnp.uint32), jnp.zeros_like(counts), counts)
  with jax.threefry_partitionable(True):
    want = jax.random.bits(key, (1000,), jnp.uint32)
  np.testing.assert_array_equal(np.asarray(w0 ^ w1), np.asarray(want))


def test_clip_cov_priorities_are_uniform_and_independent():
  """Both Threefry words of each block are used: the two halves of a row must not be related."""
  p = np.asarray(kernels.uniform_priority(jax.random.PRNGKey(7), (64, 1001)), np.float64)
  assert p.shape == (64, 1001) and p.min() >= 0.0 and p.max() < 1.0
  # Kolmogorov-Smirnov distance to U[0, 1): 5.6e-3 is the 0.1% critical value at n = 64 064.
  x = np.sort(p.ravel())
  n = x.size
  ks = max(np.max(np.arange(1, n + 1) / n - x), np.max(x - np.arange(n) / n))
  assert ks < 1.95 / np.sqrt(n)
  a, b = p[:, :500].ravel(), p[:, 501:].ravel()  # the two words of the same blocks
  assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(a.size)
  assert len(np.unique(p)) > 0.99 * n
  raw = kernels.uniform_priority(jax.random.PRNGKey(7), (3, 5))
  typed = kernels.uniform_priority(jax.random.key(7), (3, 5))
  np.testing.assert_array_equal(np.asarray(raw), np.asarray(typed))
  other = kernels.uniform_priority(jax.random.PRNGKey(8), (3, 5))
  assert not np.array_equal(np.asarray(raw), np.asarray(other))
  rbg = kernels.uniform_priority(jax.random.key(7, impl="rbg"), (3, 5))  # falls back
  assert rbg.shape == (3, 5) and bool(jnp.all((rbg >= 0) & (rbg < 1)))


# ------------------------------------------------------------------------------------------------
# top_k_indices
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 37, 300, 5000])
def test_two_level_top_k_gives_top_ks_indices(k):
  # The fast TopK goes through row maxima first; it must return exactly the indices, in the
  # order, of one jax.lax.top_k over everything, on data that stresses ties and order.
  rng = np.random.default_rng(k)
  n = 2**16
  x = rng.normal(size=n)
  cases = {
      "normal": x,
      "ties": np.round(x * 2) / 2,  # a few dozen distinct values
      "constant": np.zeros(n),
      "ascending": np.sort(x),
      "descending": np.sort(x)[::-1],
      "sparse": np.where(rng.uniform(size=n) < 0.01, x, -np.inf),
      "fewer finite than k": np.where(np.arange(n) % 4099 == 7, x, -np.inf),
      "all -inf": np.full(n, -np.inf),
      "+-inf": np.where(rng.uniform(size=n) < 0.05, np.sign(x) * np.inf, x),
      "one hot row": np.where(np.arange(n) // 64 == 5, 1.0 + np.arange(n) % 2, 0.0),
      "extreme": np.where(rng.uniform(size=n) < 0.5, 1e4, -1e4) + x,
  }
  fn = jax.jit(kernels.top_k_indices, static_argnums=1)
  want_fn = jax.jit(kernels.top_k_indices_reference, static_argnums=1)
  for name, v in cases.items():
    v = jnp.asarray(v, jnp.float32)
    np.testing.assert_array_equal(np.asarray(fn(v, k)), np.asarray(want_fn(v, k)), err_msg=name)
  # A length that is not a multiple of the row length takes one TopK; still the same.
  v = jnp.asarray(x[:n - 3], jnp.float32)
  np.testing.assert_array_equal(np.asarray(fn(v, k)), np.asarray(want_fn(v, k)))


def test_top_k_indices_under_vmap():
  rng = np.random.default_rng(0)
  v = jnp.asarray(np.round(rng.normal(size=(3, 2**14)) * 4) / 4, jnp.float32)
  got = jax.jit(jax.vmap(lambda x: kernels.top_k_indices(x, 50)))(v)
  want = jax.vmap(lambda x: kernels.top_k_indices_reference(x, 50))(v)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
