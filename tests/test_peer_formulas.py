"""rljax reproduces a peer library's formula with the recipe the README gives for it.

Each peer formula is transcribed here in float64 NumPy from the peer's source (file, function
and commit quoted), without calling rljax; rljax's loss with the README's recipe must equal it,
value and gradient (the gradient of the transcription by central finite differences), on
ragged masks with an empty row.

verl is volcengine/verl at commit b178a3cd56f58b2d502255daba591e92833930a7 (2026-01-29):

* ``verl/trainer/ppo/core_algos.py``, ``agg_loss``: the four ``loss_agg_mode`` reductions. In
  ``seq-mean-token-sum-norm`` the loss is ``sum(loss_mat * loss_mask) / loss_scale_factor``
  with ``loss_scale_factor`` defaulting to ``loss_mask.shape[-1]``; ``dp_size``,
  ``global_batch_size`` and ``batch_num_tokens`` do not enter that branch.
* ``verl/trainer/ppo/core_algos.py``, ``compute_policy_loss_vanilla``: the per-token PPO loss
  with verl's always-on dual clip ``clip_ratio_c = 3``.
* ``verl/workers/actor/dp_actor.py``, ``DataParallelPPOActor.update_policy`` (the worker
  ``use_legacy_worker_impl: auto`` selects): each micro-batch's loss is multiplied by
  ``1 / gradient_accumulation`` (``ppo_mini_batch_size // ppo_micro_batch_size_per_gpu``, the
  mini-batch already divided by the data-parallel size) or, with ``use_dynamic_bsz``, by
  ``micro_rows / ppo_mini_batch_size``; FSDP then averages the gradients over the ranks.

README row "Dr. GRPO constant": rljax's ``Σ m·ℓ / (B · max_tokens)`` times B is verl's
``agg_loss`` (and ``normalizer=1`` gives it directly); through verl's actor the applied
gradient is ``ppo_micro_batch_size_per_gpu`` times rljax's, not B times (tested below).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rljax

B, T = 8, 7
CLIP_LOW, CLIP_HIGH, CLIP_C = 0.2, 0.28, 3.0
SUM_NORM = "seq-mean-token-sum-norm"


# ------------------------------------------------------------ verl, transcribed in NumPy


def verl_agg_loss(loss_mat, loss_mask, loss_agg_mode, dp_size=1, batch_num_tokens=None,
                  global_batch_size=None, loss_scale_factor=None):
  """verl/trainer/ppo/core_algos.py, agg_loss (float64 NumPy, same branches and constants)."""
  loss_mat = np.asarray(loss_mat, np.float64)
  loss_mask = np.asarray(loss_mask, np.float64)
  if loss_agg_mode == "token-mean":
    if batch_num_tokens is None:
      batch_num_tokens = loss_mask.sum()
    return np.sum(loss_mat * loss_mask) / batch_num_tokens * dp_size
  if loss_agg_mode == "seq-mean-token-sum":
    seq_losses = np.sum(loss_mat * loss_mask, axis=-1)
    seq_mask = (np.sum(loss_mask, axis=-1) > 0).astype(np.float64)
    if global_batch_size is None:
      global_batch_size = seq_mask.sum()
    return np.sum(seq_losses * seq_mask) / global_batch_size * dp_size
  if loss_agg_mode == "seq-mean-token-mean":
    seq_mask = np.sum(loss_mask, axis=-1)
    seq_losses = np.sum(loss_mat * loss_mask, axis=-1) / (seq_mask + 1e-8)
    seq_mask = (seq_mask > 0).astype(np.float64)
    if global_batch_size is None:
      global_batch_size = seq_mask.sum()
    return np.sum(seq_losses * seq_mask) / global_batch_size * dp_size
  if loss_agg_mode == "seq-mean-token-sum-norm":
    seq_losses = np.sum(loss_mat * loss_mask, axis=-1)
    if loss_scale_factor is None:
      loss_scale_factor = loss_mask.shape[-1]
    return np.sum(seq_losses) / loss_scale_factor
  raise ValueError(loss_agg_mode)


def verl_vanilla_pg_losses(old_log_prob, log_prob, advantages):
  """verl/trainer/ppo/core_algos.py, compute_policy_loss_vanilla: `pg_losses` [B, T]."""
  negative_approx_kl = np.clip(log_prob - old_log_prob, -20.0, 20.0)
  ratio = np.exp(negative_approx_kl)
  pg_losses1 = -advantages * ratio
  pg_losses2 = -advantages * np.clip(ratio, 1 - CLIP_LOW, 1 + CLIP_HIGH)
  clip_pg_losses1 = np.maximum(pg_losses1, pg_losses2)
  pg_losses3 = -advantages * CLIP_C
  clip_pg_losses2 = np.minimum(pg_losses3, clip_pg_losses1)
  return np.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)


def verl_dr_grpo_loss(log_prob, old_log_prob, advantages, mask, loss_scale_factor=None):
  """compute_policy_loss_vanilla's `pg_loss` with loss_agg_mode='seq-mean-token-sum-norm'."""
  token_adv = np.asarray(advantages, np.float64)[:, None] * mask   # verl's [B, T] advantages
  pg_losses = verl_vanilla_pg_losses(old_log_prob, log_prob, token_adv)
  return verl_agg_loss(pg_losses, mask, SUM_NORM, loss_scale_factor=loss_scale_factor)


def verl_dp_actor_loss(log_prob, old_log_prob, advantages, mask, *, dp_size, micro_rows,
                       dynamic_bsz_micro_rows=None):
  """The loss whose gradient verl's actor applies for one mini-batch of all B rows.

  verl/workers/actor/dp_actor.py, update_policy: rank r holds the contiguous rows
  [r * B / dp_size, (r + 1) * B / dp_size) (`ppo_mini_batch_size` per GPU); each micro-batch
  loss is `pg_loss * loss_scale_factor` with `loss_scale_factor = 1 / gradient_accumulation`
  (or `micro_rows / ppo_mini_batch_size` with dynamic batch sizes, whose micro-batch sizes
  `dynamic_bsz_micro_rows` list per rank); the backward passes accumulate; FSDP's reduction
  averages the gradients over the `dp_size` ranks, i.e. the applied gradient is that of the mean
  over ranks of the accumulated losses.
  """
  rows_per_rank = B // dp_size
  rank_losses = []
  for r in range(dp_size):
    lo = r * rows_per_rank
    if dynamic_bsz_micro_rows is None:
      gradient_accumulation = rows_per_rank // micro_rows
      sizes = [micro_rows] * gradient_accumulation
    else:
      sizes = list(dynamic_bsz_micro_rows)
    assert sum(sizes) == rows_per_rank
    total = 0.0
    for n in sizes:
      sl = slice(lo, lo + n)
      scale = (n / rows_per_rank if dynamic_bsz_micro_rows is not None
               else 1.0 / gradient_accumulation)
      total += verl_dr_grpo_loss(log_prob[sl], old_log_prob[sl], advantages[sl], mask[sl]) * scale
      lo += n
    rank_losses.append(total)
  return np.mean(rank_losses)


def finite_difference_grad(f, x, h=1e-6):
  """Central differences of a float64 scalar function of an array."""
  x = np.asarray(x, np.float64)
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    e = np.zeros_like(x)
    e[idx] = h
    g[idx] = (f(x + e) - f(x - e)) / (2 * h)
  return g


# ------------------------------------------------------------------------------- data


def _data(seed=0):
  """Ragged mask with an empty row, log-ratios across every clip branch, finite padding."""
  rng = np.random.default_rng(seed)
  lengths = np.array([7, 0, 3, 5, 1, 6, 2, 7])
  mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float64)
  old = np.log(rng.uniform(0.05, 0.95, size=(B, T)))
  log_ratio = 0.5 * rng.normal(size=(B, T))
  log_ratio[0, :3] = [1.5, -0.6, 0.1]      # ratio 4.5 (beyond the dual clip), 0.55, 1.1
  log_ratio[3, :2] = [1.3, 0.5]
  logp = old + log_ratio
  adv = rng.normal(size=B)
  adv[0], adv[3] = -1.2, 0.8                # a negative advantage at ratio 4.5: dual clip acts
  # Padding holds ordinary finite numbers (verl multiplies by the mask, so it needs finite ones).
  logp = np.where(mask > 0, logp, -3.0)
  old = np.where(mask > 0, old, -1.0)
  return logp, old, adv, mask


def _rljax_loss(logp, old, adv, mask, **kw):
  """rljax's Dr. GRPO PPO loss with verl's clip settings; float32 in, float32 out."""
  out = rljax.ppo_clip_loss(logp, jnp.asarray(old, jnp.float32), jnp.asarray(adv, jnp.float32),
                            jnp.asarray(mask, jnp.float32), epsilon_low=CLIP_LOW,
                            epsilon_high=CLIP_HIGH, dual_clip=CLIP_C, aggregation=SUM_NORM, **kw)
  return out.loss


_rljax_value_and_grad = jax.jit(jax.value_and_grad(_rljax_loss))


# ------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("mode", rljax.AGGREGATION_MODES)
def test_verl_agg_loss_on_one_batch(mode):
  """rljax.aggregate equals verl's agg_loss on one batch; seq-mean-token-sum-norm times B."""
  rng = np.random.default_rng(1)
  _, _, _, mask = _data()
  values = rng.normal(size=(B, T))
  got = float(rljax.aggregate(jnp.asarray(values, jnp.float32), jnp.asarray(mask), mode))
  factor = B if mode == SUM_NORM else 1
  np.testing.assert_allclose(got * factor, verl_agg_loss(values, mask, mode), rtol=1e-5)


def test_verl_loss_scale_factor_is_max_tokens():
  """verl's `loss_scale_factor=L` is rljax's `max_tokens=L` (times B)."""
  rng = np.random.default_rng(2)
  _, _, _, mask = _data()
  values = rng.normal(size=(B, T))
  got = float(rljax.aggregate(jnp.asarray(values, jnp.float32), jnp.asarray(mask), SUM_NORM,
                              max_tokens=16))
  want = verl_agg_loss(values, mask, SUM_NORM, loss_scale_factor=16)
  np.testing.assert_allclose(got * B, want, rtol=1e-5)
  # verl ignores dp_size and global_batch_size in this mode (the constant is T, nothing else).
  np.testing.assert_allclose(
      verl_agg_loss(values, mask, SUM_NORM, dp_size=4, global_batch_size=99),
      verl_agg_loss(values, mask, SUM_NORM), rtol=0)


@pytest.mark.parametrize("recipe", ["times_B", "normalizer_1"])
def test_verl_dr_grpo_ppo_loss_value_and_gradient(recipe):
  """README 'Dr. GRPO constant': B * rljax's loss (or normalizer=1) is verl's pg_loss."""
  logp, old, adv, mask = _data()
  want = verl_dr_grpo_loss(logp, old, adv, mask)
  want_grad = finite_difference_grad(lambda lp: verl_dr_grpo_loss(lp, old, adv, mask), logp)
  lp32 = jnp.asarray(logp, jnp.float32)
  if recipe == "times_B":
    loss, grad = _rljax_value_and_grad(lp32, old, adv, mask)
    loss, grad = B * loss, B * grad
  else:
    loss, grad = _rljax_value_and_grad(lp32, old, adv, mask, normalizer=1.0)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4, atol=1e-6)
  # The data reach every branch: inside and outside the clip range, the dual clip, padding.
  ratio = np.exp(logp - old)
  valid = mask > 0
  assert np.any(valid & (ratio > CLIP_C) & (adv[:, None] < 0))
  assert np.any(want_grad[valid] == 0) and np.any(want_grad[valid] != 0)
  assert np.all(want_grad[~valid] == 0)


@pytest.mark.parametrize("dp_size,micro_rows", [(1, 8), (1, 2), (2, 2), (4, 1), (2, 4)])
def test_verl_actor_applies_micro_batch_size_times_rljax(dp_size, micro_rows):
  """Through dp_actor's 1/gradient_accumulation and the DP mean, verl's applied gradient is
  ppo_micro_batch_size_per_gpu times rljax's (B times only with one device, one micro-batch)."""
  logp, old, adv, mask = _data()
  f = lambda lp: verl_dp_actor_loss(lp, old, adv, mask, dp_size=dp_size, micro_rows=micro_rows)
  loss, grad = _rljax_value_and_grad(jnp.asarray(logp, jnp.float32), old, adv, mask)
  np.testing.assert_allclose(micro_rows * float(loss), f(logp), rtol=1e-5)
  np.testing.assert_allclose(micro_rows * np.asarray(grad), finite_difference_grad(f, logp),
                             rtol=1e-4, atol=1e-6)


def test_verl_actor_dynamic_batch_weights_rows_by_micro_batch_size():
  """With use_dynamic_bsz the scale is micro_rows / ppo_mini_batch_size per micro-batch, so
  verl weights each row by its micro-batch's size: no constant multiple of rljax's loss; the
  per-micro-batch `normalizer = B / micro_rows` reproduces it."""
  logp, old, adv, mask = _data()
  sizes = (1, 3)   # micro-batches of 1 and 3 rows on each of 2 ranks
  want = verl_dp_actor_loss(logp, old, adv, mask, dp_size=2, micro_rows=None,
                            dynamic_bsz_micro_rows=sizes)
  got, lo = 0.0, 0
  for _ in range(2):
    for n in sizes:
      sl = slice(lo, lo + n)
      got += float(_rljax_value_and_grad(jnp.asarray(logp[sl], jnp.float32), old[sl], adv[sl],
                                         mask[sl], normalizer=B / n)[0])
      lo += n
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # No constant multiple of rljax's whole-batch loss does it: the ratio depends on the data.
  ratio_per_seed = []
  for seed in (0, 1):
    lp, o, a, m = _data(seed)
    verl = verl_dp_actor_loss(lp, o, a, m, dp_size=2, micro_rows=None,
                              dynamic_bsz_micro_rows=sizes)
    ratio_per_seed.append(verl / float(_rljax_value_and_grad(jnp.asarray(lp, jnp.float32), o, a,
                                                             m)[0]))
  assert abs(ratio_per_seed[0] / ratio_per_seed[1] - 1) > 1e-2, ratio_per_seed
