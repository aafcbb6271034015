r"""Fast forms of a few reductions, random draws and selections, each beside its plain reference.

The estimator files call these by their mathematical name and read as their equations; every
platform-specific or performance-only construction of rljax lives here. Each kernel ``foo`` has a
``foo_reference`` written as plain ``jax.numpy``, which defines its value (and derivative), and
``tests/test_kernels.py`` checks that the two agree, including on inputs holding inf or NaN where
the weight is 0. Why each fast form exists:

* `masked_row_sums` (:math:`\sum_t m_t (a_t - b_t)` per row). XLA:CPU runs a multiply-and-sum as
  one fused, multi-threaded reduction, but not a select: that becomes a separate pass writing the
  whole [B, T] product first (about 40% of CoPG's loss + gradient at [256, 4096]). So on the CPU
  the sum is taken without the select and redone with it only when a row comes out non-finite
  (a weight-0 token holding inf or NaN gives inf * 0 = NaN; a finite result is exact).
  Elsewhere the select fuses and is always taken. A custom JVP, linear in the tangents, keeps the
  branch out of the derivative.
* `masked_stats` (masked means, sums, minima and maxima). One variadic ``lax.reduce`` into which
  XLA fuses every operand; separate reductions each materialise a [B, T] temporary on the CPU,
  and at [256, 4096] ten of them cost more than the loss itself.
* `count` (the number of True entries). Row counts in float32 (exact below 2**24 a row; a float
  reduction is several times faster than an int32 one on the CPU), summed over rows in int32.
* `uniform_priority` (uniform [0, 1) draws). `jax.random.uniform` spends one Threefry-2x32 block
  per number and XORs its two output words; here each block gives two numbers (both words), half
  the hashing, which dominates Clip-Cov's selection on the CPU.
* `top_k_indices` (``lax.top_k`` indices). XLA's CPU TopK takes time in proportion to its input
  (and far more on ascending data); a two-level TopK over row maxima, then over the chosen rows,
  scans far fewer entries and gives the same indices in the same order.
"""

import math
from typing import Mapping, Optional, Tuple

import jax
import jax.extend.random  # pylint: disable=unused-import  (jax.extend.random.threefry2x32_p)
import jax.numpy as jnp

_Stats = Optional[Mapping[str, jax.Array]]


def _difference(a, b):
  return a if b is None else a - b


# ------------------------------------------------------------------------------------------------
# masked_row_sums
# ------------------------------------------------------------------------------------------------


def masked_row_sums_reference(a: jax.Array, m: jax.Array,
                              b: Optional[jax.Array] = None) -> jax.Array:
  """:math:`\\sum_t m_t (a_t - b_t)` per row, a weight-0 token selected away (value and grad)."""
  return jnp.sum(jnp.where(m != 0, _difference(a, b) * m, 0.0), axis=-1)


def _masked_row_sums_cpu(a, b, m):
  plain = jnp.sum(_difference(a, b) * m, axis=-1)
  return jax.lax.cond(jnp.all(jnp.isfinite(plain)), lambda: plain,
                      lambda: masked_row_sums_reference(a, m, b))


@jax.custom_jvp
def _masked_row_sums(a, b, m):
  return jax.lax.platform_dependent(a, m, b, cpu=lambda a, m, b: _masked_row_sums_cpu(a, b, m),
                                    default=masked_row_sums_reference)


@_masked_row_sums.defjvp
def _masked_row_sums_jvp(primals, tangents):
  a, b, m = primals
  da, db, _ = tangents
  return _masked_row_sums(a, b, m), jnp.sum(_difference(da, db) * m, axis=-1)


def masked_row_sums(a: jax.Array, m: jax.Array, b: Optional[jax.Array] = None) -> jax.Array:
  """`masked_row_sums_reference`: the select only where a row needs it (CPU), one fused pass.

  `a`, `b` are [B, T] float32 and `m` [B, T] float32 weights (data: no derivative is defined
  for it). Under `vmap` the CPU branch becomes a select, so both sums run (same values).
  """
  return _masked_row_sums(a, b, m)


# ------------------------------------------------------------------------------------------------
# masked_stats
# ------------------------------------------------------------------------------------------------


def _split_stats(means, sums, mins, maxs):
  return tuple(dict(x or {}) for x in (means, sums, mins, maxs))


def masked_stats_reference(m: jax.Array, means: _Stats = None, sums: _Stats = None,
                           mins: _Stats = None, maxs: _Stats = None) -> dict:
  """Masked means (weighted by `m`, over max(sum(m), 1)), sums, minima and maxima, one by one.

  Sums, minima and maxima are over the entries with m > 0; a min or max over none is 0.
  """
  means, sums, mins, maxs = _split_stats(means, sums, mins, maxs)
  valid = m > 0
  count = jnp.sum(m)
  out = {k: jnp.sum(jnp.where(valid, v, 0.0) * m) / jnp.maximum(count, 1.0)
         for k, v in means.items()}
  out.update({k: jnp.sum(jnp.where(valid, v, 0.0)) for k, v in sums.items()})
  none = ~jnp.any(valid)
  out.update({k: jnp.where(none, 0.0, jnp.min(jnp.where(valid, v, jnp.inf)))
              for k, v in mins.items()})
  out.update({k: jnp.where(none, 0.0, jnp.max(jnp.where(valid, v, -jnp.inf)))
              for k, v in maxs.items()})
  return out


def masked_stats(m: jax.Array, means: _Stats = None, sums: _Stats = None, mins: _Stats = None,
                 maxs: _Stats = None) -> dict:
  """`masked_stats_reference` in one variadic ``lax.reduce`` over every operand (float32)."""
  means, sums, mins, maxs = _split_stats(means, sums, mins, maxs)
  valid = m > 0
  operands = [m] + [jnp.where(valid, v, 0.0) * m for v in means.values()]
  operands += [jnp.where(valid, v, 0.0) for v in sums.values()]
  operands += [jnp.where(valid, v, jnp.inf) for v in mins.values()]
  operands += [jnp.where(valid, v, -jnp.inf) for v in maxs.values()]
  num_sums, num_mins = 1 + len(means) + len(sums), len(mins)
  inits = [0.0] * num_sums + [jnp.inf] * num_mins + [-jnp.inf] * len(maxs)

  def combine(a, b):
    return tuple(x + y if i < num_sums else
                 (jnp.minimum(x, y) if i < num_sums + num_mins else jnp.maximum(x, y))
                 for i, (x, y) in enumerate(zip(a, b)))

  out = jax.lax.reduce(tuple(operands), tuple(jnp.float32(x) for x in inits), combine,
                       tuple(range(m.ndim)))
  count, rest = out[0], out[1:]
  stats = {k: v / jnp.maximum(count, 1.0) for k, v in zip(means, rest[:len(means)])}
  stats.update(zip(sums, rest[len(means):num_sums - 1]))
  extremes = list(mins) + list(maxs)
  stats.update({k: jnp.where(count > 0, v, 0.0) for k, v in zip(extremes, rest[num_sums - 1:])})
  return stats


# ------------------------------------------------------------------------------------------------
# count
# ------------------------------------------------------------------------------------------------


def count_reference(valid: jax.Array) -> jax.Array:
  """The number of True entries of a bool [B, T], int32."""
  return jnp.sum(valid.astype(jnp.int32))


def count(valid: jax.Array) -> jax.Array:
  """`count_reference` with float32 row counts (exact below 2**24 per row), int32 overall."""
  return jnp.sum(jnp.sum(valid.astype(jnp.float32), axis=-1).astype(jnp.int32))


# ------------------------------------------------------------------------------------------------
# uniform_priority
# ------------------------------------------------------------------------------------------------


def _threefry_key_data(key: jax.Array, rows: int, half: int) -> Optional[jax.Array]:
  """The [2] uint32 Threefry key of `key`, or None where the counters or the key do not fit."""
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  if typed and str(jax.random.key_impl(key)) != "threefry2x32":
    return None
  data = jax.random.key_data(key) if typed else key
  if data.shape != (2,) or rows * half >= 2**32:
    return None
  return data.astype(jnp.uint32)


def _uniform_from_bits(bits: jax.Array) -> jax.Array:
  """[0, 1) float32 from uint32 words: 23 random mantissa bits, as `jax.random.uniform`."""
  one_to_two = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32)
  return one_to_two - 1.0


def _rotl(x, r):
  return (x << jnp.uint32(r)) | (x >> jnp.uint32(32 - r))


def threefry2x32_reference(key: jax.Array, x0: jax.Array, x1: jax.Array):
  """Threefry-2x32 with 20 rounds (Salmon, Moraes, Dror and Shaw, SC 2011), in plain jnp."""
  k0, k1 = key[0], key[1]
  ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
  rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for i in range(5):
    for r in rotations[i % 2]:
      x0 = x0 + x1
      x1 = _rotl(x1, r) ^ x0
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
  return x0, x1


def _priority_counters(rows: int, half: int):
  return jnp.arange(rows * half, dtype=jnp.uint32).reshape(rows, half)


def uniform_priority_reference(key: jax.Array, shape: Tuple[int, int]) -> jax.Array:
  """Uniform [0, 1) float32 [B, T], deterministic given `key`: Threefry block (0, c) for
  c = i * ceil(T/2) + j gives entry (i, j) from its first word and (i, ceil(T/2) + j) from its
  second. Keys of another PRNG implementation (e.g. ``impl='rbg'``) use `jax.random.uniform`."""
  return _uniform_priority(key, shape, threefry2x32_reference)


def uniform_priority(key: jax.Array, shape: Tuple[int, int]) -> jax.Array:
  """`uniform_priority_reference` through XLA's own Threefry primitive (both output words)."""
  return _uniform_priority(
      key, shape, lambda data, x0, x1: jax.extend.random.threefry2x32_p.bind(
          data[0], data[1], x0, x1))


def _uniform_priority(key, shape, threefry):
  """Both words of `threefry(key data, 0, counter)` per block as uniform [0, 1) `shape`."""
  rows, cols = shape
  half = (cols + 1) // 2
  data = _threefry_key_data(key, rows, half)
  if data is None:
    return jax.random.uniform(key, shape)
  counts = _priority_counters(rows, half)
  bits_a, bits_b = threefry(data, jnp.zeros_like(counts), counts)
  return _uniform_from_bits(jnp.concatenate([bits_a, bits_b], axis=1)[:, :cols])


# ------------------------------------------------------------------------------------------------
# top_k_indices
# ------------------------------------------------------------------------------------------------


def top_k_indices_reference(flat: jax.Array, k: int) -> jax.Array:
  """Indices of the `k` largest entries of a 1-D array, largest first, ties to the lower index."""
  return jax.lax.top_k(flat, k)[1]


def top_k_indices(flat: jax.Array, k: int) -> jax.Array:
  """`top_k_indices_reference` for a NaN-free 1-D `flat`, scanning far fewer entries.

  With the entries as rows of c ~ sqrt(n / k), every row holding one of the k largest has its
  maximum among the k largest row maxima, ties included: TopK picks the lower index among equal
  values, and a lower row holds lower indices. So one TopK over the n / c row maxima, then one
  over the k * c entries of the chosen rows (in index order, so that ties still go to the lower
  index), gives the same indices in the same order. NaN would break this (the row max and TopK
  order it differently).
  """
  n = flat.shape[0]
  c = 1 << max(0, round(math.log2(max(n / k, 1.0)) / 2))
  if c < 4 or n % c or k > n // c:
    return top_k_indices_reference(flat, k)
  rows = flat.reshape(n // c, c)
  chosen = jnp.sort(jax.lax.top_k(jnp.max(rows, axis=1), k)[1])
  _, pos = jax.lax.top_k(rows[chosen].reshape(-1), k)
  return chosen[pos // c] * c + pos % c
