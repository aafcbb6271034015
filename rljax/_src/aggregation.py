"""Loss aggregation: how per-token losses become one scalar.

One implementation, shared by every loss. The four modes follow the names of verl's `agg_loss`;
rljax's definitions (and where they differ from the peers) are in the docstring of `aggregate`.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from rljax._src import kernels
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


def masked_row_sums(a: jax.Array, mask: jax.Array, b: Optional[jax.Array] = None) -> jax.Array:
  r"""Per-row weighted sums :math:`\sum_t m_t (a_t - b_t)` of [B, T] arrays, [B] out.

  A token of weight 0 contributes exactly 0 whatever `a` and `b` hold there (inf and NaN
  included), to the value and to the derivative; the derivative is linear in `a` and `b`, so
  forward and reverse mode both work. The mask is data: its gradient is stopped. Computed by
  `kernels.masked_row_sums` (one fused pass on the CPU).

  Args:
    a: [B, T] float32 values.
    mask: [B, T] weights >= 0 (bool, int or float).
    b: optional [B, T] float32 values to subtract from `a` before weighting (one fused pass).

  Returns:
    [B] float32 row sums.
  """
  m = jax.lax.stop_gradient(validation.mask_as_float(mask))
  a = jnp.asarray(a, jnp.float32)
  b = None if b is None else jnp.asarray(b, jnp.float32)
  return kernels.masked_row_sums(a, m, b)


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

  Which objective the gradient follows when lengths vary (REINFORCE, A = R - baseline, shown by
  exact enumeration of a tabular policy with an end-of-sequence token in
  tests/test_exact_variable_length.py; ``python -m tests.test_exact_variable_length`` prints the
  table):

  * ``seq-mean-token-sum`` is unbiased for :math:`\nabla E[R(y)]` with no baseline, a constant
    baseline or RLOO; the group-mean baseline gives :math:`(G-1)/G` times it.
    ``seq-mean-token-sum-norm`` is the same divided by ``max_tokens``.
  * ``seq-mean-token-mean`` is unbiased for the length-normalised :math:`\nabla E[R(y)/|y|]`
    only without a baseline; a constant baseline b adds :math:`-b\,\nabla E[1/|y|]` (RLOO and the
    group mean add the same with b = E[R]), which favours longer sequences when b > 0, so with a
    baseline it is biased for both objectives.
  * ``token-mean`` over one sequence is ``seq-mean-token-mean``; over B >= 2 sequences its
    normaliser :math:`\sum_i |y_i|` is random and correlated with the sample, so it is biased
    for both objectives at every finite B, with or without a baseline (towards
    :math:`\nabla E[R]/E[|y|]` as B grows).

  At a fixed length every mode is unbiased up to its constant.

  Rows with no valid token are excluded from the per-sequence means (as verl and tunix do; TRL
  and Trinity-RFT count them). An all-masked batch gives 0, never NaN. Masked entries of `values`
  may hold inf or NaN: they are selected away with `where`, not multiplied by 0.

  Mask weights are >= 0 throughout rljax (bool, int or float; 1 on tokens that count): a token
  of weight 0 is left out whatever its values hold. A concrete mask with a negative or
  non-finite weight raises ValueError; under `jit` the values cannot be checked.

  Args:
    values: [B, T] per-token values (e.g. per-token losses).
    mask: [B, T] weights >= 0, 1 on tokens that count (bool, int or float).
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
  validation.check_mask_weights(mask)
  m = validation.mask_as_float(mask)
  v = jnp.where(m > 0, values.astype(jnp.float32), 0.0) * m
  return aggregate_rows(jnp.sum(v, axis=-1), jnp.sum(m, axis=-1), mode,
                        max_tokens=values.shape[-1] if max_tokens is None else max_tokens,
                        normalizer=normalizer)


def aggregate_rows(row_sums: jax.Array,
                   row_weights: jax.Array,
                   mode: str,
                   *,
                   max_tokens: int,
                   normalizer: Optional[jax.Array] = None) -> jax.Array:
  r"""`aggregate` from per-row sums :math:`\sum_t m\ell` [B] and per-row mask sums [B].

  Every mode is a function of these two, so a loss whose per-token value is a per-row constant
  times a token quantity (REINFORCE with sequence advantages) can aggregate from the row sums of
  that quantity (`masked_row_sums`) without writing a [B, T] product. `max_tokens` is required
  (`aggregate` passes T when it is not given).
  """
  validation.check_choice("aggregation", mode, AGGREGATION_MODES)
  if mode == "token-mean":
    den = jnp.sum(row_weights) if normalizer is None else normalizer
    return _safe_divide(jnp.sum(row_sums), den)
  if mode == "seq-mean-token-sum-norm":
    validation.check_positive("max_tokens", max_tokens)
    rows = row_sums.shape[0] if normalizer is None else normalizer
    return jnp.sum(row_sums) / (jnp.maximum(jnp.asarray(rows, jnp.float32), 1.0) * max_tokens)
  nonempty = (row_weights > 0).astype(jnp.float32)
  if mode == "seq-mean-token-mean":
    per_seq = _safe_divide(row_sums, row_weights)
  else:  # seq-mean-token-sum
    per_seq = row_sums
  den = jnp.sum(nonempty) if normalizer is None else normalizer
  return _safe_divide(jnp.sum(per_seq * nonempty), den)


def aggregate_advantage_weighted(logp: jax.Array,
                                 advantages: jax.Array,
                                 mask: jax.Array,
                                 mode: str,
                                 *,
                                 max_tokens: Optional[int] = None,
                                 normalizer: Optional[jax.Array] = None) -> jax.Array:
  """``aggregate(-sg(A) * logp, mask, mode)``, the REINFORCE form, for [B] or [B, T] advantages.

  With sequence advantages [B] this is computed from the row sums of the masked log-probs
  (`masked_row_sums`), one fused pass on the CPU instead of a [B, T] product and a select; with
  token advantages [B, T] it is `aggregate` itself. The two agree to float rounding (tested).
  A token of weight 0 is left out whatever `logp` holds there.
  """
  validation.check_choice("aggregation", mode, AGGREGATION_MODES)
  adv = jax.lax.stop_gradient(jnp.asarray(advantages, jnp.float32))
  if adv.ndim == 2:
    m = validation.mask_as_float(mask)
    lp = jnp.where(m > 0, logp.astype(jnp.float32), 0.0)
    return aggregate(-adv * lp, m, mode, max_tokens=max_tokens, normalizer=normalizer)
  validation.check_shape("advantages", adv, (logp.shape[0],))
  m = jax.lax.stop_gradient(validation.mask_as_float(mask))
  return aggregate_rows(-adv * masked_row_sums(logp, m), jnp.sum(m, axis=-1), mode,
                        max_tokens=logp.shape[-1] if max_tokens is None else max_tokens,
                        normalizer=normalizer)


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
  mask, divided by max(sum(mask), 1); min/max over tokens with mask > 0, 0 if there are none),
  computed together by `kernels.masked_stats`. Used for the diagnostics of every loss; no
  gradient.

  Args:
    mask: [B, T] weights.
    means, sums, mins, maxs: mappings from metric name to a [B, T] array; ``sums`` are plain
      (unweighted) sums over the tokens with mask > 0, e.g. counts.

  Returns:
    dict from every name to a float32 scalar.
  """
  m = validation.mask_as_float(mask)
  data = lambda d: {k: jax.lax.stop_gradient(jnp.asarray(v, jnp.float32))
                    for k, v in (d or {}).items()}
  return kernels.masked_stats(m, data(means), data(sums), data(mins), data(maxs))
