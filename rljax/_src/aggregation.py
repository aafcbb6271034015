"""Loss aggregation: how per-token losses become one scalar.

One implementation, shared by every loss. The four modes follow the names of verl's `agg_loss`;
rljax's definitions (and where they differ from the peers) are in the docstring of `aggregate`.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from rljax._src import validation

AGGREGATION_MODES = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)


def _safe_divide(num, den):
  """num / den with den clamped to >= 1 (den is a count), so empty batches give 0, not NaN."""
  return num / jnp.maximum(den, 1.0)


def aggregation_normalizer(mask: jax.Array, mode: str = "token-mean") -> jax.Array:
  """The denominator `aggregate` uses for `mode`, computed from a (full-batch) mask.

  Pass the value computed on the full batch as `normalizer=` to `aggregate` (or to any loss) on
  each micro-batch; the sum of the micro-batch losses then equals the full-batch loss exactly, and
  so do the gradients. Under `jit` over a mesh the sums are global, so this is the global count.

  Args:
    mask: [B, T] weights (1 on tokens that count).
    mode: an aggregation mode (see `aggregate`).

  Returns:
    Scalar float32: the number of valid tokens (`token-mean`), of non-empty sequences
    (`seq-mean-token-mean`, `seq-mean-token-sum`), or of rows (`seq-mean-token-sum-norm`).
  """
  validation.check_choice("aggregation", mode, AGGREGATION_MODES)
  m = validation.mask_as_float(mask)
  if mode == "token-mean":
    return jnp.sum(m)
  if mode == "seq-mean-token-sum-norm":
    return jnp.asarray(m.shape[0], jnp.float32)
  return jnp.sum((jnp.sum(m, axis=-1) > 0).astype(jnp.float32))


def aggregate(values: jax.Array,
              mask: jax.Array,
              mode: str = "token-mean",
              *,
              max_tokens: Optional[int] = None,
              normalizer: Optional[jax.Array] = None) -> jax.Array:
  r"""Reduces per-token values `[B, T]` to a scalar.

  With :math:`m` the mask, :math:`\ell` the values and :math:`|y_i| = \sum_t m_{it}`:

  * ``token-mean`` (DAPO, arXiv 2503.14476): :math:`\sum_{i,t} m\ell / \sum_{i,t} m`.
  * ``seq-mean-token-mean`` (GRPO, arXiv 2402.03300):
    :math:`\frac{1}{|\{i: |y_i|>0\}|}\sum_{i: |y_i|>0} \frac{1}{|y_i|}\sum_t m\ell`.
  * ``seq-mean-token-sum``: :math:`\frac{1}{|\{i: |y_i|>0\}|}\sum_i \sum_t m\ell`.
  * ``seq-mean-token-sum-norm`` (Dr. GRPO, arXiv 2503.20783):
    :math:`\sum_{i,t} m\ell / (B \cdot \text{max\_tokens})`, a constant normaliser, with
    ``max_tokens`` defaulting to the padded width T. This is the paper's and TRL's
    ``dr_grpo`` constant; verl and Trinity-RFT divide by T only (no 1/B), which makes the loss
    scale grow with the batch: multiply by B to reproduce them.

  Rows with no valid token are excluded from the per-sequence means (as verl and tunix do; TRL
  and Trinity-RFT count them). An all-masked batch gives 0, never NaN. Masked entries of `values`
  may hold inf or NaN: they are selected away with `where`, not multiplied by 0.

  Args:
    values: [B, T] per-token values (e.g. per-token losses).
    mask: [B, T] weights, 1 on tokens that count (bool, int or float).
    mode: one of `AGGREGATION_MODES`.
    max_tokens: the fixed generation budget for ``seq-mean-token-sum-norm``; defaults to T.
    normalizer: optional external denominator (replacing the count of tokens, of non-empty
      sequences, or of rows, see `aggregation_normalizer`); use it so that micro-batched
      gradient accumulation reproduces the full-batch gradient exactly.

  Returns:
    A float32 scalar.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> v = jnp.array([[1., 2., 3., 0.], [4., 0., 0., 0.]])
    >>> m = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]])
    >>> [round(float(rljax.aggregate(v, m, mode)), 3) for mode in rljax.AGGREGATION_MODES]
    [2.5, 3.0, 5.0, 1.25]
  """
  validation.check_choice("aggregation", mode, AGGREGATION_MODES)
  validation.check_floating("values", values)
  if jnp.ndim(values) != 2:
    raise ValueError(f"values must have shape [B, T], got {list(jnp.shape(values))}.")
  validation.check_same_shape([("values", values), ("mask", mask)])
  m = validation.mask_as_float(mask)
  v = jnp.where(m > 0, values.astype(jnp.float32), 0.0) * m
  if mode == "token-mean":
    den = jnp.sum(m) if normalizer is None else normalizer
    return _safe_divide(jnp.sum(v), den)
  if mode == "seq-mean-token-sum-norm":
    if max_tokens is None:
      max_tokens = values.shape[-1]
    validation.check_positive("max_tokens", max_tokens)
    rows = values.shape[0] if normalizer is None else normalizer
    return jnp.sum(v) / (jnp.maximum(jnp.asarray(rows, jnp.float32), 1.0) * max_tokens)
  seq_sum = jnp.sum(v, axis=-1)
  seq_len = jnp.sum(m, axis=-1)
  nonempty = (seq_len > 0).astype(jnp.float32)
  if mode == "seq-mean-token-mean":
    per_seq = _safe_divide(seq_sum, seq_len)
  else:  # seq-mean-token-sum
    per_seq = seq_sum
  den = jnp.sum(nonempty) if normalizer is None else normalizer
  return _safe_divide(jnp.sum(per_seq * nonempty), den)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Token mean of `values` over `mask` (0 when empty); a metrics helper, no gradient implied."""
  m = validation.mask_as_float(mask)
  return _safe_divide(jnp.sum(jnp.where(m > 0, values, 0.0) * m), jnp.sum(m))


def masked_max(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Max of `values` over `mask`; 0 when the mask is empty."""
  m = jnp.asarray(mask) > 0
  return jnp.where(jnp.any(m), jnp.max(jnp.where(m, values, -jnp.inf)), 0.0)


def masked_min(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Min of `values` over `mask`; 0 when the mask is empty."""
  m = jnp.asarray(mask) > 0
  return jnp.where(jnp.any(m), jnp.min(jnp.where(m, values, jnp.inf)), 0.0)


def masked_stats(mask: jax.Array, *, means=None, sums=None, mins=None, maxs=None) -> dict:
  """Token means, minima and maxima of several [B, T] arrays over `mask`, in one pass.

  Same values as `rljax.masked_mean` / ``masked_min`` / ``masked_max`` (means weighted by the
  mask, divided by max(sum(mask), 1); min/max over tokens with mask > 0, 0 if there are none), but
  computed by a single variadic ``lax.reduce`` into which XLA fuses every operand. Separate
  reductions each materialise a [B, T] temporary on the CPU backend, and at [256, 4096] ten of them
  cost more than the loss itself. Used for the diagnostics of every loss; no gradient.

  Args:
    mask: [B, T] weights.
    means, sums, mins, maxs: mappings from metric name to a [B, T] array; ``sums`` are plain
      (unweighted) sums over the tokens with mask > 0, e.g. counts.

  Returns:
    dict from every name to a float32 scalar.
  """
  means, sums = dict(means or {}), dict(sums or {})
  mins, maxs = dict(mins or {}), dict(maxs or {})
  m = validation.mask_as_float(mask)
  valid = m > 0
  sg = lambda x: jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))
  operands = [m] + [jnp.where(valid, sg(v), 0.0) * m for v in means.values()]
  operands += [jnp.where(valid, sg(v), 0.0) for v in sums.values()]
  operands += [jnp.where(valid, sg(v), jnp.inf) for v in mins.values()]
  operands += [jnp.where(valid, sg(v), -jnp.inf) for v in maxs.values()]
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
