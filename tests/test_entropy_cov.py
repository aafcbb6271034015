"""Tests of Clip-Cov and KL-Cov ("The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617).

The covariance, the selections and the losses against independent float64 NumPy code; the claims:
only the selected tokens are touched (elsewhere the gradient is exactly the plain surrogate's),
selected tokens are detached (Clip-Cov) or get the |log-ratio| penalty (KL-Cov), the selection is
global over the batch (same on 1 and 8 devices), deterministic given the key and uniform among
the candidates, the paper's token counts, and KL-Cov's penalty is inert on-policy.
"""

import functools
import inspect

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rljax


def make_batch(seed, b=4, t=6, empty_row=True):
  rng = np.random.default_rng(seed)
  logp = rng.uniform(-3.0, -0.05, (b, t)).astype(np.float32)
  old = (logp + rng.normal(0.0, 0.5, (b, t))).astype(np.float32)
  lens = rng.integers(2, t + 1, b)
  if empty_row:
    lens[-1] = 0
  mask = (np.arange(t)[None, :] < lens[:, None]).astype(np.float32)
  adv = rng.normal(0.0, 2.5, (b, t)).astype(np.float32)
  return logp, old, adv, mask


def np_cov(logp, adv, m):
  logp, adv, m = (np.asarray(x, np.float64) for x in (logp, adv, m))
  valid = m > 0
  lp, a = np.where(valid, logp, 0.0), np.where(valid, adv, 0.0)
  n = max(m.sum(), 1.0)
  return np.where(valid, (lp - (lp * m).sum() / n) * (a - (a * m).sum() / n), 0.0)


def np_ppo(logp, old, adv, m, el, eh, clamp=20.0):
  """Per-token PPO-clip loss and d/d logp (float64), and which tokens PPO clipped."""
  logp, old, adv, m = (np.asarray(x, np.float64) for x in (logp, old, adv, m))
  valid = m > 0
  d = np.where(valid, logp, 0.0) - np.where(valid, old, 0.0)
  live = np.abs(d) < clamp
  rho = np.exp(np.clip(d, -clamp, clamp))
  adv = np.where(valid, adv, 0.0)
  unclipped, clipped = -adv * rho, -adv * np.clip(rho, 1 - el, 1 + eh)
  grad = np.where(unclipped >= clipped, -adv * rho, 0.0) * live
  return np.maximum(unclipped, clipped), grad, clipped > unclipped, d, rho, live


def num_to_select(ratio, m):
  return max(int(np.floor(ratio * (m > 0).sum())), 1)


# ----------------------------------------------------------------------------- jitted functions


@functools.partial(jax.jit, static_argnames=("kl_cov_ratio",))
def kl_cov(logp, old, adv, mask, kl_coef, selection=None, kl_cov_ratio=0.2):
  fn = lambda lp: rljax.kl_cov_loss(lp, old, adv, mask, kl_cov_ratio=kl_cov_ratio,
                                    kl_coef=kl_coef, selection=selection)
  (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(logp)
  sel = rljax.kl_cov_selection(logp, adv, mask, kl_cov_ratio=kl_cov_ratio)
  return loss, metrics, grad, sel


@functools.partial(jax.jit, static_argnames=("clip_ratio",))
def clip_cov(logp, old, adv, mask, key, selection=None, clip_ratio=0.25):
  fn = lambda lp: rljax.clip_cov_loss(lp, old, adv, mask, key, clip_ratio=clip_ratio,
                                      epsilon_low=0.2, epsilon_high=0.2, selection=selection)
  (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(logp)
  sel = rljax.clip_cov_selection(logp, old, adv, mask, key, clip_ratio=clip_ratio,
                                 epsilon_low=0.2, epsilon_high=0.2)
  return loss, metrics, grad, sel


# ----------------------------------------------------------------------------- KL-Cov


def test_token_covariance_matches_numpy():
  logp, _, adv, mask = make_batch(0)
  np.testing.assert_allclose(np.asarray(jax.jit(rljax.token_covariance)(logp, adv, mask)),
                             np_cov(logp, adv, mask), rtol=1e-5, atol=1e-6)


def test_token_covariance_with_sequence_advantages_matches_numpy():
  logp, _, _, mask = make_batch(4)
  seq_adv = np.random.default_rng(4).normal(0.0, 2.0, logp.shape[0]).astype(np.float32)
  got = jax.jit(rljax.token_covariance)(logp, seq_adv, mask)  # the [B] path: A_i |y_i| sums
  want = np_cov(logp, np.broadcast_to(seq_adv[:, None], logp.shape), mask)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kl_cov_selection_values_and_gradients_match_numpy(seed):
  logp, old, adv, mask = make_batch(seed)
  loss, metrics, grad, sel = kl_cov(logp, old, adv, mask, 0.7)
  cov = np_cov(logp, adv, mask)
  k = num_to_select(0.2, mask)
  order = np.argsort(-np.where(mask > 0, cov, -np.inf).reshape(-1), kind="stable")[:k]
  ref_sel = np.zeros(mask.size, bool)
  ref_sel[order] = True
  ref_sel = ref_sel.reshape(mask.shape)
  np.testing.assert_array_equal(np.asarray(sel), ref_sel)
  assert float(metrics["num_selected"]) == k
  # Loss: -A rho everywhere, + beta |d| on the selected tokens; token mean.
  _, _, _, d, rho, live = np_ppo(logp, old, adv, mask, 0.2, 0.2)
  a = np.where(mask > 0, adv, 0.0)
  n = mask.sum()
  per = -a * rho + np.where(ref_sel, 0.7 * np.abs(d), 0.0)
  np.testing.assert_allclose(float(loss), np.where(mask > 0, per, 0).sum() / n, rtol=1e-5)
  ref_grad = np.where(mask > 0, (-a * rho + np.where(ref_sel, 0.7 * np.sign(d), 0.0)) * live, 0)
  np.testing.assert_allclose(np.asarray(grad), ref_grad / n, rtol=1e-5, atol=1e-7)
  # Unselected tokens: exactly the unclipped surrogate's gradient.
  np.testing.assert_allclose(np.asarray(grad)[~ref_sel], (-a * rho / n)[~ref_sel], rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(float(metrics["kl_cov_abs_log_ratio"]), np.abs(d)[ref_sel].mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(float(metrics["cov_mean"]), cov.sum() / n, rtol=1e-5, atol=1e-7)


def test_kl_cov_penalty_is_inert_on_policy():
  """d|x|/dx = 0 at x = 0: with old = logp KL-Cov has exactly the REINFORCE gradient."""
  logp, _, adv, mask = make_batch(4)
  loss, metrics, grad, _ = kl_cov(logp, logp, adv, mask, 1.0)
  assert float(metrics["num_selected"]) > 0
  ref = -np.where(mask > 0, adv, 0.0) / mask.sum()
  np.testing.assert_allclose(np.asarray(grad), ref, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------- Clip-Cov


@pytest.mark.parametrize("seed", [5, 8, 12])  # candidates vs k: 4 vs 2, 2 vs 3, 4 vs 3
def test_clip_cov_selection_values_and_gradients(seed):
  logp, old, adv, mask = make_batch(seed)
  key = jax.random.PRNGKey(seed)
  loss, metrics, grad, sel = clip_cov(logp, old, adv, mask, key)
  sel = np.asarray(sel)
  per, ppo_grad, by_ppo, *_ = np_ppo(logp, old, adv, mask, 0.2, 0.2)
  cov = np_cov(logp, adv, mask)
  candidates = (mask > 0) & ~by_ppo & (cov > 1.0) & (cov < 5.0)
  k = min(num_to_select(0.25, mask), candidates.sum())
  assert candidates.sum() >= 2  # the test batch exercises the band
  assert not np.any(sel & ~candidates) and sel.sum() == k
  assert float(metrics["num_selected"]) == k
  assert float(metrics["num_candidates"]) == candidates.sum()
  np.testing.assert_allclose(float(metrics["masked_frac"]), k / mask.sum(), rtol=1e-6)
  n = mask.sum()
  np.testing.assert_allclose(float(loss), np.where((mask > 0) & ~sel, per, 0).sum() / n,
                             rtol=1e-5, atol=1e-7)
  # Selected tokens: no gradient; all others: exactly PPO-clip's.
  np.testing.assert_array_equal(np.asarray(grad)[sel], 0.0)
  np.testing.assert_allclose(np.asarray(grad)[~sel], (ppo_grad / n)[~sel], rtol=1e-5, atol=1e-7)
  # The same selection passed in explicitly gives the same loss (micro-batch reuse).
  loss2, _, grad2, _ = clip_cov(logp, old, adv, mask, jax.random.PRNGKey(99), selection=sel)
  assert float(loss2) == float(loss)
  np.testing.assert_array_equal(np.asarray(grad2), np.asarray(grad))


@jax.jit
def selections_for_keys(keys, logp, old, adv, mask):
  fn = lambda k: rljax.clip_cov_selection(logp, old, adv, mask, k, clip_ratio=0.25,
                                          epsilon_low=0.2, epsilon_high=0.2)
  return jax.vmap(fn)(keys)


def test_clip_cov_selection_is_deterministic_and_uniform_over_candidates():
  logp, old, adv, mask = make_batch(5)
  keys = jax.random.split(jax.random.PRNGKey(0), 400)
  sels = np.asarray(selections_for_keys(keys, logp, old, adv, mask))
  again = np.asarray(selections_for_keys(keys, logp, old, adv, mask))
  np.testing.assert_array_equal(sels, again)  # deterministic given the key
  _, _, by_ppo, *_ = np_ppo(logp, old, adv, mask, 0.2, 0.2)
  cov = np_cov(logp, adv, mask)
  candidates = (mask > 0) & ~by_ppo & (cov > 1.0) & (cov < 5.0)
  c, k = candidates.sum(), min(num_to_select(0.25, mask), candidates.sum())
  assert 0 < k < c
  freq = sels.mean(0)[candidates]
  # Each candidate is chosen with probability k / c (binomial, 400 draws: 5 sigma).
  sigma = np.sqrt(k / c * (1 - k / c) / len(keys))
  np.testing.assert_allclose(freq, k / c, atol=5 * sigma)
  assert len({s.tobytes() for s in sels}) > 1


@jax.jit
def selection_counts(logp, old, adv, mask):
  clip = rljax.clip_cov_selection(logp, old, adv, mask, jax.random.PRNGKey(0))
  kl7b = rljax.kl_cov_selection(logp, adv, mask)
  verl = rljax.kl_cov_selection(logp, adv, mask, kl_cov_ratio=2e-4)
  return [jnp.sum(x) for x in (clip, kl7b, verl)]


def test_the_papers_token_counts_with_the_default_ratios():
  """N = 10 000 tokens: Clip-Cov detaches 2, KL-Cov (7B, k = 2e-3) penalises 20, verl's 2e-4: 2."""
  half = np.arange(100 * 100).reshape(100, 100) % 2 == 0
  logp = np.where(half, -1.0, -3.0).astype(np.float32)  # Cov = 2 on every token: all candidates
  adv = np.where(half, 2.0, -2.0).astype(np.float32)
  counts = selection_counts(logp, logp, adv, np.ones_like(logp))
  assert [int(c) for c in counts] == [2, 20, 2]


def test_defaults_are_the_papers():
  clip = inspect.signature(rljax.clip_cov_loss).parameters
  assert (clip["clip_ratio"].default, clip["cov_lower"].default, clip["cov_upper"].default,
          clip["epsilon_low"].default, clip["epsilon_high"].default) == (2e-4, 1.0, 5.0, 1.0, 1.0)
  kl = inspect.signature(rljax.kl_cov_loss).parameters
  assert (kl["kl_cov_ratio"].default, kl["kl_coef"].default) == (2e-3, 1.0)


# ----------------------------------------------------------------------------- global selection


def test_selection_is_global_over_the_batch_and_reusable_on_micro_batches():
  logp, old, adv, mask = make_batch(8, b=8, t=4)
  adv[:4] += 3.0  # the micro-batches' own statistics differ from the batch's
  norm = rljax.aggregation_normalizer(mask, "token-mean")
  full_loss, _, full_grad, full_sel = kl_cov(logp, old, adv, mask, 1.0, kl_cov_ratio=0.1)
  # Selections made on each half alone (as per-micro-batch code does) are not the batch's.
  halves = [np.asarray(kl_cov(logp[s], old[s], adv[s], mask[s], 1.0, kl_cov_ratio=0.1)[3])
            for s in (slice(0, 4), slice(4, 8))]
  assert not np.array_equal(np.concatenate(halves), np.asarray(full_sel))
  # Passing the full-batch selection to the micro-batches reproduces the full-batch gradient.
  fn = jax.jit(lambda lp, o, a, m, sel: jax.value_and_grad(
      lambda x: rljax.kl_cov_loss(x, o, a, m, selection=sel, normalizer=norm).loss)(lp))
  parts = [fn(logp[s], old[s], adv[s], mask[s], np.asarray(full_sel)[s])
           for s in np.split(np.arange(8), 4)]
  np.testing.assert_allclose(sum(float(p[0]) for p in parts), float(full_loss), rtol=1e-6)
  np.testing.assert_allclose(np.concatenate([np.asarray(p[1]) for p in parts]),
                             np.asarray(full_grad), rtol=1e-6, atol=1e-8)


@jax.jit
def both_losses(logp, old, adv, mask, key):
  """Both losses (values and gradients) and both selections, in one compiled function."""
  clip = lambda lp: rljax.clip_cov_loss(lp, old, adv, mask, key, clip_ratio=0.25).loss
  kl = lambda lp: rljax.kl_cov_loss(lp, old, adv, mask, kl_cov_ratio=0.2).loss
  return ([jax.value_and_grad(f)(logp) for f in (clip, kl)],
          [rljax.clip_cov_selection(logp, old, adv, mask, key, clip_ratio=0.25),
           rljax.kl_cov_selection(logp, adv, mask, kl_cov_ratio=0.2)])


def test_sharded_batch_gives_the_same_selection_value_and_gradient():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices")
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  row = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  args = make_batch(9, b=8, t=4)
  key = jax.random.PRNGKey(3)
  one = both_losses(*args, key)
  eight = both_losses(*(jax.device_put(a, row) for a in args), key)
  for s1, s8 in zip(one[1], eight[1]):
    assert np.asarray(s1).sum() > 0
    np.testing.assert_array_equal(np.asarray(s8), np.asarray(s1))
  for (l1, g1), (l8, g8) in zip(one[0], eight[0]):
    np.testing.assert_allclose(float(l8), float(l1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(g8), np.asarray(g1), rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------- robustness


@hypothesis.settings(max_examples=30, deadline=None, derandomize=True)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1.0, 1e2, 1e4]),
                  empty=st.booleans())
def test_extreme_inputs_give_finite_loss_and_gradients(seed, scale, empty):
  rng = np.random.default_rng(seed)
  logp = -rng.uniform(0, scale, (4, 6)).astype(np.float32)
  old = -rng.uniform(0, scale, (4, 6)).astype(np.float32)
  mask = (rng.uniform(size=(4, 6)) < 0.6).astype(np.float32)
  if empty:
    mask[rng.integers(4)] = 0.0
  logp[mask == 0] = -np.inf
  old[mask == 0] = 1e4
  adv = rng.normal(0, scale, (4, 6)).astype(np.float32)
  adv[mask == 0] = np.nan  # masked advantages may be garbage too
  for loss, metrics, grad, sel in (clip_cov(logp, old, adv, mask, jax.random.PRNGKey(seed % 7)),
                                   kl_cov(logp, old, adv, mask, 1.0)):
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.asarray(grad)[mask == 0] == 0.0)
    assert not np.any(np.asarray(sel)[mask == 0])
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_all_masked_batch_selects_nothing():
  logp, old, adv, _ = make_batch(10)
  mask = np.zeros_like(logp)
  for loss, metrics, grad, sel in (clip_cov(logp, old, adv, mask, jax.random.PRNGKey(0)),
                                   kl_cov(logp, old, adv, mask, 1.0)):
    assert float(loss) == 0.0 and not np.any(np.asarray(grad)) and not np.any(np.asarray(sel))
    assert float(metrics["num_selected"]) == 0.0


def test_validation_errors():
  logp, old, adv, mask = make_batch(11)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="clip_ratio"):
    rljax.clip_cov_loss(logp, old, adv, mask, key, clip_ratio=0.0)
  with pytest.raises(ValueError, match="cov_lower"):
    rljax.clip_cov_loss(logp, old, adv, mask, key, cov_lower=5.0, cov_upper=1.0)
  with pytest.raises(ValueError, match="kl_cov_ratio"):
    rljax.kl_cov_loss(logp, old, adv, mask, kl_cov_ratio=1.5)
  with pytest.raises(ValueError, match="selection"):
    rljax.kl_cov_loss(logp, old, adv, mask, selection=np.ones((4, 2), bool))
  with pytest.raises(ValueError, match="old_logp"):
    rljax.kl_cov_loss(logp, old[:, :2], adv, mask)
  with pytest.raises(ValueError, match="advantages"):
    rljax.clip_cov_loss(logp, old, adv[:, :2], mask, key)


def test_vmap_matches_a_loop():
  batches = [make_batch(s) for s in (12, 13)]
  keys = jax.random.split(jax.random.PRNGKey(1), 2)
  stacked = [np.stack(x) for x in zip(*batches)]
  fn = jax.jit(jax.vmap(lambda lp, o, a, m, k: (
      rljax.clip_cov_loss(lp, o, a, m, k, clip_ratio=0.25, epsilon_low=0.2,
                          epsilon_high=0.2).loss,
      rljax.kl_cov_loss(lp, o, a, m, kl_cov_ratio=0.2, kl_coef=1.0).loss)))
  clip_v, kl_v = fn(*stacked, keys)
  for i, b in enumerate(batches):
    np.testing.assert_allclose(float(clip_v[i]), float(clip_cov(*b, keys[i])[0]), rtol=1e-6)
    np.testing.assert_allclose(float(kl_v[i]), float(kl_cov(*b, 1.0)[0]), rtol=1e-6)
