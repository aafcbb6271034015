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

Further down, with their own commits: GSPO as TRL's ``importance_sampling_level='sequence'``
(per ``loss_type``) and verl's ``gspo``; rollout IS weights as verl's
``compute_rollout_correction_weights`` and tunix's ``sampler_is='token'``; AsymRE as
Trinity-RFT's ``asymre`` preset and its REC ``forward-kl`` regulariser.
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


# --------------------------------------------------- GSPO: TRL and verl, transcribed in NumPy
#
# TRL is huggingface/trl at commit f2cd57710ae345ea6428ae95363267fcf38a3dc8 (2026-07-24),
# ``trl/trainer/grpo_trainer.py``, ``GRPOTrainer._compute_loss`` with
# ``importance_sampling_level='sequence'``: the log-weight is the masked mean of the token
# log-ratios, shape (B, 1), differentiated through (no stop-gradient, no clamp); ``epsilon`` and
# ``epsilon_high`` default to 0.2 (``grpo_config.py``); the loss types aggregate as below (one
# process, one accumulation step: ``num_items_in_batch`` is the batch's token count).


def trl_gspo_loss(log_prob, old_log_prob, advantages, mask, loss_type, epsilon=0.2,
                  epsilon_high=0.2, max_completion_length=T):
  """grpo_trainer.py, GRPOTrainer._compute_loss, importance_sampling_level='sequence'."""
  log_ratio = np.asarray(log_prob, np.float64) - old_log_prob
  log_importance_weights = (log_ratio * mask).sum(-1) / np.maximum(mask.sum(-1), 1.0)
  coef_1 = np.exp(log_importance_weights)[:, None]
  coef_2 = np.clip(coef_1, 1 - epsilon, 1 + epsilon_high)
  adv = np.asarray(advantages, np.float64)[:, None]
  per_token_loss = -np.minimum(coef_1 * adv, coef_2 * adv)
  if loss_type == "grpo":
    return ((per_token_loss * mask).sum(-1) / np.maximum(mask.sum(-1), 1.0)).mean()
  if loss_type == "dapo":
    return (per_token_loss * mask).sum() / max(mask.sum(), 1.0)
  if loss_type == "dr_grpo":
    return (per_token_loss * mask).sum() / (mask.shape[0] * max_completion_length)
  raise ValueError(loss_type)


def verl_gspo_loss(log_prob, old_log_prob, advantages, mask, detached_log_prob,
                   clip_ratio_low=0.2, clip_ratio_high=0.2):
  """verl/trainer/ppo/core_algos.py, compute_policy_loss_gspo (verl commit above).

  `detached_log_prob` stands for every ``.detach()`` of the torch code: the sequence log-ratio
  and ``log_prob.detach()`` are computed from it, so central differences in `log_prob` at
  ``log_prob == detached_log_prob`` give the gradient autograd takes through verl's
  stop-gradient construction.
  """
  log_prob = np.asarray(log_prob, np.float64)
  seq_lengths = np.maximum(mask.sum(-1), 1)
  negative_approx_kl_seq = ((detached_log_prob - old_log_prob) * mask).sum(-1) / seq_lengths
  log_seq_importance_ratio = log_prob - detached_log_prob + negative_approx_kl_seq[:, None]
  seq_importance_ratio = np.exp(np.minimum(log_seq_importance_ratio, 10.0))
  adv = np.asarray(advantages, np.float64)[:, None] * mask    # verl's [B, T] advantages
  pg_losses1 = -adv * seq_importance_ratio
  pg_losses2 = -adv * np.clip(seq_importance_ratio, 1 - clip_ratio_low, 1 + clip_ratio_high)
  pg_losses = np.maximum(pg_losses1, pg_losses2)
  return verl_agg_loss(pg_losses, mask, "seq-mean-token-mean")   # forced by verl


_gspo_value_and_grad = jax.jit(
    jax.value_and_grad(lambda lp, old, adv, mask, **kw: rljax.ppo_clip_loss(
        lp, old, adv, mask, level="sequence", epsilon_low=0.2, epsilon_high=0.2, **kw).loss),
    static_argnames=("aggregation", "clamp", "max_tokens"))


def _gspo_data():
  logp, old, adv, mask = _data(3)
  seq = ((logp - old) * mask).sum(-1) / np.maximum(mask.sum(-1), 1)
  # Rows inside and outside the 0.2 window, with both signs of advantage.
  assert np.any(np.abs(seq) < 0.2) and np.any(seq > 0.2) and np.any(seq < -0.2)
  return logp, old, adv, mask


@pytest.mark.parametrize("loss_type,kw", [
    ("dapo", dict(aggregation="token-mean", clamp=None)),
    ("grpo", dict(aggregation="seq-mean-token-mean", clamp=None)),
    ("dr_grpo", dict(aggregation=SUM_NORM, clamp=None, max_tokens=T)),
])
def test_trl_sequence_level_equals_rljax_gspo_token_value_and_gradient(loss_type, kw):
  """TRL's GSPO (gradient through the sequence mean) and rljax's stop-gradient GSPO-token have
  the same value and gradient under each TRL aggregation, with sequence-constant advantages."""
  logp, old, adv, mask = _gspo_data()
  want = trl_gspo_loss(logp, old, adv, mask, loss_type)
  want_grad = finite_difference_grad(lambda lp: trl_gspo_loss(lp, old, adv, mask, loss_type),
                                     logp)
  lp32 = jnp.asarray(logp, jnp.float32)
  loss, grad = _gspo_value_and_grad(lp32, old, adv, mask, **kw)
  scale = 1.0
  if loss_type == "grpo":   # TRL counts the empty row in its mean over sequences
    scale = (mask.sum(-1) > 0).sum() / B
  np.testing.assert_allclose(float(loss) * scale, want, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad) * scale, want_grad, rtol=1e-4, atol=1e-6)
  assert np.any(want_grad[mask > 0] == 0) and np.any(want_grad[mask > 0] != 0)
  if loss_type == "grpo":   # normalizer=B counts every row, as TRL does
    loss_b, _ = _gspo_value_and_grad(lp32, old, adv, mask, normalizer=float(B), **kw)
    np.testing.assert_allclose(float(loss_b), want, rtol=1e-5)


def test_trl_default_gspo_needs_token_mean_not_only_epsilons():
  """TRL's default loss_type='dapo' is a token mean: ε = 0.2 alone (rljax's sequence-level
  default aggregation, seq-mean-token-mean) gives a different loss on ragged rows."""
  logp, old, adv, mask = _gspo_data()
  loss, _ = _gspo_value_and_grad(jnp.asarray(logp, jnp.float32), old, adv, mask)
  assert abs(float(loss) - trl_gspo_loss(logp, old, adv, mask, "dapo")) > 1e-2


def test_verl_gspo_with_its_default_epsilons_value_and_gradient():
  """verl's gspo with clip_ratio 0.2 (its default) is rljax level='sequence' with
  epsilon_low=epsilon_high=0.2 and the sequence-level default aggregation."""
  logp, old, adv, mask = _gspo_data()
  want = verl_gspo_loss(logp, old, adv, mask, logp)
  want_grad = finite_difference_grad(lambda lp: verl_gspo_loss(lp, old, adv, mask, logp), logp)
  loss, grad = _gspo_value_and_grad(jnp.asarray(logp, jnp.float32), old, adv, mask)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4, atol=1e-6)


# ------------------------------------------ rollout IS weights: verl and tunix, in NumPy
#
# tunix is google/tunix at commit c7d8950f12a9c55a976bf2e1a0d8b447d71c20b3 (2026-08-21).


def verl_rollout_is_weights(old_log_prob, rollout_log_prob, mask, rollout_is,
                            rollout_is_threshold=2.0):
  """verl/trainer/ppo/rollout_corr_helper.py, compute_rollout_correction_weights
  (rollout_is_batch_normalize=False): SAFETY_BOUND 20 on the token log-ratio ('token') or on
  the summed log-ratio ('sequence'), times the mask, truncated from above."""
  log_ratio = np.asarray(old_log_prob, np.float64) - rollout_log_prob
  if rollout_is == "token":
    w = np.exp(np.clip(log_ratio, -20.0, 20.0))
  else:
    log_ratio_sum = (log_ratio * mask).sum(-1, keepdims=True)
    w = np.broadcast_to(np.exp(np.clip(log_ratio_sum, -20.0, 20.0)), log_ratio.shape)
  return np.minimum(w * mask, rollout_is_threshold)


def tunix_sampler_is_weights(trainer_logps, rollout_logps, mask, threshold=2.0):
  """tunix/rl/agentic/agentic_grpo_learner.py, _sampler_trainer_agreement with
  sampler_is='token' (GRPOConfig.sampler_is_threshold = 2.0)."""
  log_ratio = np.clip(np.asarray(trainer_logps, np.float64) - rollout_logps, -20.0, 20.0)
  return np.minimum(np.exp(log_ratio), threshold) * mask


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_rollout_is_weights_equal_verl_and_tunix(level):
  """README row 'rollout IS': cap=2.0 (truncate) is verl's rollout_is at both levels and
  tunix's token sampler_is."""
  rng = np.random.default_rng(5)
  _, old, _, mask = _data(5)
  mu = old + 0.6 * rng.normal(size=old.shape)
  w, _ = rljax.truncated_is_weights(jnp.asarray(mu, jnp.float32), jnp.asarray(old, jnp.float32),
                                    mask, level=level, cap=2.0)
  want = verl_rollout_is_weights(old, mu, mask, level)
  assert np.any((want > 0) & (want < 2.0)) and np.any(want == 2.0)
  np.testing.assert_allclose(np.asarray(w), want, rtol=1e-5)
  if level == "token":
    np.testing.assert_allclose(np.asarray(w), tunix_sampler_is_weights(old, mu, mask), rtol=1e-5)


# --------------------------------------------- AsymRE: Trinity-RFT, transcribed in NumPy
#
# Trinity-RFT files as read from modelscope/Trinity-RFT: ``trinity/algorithm/algorithm.py``
# ``AsymREAlgorithm.default_config`` (policy_loss_fn 'opmd', advantage_fn 'asymre');
# ``advantage_fn/asymre_advantage.py`` ``ASYMREGroupAdvantage`` (commit d4baca61,
# baseline_shift -0.1, a group of one gets baseline 0); ``policy_loss_fn/opmd_policy_loss.py``
# ``OPMDPolicyLossFn`` (commit 51d229f5, masked mean divided by 1 + tau, tau 1.0);
# ``advantage_fn/rec_advantage.py`` ``RECGroupedAdvantage`` (commit d4baca61, std_normalize
# False, drop None); agentscope-ai/Trinity-RFT ``policy_loss_fn/rec_policy_loss.py``
# ``RECPolicyLossFn`` (commit 1d7fae4a, clip_mode 'none', weight 'none',
# regularizer 'forward-kl'); ``trinity/algorithm/utils.py`` ``masked_mean`` (+1e-8).


def _trinity_masked_mean(values, mask):
  return (values * mask).sum() / (mask.sum() + 1e-8)


def trinity_asymre_advantages(rewards, group_size, baseline_shift=-0.1):
  out = []
  for group in np.asarray(rewards, np.float64).reshape(-1, group_size):
    baseline = 0.0 if group_size == 1 else group.mean() + baseline_shift
    out.append(group - baseline)
  return np.concatenate(out)


def trinity_opmd_policy_loss(logprob, advantages, mask, tau=1.0):
  pg_losses = -np.asarray(advantages, np.float64)[:, None] * mask * logprob
  return _trinity_masked_mean(pg_losses, mask) / (1.0 + tau)


def trinity_rec_forward_kl_loss(logprob, rewards, mask, group_size, regularizer_coef):
  adv = np.concatenate([g - g.mean() for g in
                        np.asarray(rewards, np.float64).reshape(-1, group_size)])
  pg_losses = -adv[:, None] * mask * logprob
  pg_losses = pg_losses - regularizer_coef * logprob
  return _trinity_masked_mean(pg_losses, mask)


@pytest.mark.parametrize("group_size", [2, 4])
def test_trinity_asymre_preset_and_rec_forward_kl(group_size):
  """asymre_loss(shift=0.1, token-mean) is twice Trinity's asymre preset (opmd loss over the
  asymre advantage) and equals Trinity's REC 'forward-kl' regulariser with coefficient 0.1."""
  logp, _, _, mask = _data(6)
  rewards = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5, 2.0])[:B]
  lp = np.asarray(logp, np.float64)
  f_preset = lambda x: trinity_opmd_policy_loss(
      x, trinity_asymre_advantages(rewards, group_size), mask)
  f_rec = lambda x: trinity_rec_forward_kl_loss(x, rewards, mask, group_size, 0.1)
  loss, grad = jax.value_and_grad(lambda x: rljax.asymre_loss(
      x, jnp.asarray(rewards, jnp.float32), mask, group_size, shift=0.1).loss)(
          jnp.asarray(logp, jnp.float32))
  np.testing.assert_allclose(0.5 * float(loss), f_preset(lp), rtol=1e-5)
  np.testing.assert_allclose(0.5 * np.asarray(grad), finite_difference_grad(f_preset, lp),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(loss), f_rec(lp), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), finite_difference_grad(f_rec, lp), rtol=1e-4,
                             atol=1e-6)
