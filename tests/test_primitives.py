"""Shared primitives against independent NumPy float64 implementations, eager and jitted, and vmap.

Covers `aggregate` (every mode, with `max_tokens` and an external `normalizer`),
`aggregation_normalizer`, the masked metric helpers, `sequence_logp`, `log_ratio` and
`importance_ratio` at every level with and without the clamp, `token_logp_from_logits`,
`entropy_from_logits`, `kl_divergence` with every estimator, and `effective_sample_size`.
The NumPy references below are written from the equations in the docstrings, not from the code.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rljax
from rljax._src import aggregation as agg_lib
from rljax._src import ratios as ratios_lib

B, T, V = 4, 5, 6
RTOL, ATOL = 2e-5, 1e-6


# --------------------------------------------------------------------------- NumPy references


def np_aggregate(values, mask, mode, max_tokens=None, normalizer=None):
  v = np.where(mask > 0, values, 0.0).astype(np.float64) * mask
  if mode == "token-mean":
    den = mask.sum() if normalizer is None else normalizer
    return v.sum() / max(den, 1.0)
  if mode == "seq-mean-token-sum-norm":
    rows = values.shape[0] if normalizer is None else normalizer
    return v.sum() / (rows * (values.shape[1] if max_tokens is None else max_tokens))
  lens = mask.sum(axis=1)
  keep = lens > 0
  per_seq = v.sum(axis=1)
  if mode == "seq-mean-token-mean":
    per_seq = np.where(keep, per_seq / np.maximum(lens, 1.0), 0.0)
  den = keep.sum() if normalizer is None else normalizer
  return per_seq[keep].sum() / max(den, 1.0)


def np_log_ratio(logp, blogp, mask, level, clamp):
  d = np.where(mask > 0, logp.astype(np.float64) - blogp.astype(np.float64), 0.0)
  if clamp is not None:
    d = np.clip(d, -clamp, clamp)
  if level == "token":
    return d
  s = (d * mask).sum(axis=1)
  if level == "sequence":
    s = s / np.maximum(mask.sum(axis=1), 1.0)
  return s if clamp is None else np.clip(s, -clamp, clamp)


def np_kl(logp, ref, mask, estimator, clamp):
  d = np.where(mask > 0, logp.astype(np.float64) - ref.astype(np.float64), 0.0)
  if clamp is not None:
    d = np.clip(d, -clamp, clamp)
  kl = {"k1": d, "k2": 0.5 * d**2, "mse": 0.5 * d**2, "k3": np.exp(-d) + d - 1.0,
        "abs": np.abs(d)}[estimator]
  return np.where(mask > 0, kl, 0.0)


def np_log_softmax(z, temperature=1.0):
  z = z.astype(np.float64) / temperature
  zmax = z.max(axis=-1, keepdims=True)
  return z - zmax - np.log(np.exp(z - zmax).sum(axis=-1, keepdims=True))


def np_entropy(z, temperature=1.0):
  lp = np_log_softmax(z, temperature)
  p = np.exp(lp)
  return -np.where(p > 0, p * np.where(p > 0, lp, 0.0), 0.0).sum(axis=-1)


def np_ess(lw, mask=None):
  lw = np.asarray(lw, np.float64)
  if mask is not None:
    lw = lw[np.asarray(mask) > 0]
  if lw.size == 0:
    return 1.0
  w = np.exp(lw - lw.max())
  return w.sum()**2 / (lw.size * (w**2).sum())


# --------------------------------------------------------------------------- fixtures, helpers


def _data(seed=0):
  rng = np.random.default_rng(seed)
  logp = np.log(rng.uniform(0.05, 1.0, size=(B, T))).astype(np.float32)
  blogp = (logp + rng.normal(scale=0.5, size=(B, T))).astype(np.float32)
  values = rng.normal(size=(B, T)).astype(np.float32)
  # Ragged lengths 5, 3, 0 (an all-masked row) and 1.
  mask = (np.arange(T)[None, :] < np.array([5, 3, 0, 1])[:, None]).astype(np.float32)
  return logp, blogp, values, mask


@functools.lru_cache(maxsize=None)
def _jitted(fn, **kwargs):
  """One jitted function per (primitive, static options), reused across cases."""
  return jax.jit(functools.partial(fn, **kwargs))


def call(fn, *args, jit, **kwargs):
  if jit:
    return _jitted(fn, **kwargs)(*args)
  return fn(*args, **kwargs)


def close(got, want, rtol=RTOL, atol=ATOL):
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


def _aggregate_with_normalizer(values, mask, normalizer, *, mode):
  return rljax.aggregate(values, mask, mode, normalizer=normalizer)


JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


# --------------------------------------------------------------------------- aggregation


def test_aggregate_hand_example():
  v = np.array([[1., 2., 3., 0.], [4., 0., 0., 0.]], np.float32)
  m = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], np.float32)
  got = [float(rljax.aggregate(v, m, mode)) for mode in rljax.AGGREGATION_MODES]
  # 10/4; (2 + 4)/2; (6 + 4)/2; 10/(2 rows * 4 columns).
  assert got == [2.5, 3.0, 5.0, 1.25]
  assert float(rljax.aggregate(v, m, "seq-mean-token-sum-norm", max_tokens=10)) == 0.5


@JIT
@pytest.mark.parametrize("mode", rljax.AGGREGATION_MODES)
def test_aggregate_matches_numpy(mode, jit):
  _, _, values, mask = _data(1)
  close(call(rljax.aggregate, values, mask, mode=mode, jit=jit), np_aggregate(values, mask, mode))
  # An external normaliser (traced under jit) replaces the count.
  close(call(_aggregate_with_normalizer, values, mask, np.float32(7.0), mode=mode, jit=jit),
        np_aggregate(values, mask, mode, normalizer=7.0))
  if mode == "seq-mean-token-sum-norm":
    close(call(rljax.aggregate, values, mask, mode=mode, max_tokens=16, jit=jit),
          np_aggregate(values, mask, mode, max_tokens=16))


@pytest.mark.parametrize("mode", rljax.AGGREGATION_MODES)
def test_aggregate_mask_semantics(mode):
  _, _, values, mask = _data(2)
  # Masked entries holding inf / NaN / huge numbers change neither value nor gradient.
  dirty = np.where(mask > 0, values, np.array([np.inf, -np.inf, np.nan, 1e30, -1e30])[
      np.arange(B * T).reshape(B, T) % 5]).astype(np.float32)
  f = lambda v: rljax.aggregate(v, mask, mode)
  val, grad = jax.value_and_grad(f)(jnp.asarray(dirty))
  close(val, np_aggregate(values, mask, mode))
  assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[mask == 0] == 0)
  # Bool, int and float masks agree; an all-masked batch gives exactly 0 with zero gradient.
  for m in (mask.astype(bool), mask.astype(np.int32)):
    close(rljax.aggregate(values, m, mode), np_aggregate(values, mask, mode))
  empty = np.zeros_like(mask)
  val, grad = jax.value_and_grad(lambda v: rljax.aggregate(v, empty, mode))(jnp.asarray(dirty))
  assert float(val) == 0.0 and np.all(np.asarray(grad) == 0)


@pytest.mark.parametrize("mode", rljax.AGGREGATION_MODES)
def test_aggregation_normalizer(mode):
  _, _, _, mask = _data(3)
  want = {"token-mean": mask.sum(), "seq-mean-token-mean": 3.0, "seq-mean-token-sum": 3.0,
          "seq-mean-token-sum-norm": float(B)}[mode]
  assert float(rljax.aggregation_normalizer(mask, mode)) == want
  # Passing the normaliser computed from the same mask reproduces the default exactly.
  _, _, values, _ = _data(3)
  close(rljax.aggregate(values, mask, mode, normalizer=rljax.aggregation_normalizer(mask, mode)),
        np_aggregate(values, mask, mode))


def test_aggregate_vmap():
  _, _, values, mask = _data(4)
  vs = np.stack([values, values[::-1] * 2.0])
  ms = np.stack([mask, mask[::-1]])
  for mode in rljax.AGGREGATION_MODES:
    got = jax.vmap(functools.partial(rljax.aggregate, mode=mode))(vs, ms)
    close(got, [np_aggregate(vs[i], ms[i], mode) for i in range(2)])


def test_masked_metric_helpers():
  _, _, values, mask = _data(5)
  sel = values[mask > 0].astype(np.float64)
  close(rljax.masked_mean(values, mask), sel.mean())
  close(agg_lib.masked_max(values, mask), sel.max())
  close(agg_lib.masked_min(values, mask), sel.min())
  empty = np.zeros_like(mask)
  for f in (rljax.masked_mean, agg_lib.masked_max, agg_lib.masked_min):
    assert float(f(values, empty)) == 0.0


def test_masked_row_sums_take_the_same_value_on_both_paths():
  # On the CPU a finite select-free sum is kept and a non-finite one is redone with a select;
  # weight-0 tokens holding inf / NaN force the second path. Both must equal NumPy's masked sum,
  # and the derivative (forward and reverse) is the mask itself.
  logp, blogp, _, mask = _data(3)
  mask = mask * np.array([1.0, 0.5, 1.0, 2.0], np.float32)[:, None]  # fractional weights too
  want = (np.where(mask != 0, logp.astype(np.float64) - blogp, 0.0) * mask).sum(1)
  dirty = np.where(mask != 0, logp, np.array([np.nan, np.inf, -np.inf])[
      np.arange(B * T).reshape(B, T) % 3]).astype(np.float32)
  f = jax.jit(agg_lib.masked_row_sums)
  for lp in (logp, dirty):
    close(f(lp, mask, blogp), want)
    close(f(lp, mask), (np.where(mask != 0, logp.astype(np.float64), 0.0) * mask).sum(1))
    cot = np.arange(1.0, B + 1.0, dtype=np.float32)
    g = jax.grad(lambda x: jnp.sum(f(x, mask, blogp) * cot))(jnp.asarray(lp))
    close(g, cot[:, None] * mask)
    _, tangent = jax.jvp(lambda x: f(x, mask, blogp), (jnp.asarray(lp),), (jnp.ones((B, T)),))
    close(tangent, mask.sum(1))
  # A weight-1 token at -inf is a real -inf and stays one.
  bad = logp.copy()
  bad[0, 0] = -np.inf
  assert np.asarray(f(bad, mask))[0] == -np.inf


@pytest.mark.parametrize("mode", rljax.AGGREGATION_MODES)
def test_advantage_weighted_aggregate_from_row_sums_matches_token_form(mode):
  # REINFORCE with sequence advantages aggregates from row sums of the log-probs; it must equal
  # aggregate(-A * logp) with the advantages broadcast over tokens, value and gradient, with
  # dirty weight-0 tokens, for every mode, with and without an external normalizer.
  logp, _, _, mask = _data(4)
  adv = np.array([1.5, -0.5, 2.0, -1.0], np.float32)
  dirty = np.where(mask > 0, logp, np.array([np.nan, -np.inf])[
      np.arange(B * T).reshape(B, T) % 2]).astype(np.float32)
  for normalizer in (None, 7.0):
    want = np_aggregate(-adv[:, None] * logp.astype(np.float64), mask, mode,
                        normalizer=normalizer)
    # The loss is linear in logp: its gradient is the NumPy loss of each unit matrix.
    unit = np.eye(B * T).reshape(B * T, B, T)
    want_grad = np.array([np_aggregate(-adv[:, None] * e, mask, mode, normalizer=normalizer)
                          for e in unit]).reshape(B, T)
    for a in (adv, np.broadcast_to(adv[:, None], (B, T))):
      fn = lambda lp: agg_lib.aggregate_advantage_weighted(lp, a, mask, mode,
                                                           normalizer=normalizer)
      val, grad = jax.jit(jax.value_and_grad(fn))(jnp.asarray(dirty))
      close(val, want)
      close(grad, want_grad)
      assert np.all(np.asarray(grad)[mask == 0] == 0)


def test_aggregate_errors_name_the_argument():
  _, _, values, mask = _data()
  with pytest.raises(ValueError, match=r"aggregation='sum'.*token-mean.*seq-mean-token-sum-norm"):
    rljax.aggregate(values, mask, "sum")
  with pytest.raises(ValueError, match="aggregation"):
    rljax.aggregation_normalizer(mask, "mean")
  with pytest.raises(ValueError, match=r"mask must have the same shape as values \[4, 5\]"):
    rljax.aggregate(values, mask[:, :3])
  with pytest.raises(ValueError, match=r"values must have shape \[B, T\]"):
    rljax.aggregate(values[0], mask[0])
  with pytest.raises(ValueError, match="max_tokens"):
    rljax.aggregate(values, mask, "seq-mean-token-sum-norm", max_tokens=0)


def test_negative_or_nan_mask_weights_are_rejected_when_concrete():
  logp, blogp, values, mask = _data()
  for bad, shown in ((-1.0, r"-1\.0"), (np.nan, "nan")):
    m = mask.copy()
    m[1, 2] = bad
    for call in (lambda: rljax.aggregate(values, m),
                 lambda: rljax.reinforce_loss(logp, np.ones(B, np.float32), m),
                 lambda: rljax.copg_loss(logp, blogp, np.ones(B, np.float32), m, 2)):
      with pytest.raises(ValueError, match=rf"mask must hold weights >= 0.*{shown} at index \[1, 2\]"):
        call()
  m = mask.astype(np.int32)
  m[0, 0] = -3
  with pytest.raises(ValueError, match=r"-3 at index \[0, 0\]"):
    rljax.aggregate(values, m)
  # Bool masks and fractional weights pass; under jit the values are not inspected.
  rljax.aggregate(values, mask > 0)
  rljax.aggregate(values, mask * 0.5)
  jax.jit(rljax.aggregate)(values, np.where(mask > 0, -1.0, 0.0).astype(np.float32))


# --------------------------------------------------------------------------- log-probs and ratios


@JIT
def test_sequence_logp(jit):
  logp, _, _, mask = _data(6)
  dirty = np.where(mask > 0, logp, -np.inf).astype(np.float32)
  close(call(rljax.sequence_logp, dirty, mask, jit=jit), (logp * mask).astype(np.float64).sum(1))
  grad = jax.grad(lambda lp: rljax.sequence_logp(lp, mask).sum())(jnp.asarray(dirty))
  np.testing.assert_array_equal(np.asarray(grad), mask)
  close(jax.vmap(rljax.sequence_logp)(np.stack([logp, logp * 2]), np.stack([mask, mask])),
        np.stack([(logp * mask).sum(1), (2 * logp * mask).sum(1)]))


@JIT
@pytest.mark.parametrize("level", rljax.RATIO_LEVELS)
@pytest.mark.parametrize("clamp", [20.0, 0.3, None], ids=["clamp20", "clamp0.3", "noclamp"])
def test_log_ratio_and_importance_ratio(level, clamp, jit):
  logp, blogp, _, mask = _data(7)
  want = np_log_ratio(logp, blogp, mask, level, clamp)
  close(call(rljax.log_ratio, logp, blogp, mask, level=level, clamp=clamp, jit=jit), want)
  close(call(rljax.importance_ratio, logp, blogp, mask, level=level, clamp=clamp, jit=jit),
        np.exp(want) if level != "token" else np.where(mask > 0, np.exp(want), 1.0))


@pytest.mark.parametrize("level", rljax.RATIO_LEVELS)
def test_log_ratio_gradient_clamp_and_dirty_masked_entries(level):
  logp, blogp, _, mask = _data(8)
  # Masked entries hold -inf / +inf; valid entries include log-ratios of +-1e4.
  logp_d = logp.copy()
  blogp_d = blogp.copy()
  logp_d[0, 0], blogp_d[0, 1] = 1e4, 1e4
  logp_d[mask == 0], blogp_d[mask == 0] = -np.inf, np.inf
  f = lambda lp: jnp.sum(rljax.importance_ratio(lp, blogp_d, mask, level=level))
  val, grad = jax.value_and_grad(f)(jnp.asarray(logp_d))
  assert np.isfinite(float(val)) and np.all(np.isfinite(grad))
  assert np.all(np.asarray(grad)[mask == 0] == 0)
  if level == "token":
    # Beyond the clamp the gradient is exactly zero; inside it is exp(d).
    g = np.asarray(grad)
    assert g[0, 0] == 0 and g[0, 1] == 0
    close(g[0, 2:], np.exp(logp[0, 2:].astype(np.float64) - blogp[0, 2:]))
  # behavior_logp is data: no gradient flows into it.
  gb = jax.grad(lambda b: jnp.sum(rljax.log_ratio(jnp.asarray(logp), b, mask, level=level)))(
      jnp.asarray(blogp))
  assert np.all(np.asarray(gb) == 0)


def test_log_ratio_vmap_and_errors():
  logp, blogp, _, mask = _data(9)
  stack = lambda x: np.stack([x, x[::-1]])
  for level in rljax.RATIO_LEVELS:
    got = jax.vmap(functools.partial(rljax.log_ratio, level=level))(
        stack(logp), stack(blogp), stack(mask))
    close(got, [np_log_ratio(stack(logp)[i], stack(blogp)[i], stack(mask)[i], level, 20.0)
                for i in range(2)])
  with pytest.raises(ValueError, match=r"level='seq'.*token.*sequence-sum"):
    rljax.log_ratio(logp, blogp, mask, level="seq")
  with pytest.raises(ValueError, match=r"behavior_logp must have the same shape as logp"):
    rljax.log_ratio(logp, blogp[:, :2], mask)
  with pytest.raises(ValueError, match="logp must be a floating array"):
    rljax.log_ratio(np.zeros((B, T), np.int32), blogp, mask)
  with pytest.raises(ValueError, match="clamp"):
    rljax.log_ratio(logp, blogp, mask, clamp=-1.0)


def test_ratio_metrics():
  logp, blogp, _, mask = _data(10)
  d = np_log_ratio(logp, blogp, mask, "token", 20.0)
  r = np.exp(d)[mask > 0]
  got = ratios_lib.ratio_metrics(jnp.asarray(d, jnp.float32), mask)
  close(got["ratio_mean"], r.mean())
  close(got["ratio_min"], r.min())
  close(got["ratio_max"], r.max())
  close(got["approx_kl"], (r - 1 - np.log(r)).mean())
  assert float(got["log_ratio_clamped_frac"]) == 0.0


# --------------------------------------------------------------------------- logits


@JIT
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logp_and_entropy_from_logits(temperature, jit):
  rng = np.random.default_rng(11)
  logits = (3 * rng.normal(size=(B, T, V))).astype(np.float32)
  tokens = rng.integers(0, V, size=(B, T)).astype(np.int32)
  lsm = np_log_softmax(logits, temperature)
  want = np.take_along_axis(lsm, tokens[..., None], axis=-1)[..., 0]
  got = call(rljax.token_logp_from_logits, logits, tokens, temperature=temperature, jit=jit)
  assert got.dtype == jnp.float32 and got.shape == (B, T)
  close(got, want, atol=1e-5)
  close(call(rljax.entropy_from_logits, logits, temperature=temperature, jit=jit),
        np_entropy(logits, temperature), atol=1e-5)


def test_logits_low_precision_inf_vmap_and_errors():
  rng = np.random.default_rng(12)
  logits = rng.normal(size=(B, T, V)).astype(np.float32)
  tokens = rng.integers(0, V, size=(B, T)).astype(np.int32)
  # bfloat16 logits: computed in float32 from the rounded values.
  lb = jnp.asarray(logits, jnp.bfloat16)
  rounded = np.asarray(lb.astype(jnp.float32))
  got = rljax.token_logp_from_logits(lb, tokens)
  assert got.dtype == jnp.float32
  close(got, np.take_along_axis(np_log_softmax(rounded), tokens[..., None], -1)[..., 0],
        atol=1e-5)
  # -inf logits (a masked vocabulary entry): finite entropy and finite gradients.
  z = logits.copy()
  z[..., 0] = -np.inf
  tok = np.maximum(tokens, 1)
  h, gh = jax.value_and_grad(lambda z: rljax.entropy_from_logits(z).sum())(jnp.asarray(z))
  close(h, np_entropy(z).sum(), atol=1e-4)
  assert np.all(np.isfinite(gh)) and np.all(np.asarray(gh)[..., 0] == 0)
  gl = jax.grad(lambda z: rljax.token_logp_from_logits(z, tok).sum())(jnp.asarray(z))
  assert np.all(np.isfinite(gl))
  # vmap over an extra leading axis.
  zs, ts = np.stack([logits, -logits]), np.stack([tokens, tokens[::-1]])
  close(jax.vmap(rljax.token_logp_from_logits)(zs, ts),
        [np.take_along_axis(np_log_softmax(zs[i]), ts[i][..., None], -1)[..., 0]
         for i in range(2)], atol=1e-5)
  close(jax.vmap(rljax.entropy_from_logits)(zs), np_entropy(zs), atol=1e-5)
  with pytest.raises(ValueError, match=r"tokens must have shape \[4, 5\]"):
    rljax.token_logp_from_logits(logits, tokens[:, :2])
  with pytest.raises(ValueError, match="tokens must be integer"):
    rljax.token_logp_from_logits(logits, tokens.astype(np.float32))
  with pytest.raises(ValueError, match="temperature"):
    rljax.entropy_from_logits(logits, temperature=0.0)


# --------------------------------------------------------------------------- KL estimators


def test_kl_hand_values():
  # d = log .5 - log .25 = log 2.
  d = np.log(2.0)
  lp, ref, m = jnp.log(jnp.array([[.5]])), jnp.log(jnp.array([[.25]])), jnp.ones((1, 1))
  want = {"k1": d, "k2": d * d / 2, "mse": d * d / 2, "k3": 0.5 + d - 1, "abs": d}
  for est, w in want.items():
    close(rljax.kl_divergence(lp, ref, m, estimator=est)[0, 0], w)


@JIT
@pytest.mark.parametrize("estimator", rljax.KL_ESTIMATORS)
def test_kl_divergence_matches_numpy(estimator, jit):
  logp, ref, _, mask = _data(13)
  ref = ref.copy()
  ref[0, 0] = logp[0, 0] + 30.0   # beyond the clamp at 20
  ref[mask == 0] = -np.inf
  got = call(rljax.kl_divergence, logp, ref, mask, estimator=estimator, jit=jit)
  close(got, np_kl(logp, np.where(mask > 0, ref, 0.0), mask, estimator, 20.0), rtol=1e-5)
  # Without the clamp (TRL): the 30-nat entry is not clipped.
  got = rljax.kl_divergence(logp, np.where(mask > 0, ref, 0.0), mask, estimator=estimator,
                            clamp=None)
  close(got, np_kl(logp, np.where(mask > 0, ref, 0.0), mask, estimator, None), rtol=1e-5)


@pytest.mark.parametrize("estimator", rljax.KL_ESTIMATORS)
def test_kl_divergence_gradient_and_vmap(estimator):
  logp, ref, _, mask = _data(14)
  ref = np.where(mask > 0, ref, -np.inf).astype(np.float32)
  f = lambda lp: rljax.kl_divergence(lp, ref, mask, estimator=estimator).sum()
  g = np.asarray(jax.grad(f)(jnp.asarray(np.where(mask > 0, logp, -np.inf), jnp.float32)))
  d = np.where(mask > 0, logp.astype(np.float64) - ref, 0.0)
  want = {"k1": np.ones_like(d), "k2": d, "mse": d, "k3": 1 - np.exp(-d),
          "abs": np.sign(d)}[estimator] * mask
  close(g, want, rtol=1e-5)
  gr = jax.grad(lambda r: rljax.kl_divergence(jnp.asarray(logp), r, mask,
                                              estimator=estimator).sum())(jnp.asarray(ref))
  assert np.all(np.asarray(gr) == 0)  # the reference is data
  logp_s, ref_s = np.stack([logp, logp[::-1]]), np.stack([np.where(mask > 0, ref, 0.)] * 2)
  got = jax.vmap(functools.partial(rljax.kl_divergence, estimator=estimator))(
      logp_s, ref_s, np.stack([mask, mask]))
  close(got, [np_kl(logp_s[i], ref_s[i], mask, estimator, 20.0) for i in range(2)], rtol=1e-5)


def test_kl_invalid_estimator():
  logp, ref, _, mask = _data()
  with pytest.raises(ValueError, match=r"estimator='k4'.*k1.*mse"):
    rljax.kl_divergence(logp, ref, mask, estimator="k4")
  with pytest.raises(ValueError, match="ref_logp must have the same shape as logp"):
    rljax.kl_divergence(logp, ref[:2], mask)


# --------------------------------------------------------------------------- effective sample size


@JIT
def test_effective_sample_size(jit):
  rng = np.random.default_rng(15)
  lw = rng.normal(scale=2.0, size=7).astype(np.float32)
  mask = np.array([1, 1, 0, 1, 1, 0, 1], np.float32)
  close(call(rljax.effective_sample_size, lw, jit=jit), np_ess(lw))
  close(call(rljax.effective_sample_size, lw, mask, jit=jit), np_ess(lw, mask))
  if not jit:
    return
  # Extremes (jitted only): uniform -> 1, one dominant weight -> 1/n, huge log-weights,
  # nothing valid -> 1, a -inf log-weight is a zero weight, +inf ones dominate (not NaN).
  ess = _jitted(rljax.effective_sample_size)
  close(ess(np.full(7, 3e3, np.float32)), 1.0)
  close(ess(np.array([1e4, 0, 0, -1e4, 0, 0, 0], np.float32)), 1 / 7)
  close(call(rljax.effective_sample_size, lw, np.zeros(7, np.float32), jit=True), 1.0)
  close(ess(np.array([-np.inf, 0, 0, 0, 0, 0, 0], np.float32)), 6 / 7)
  close(ess(np.array([np.inf, 0, 0, 0, 0, 0, 0], np.float32)), 1 / 7)
  close(ess(np.array([np.inf, np.inf, 0, 5, 0, 0, 0], np.float32)), 2 / 7)


def test_effective_sample_size_vmap_grad_and_errors():
  rng = np.random.default_rng(16)
  lw = rng.normal(scale=2.0, size=7).astype(np.float32)
  mask = np.array([1, 1, 0, 1, 1, 0, 1], np.float32)
  close(jax.vmap(rljax.effective_sample_size)(np.stack([lw, -lw]), np.stack([mask, mask])),
        [np_ess(lw, mask), np_ess(-lw, mask)])
  g = jax.jit(jax.grad(rljax.effective_sample_size))(jnp.asarray(lw))
  assert np.all(np.asarray(g) == 0)  # a diagnostic: no gradient
  with pytest.raises(ValueError, match=r"log_weights must have shape \[N\]"):
    rljax.effective_sample_size(np.zeros((2, 3), np.float32))
