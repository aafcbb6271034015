"""Every estimator preset computes its paper's loss, and its distinctive mechanism acts.

Each name in `ESTIMATORS` (aliases included) runs exactly as the train step runs
it (`LossConfig(estimator=name)`, `compute_advantages(..., cfg.advantage_mode)`,
`cfg.spec(LossInputs(...), cfg.estimator_kwargs(T))`) on one fixed mixed batch. Its loss and its
gradient in `logp` are compared with a plain jnp transcription of the paper's loss whose
hyperparameters are written out here, never read from the registry, so a changed preset fails.
A second test reads each loss's metrics and gradient to check that the estimator's own mechanism
(clipping, tapering, token selection, masking, regulariser) is active on this batch.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rljax
from rljax.train import estimators as est_lib
from rljax.train import train_step as ts

G, T = 4, 5
# Groups: two mixed, one with a single failure, one all-wrong (zero variance), one single success.
REWARDS = np.array([1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0], np.float32)
LENGTHS = np.array([5, 3, 1, 4, 2, 5, 3, 1, 4, 2, 5, 3, 1, 4, 2, 5])
B = REWARDS.size
FLAT_ROWS = slice(8, 12)  # the all-wrong group
KEY = jax.random.key(14)


def _make_batch():
  """Ragged mask and log-probs whose ratios land inside and outside every preset's clip range."""
  rng = np.random.default_rng(14)
  mask = (np.arange(T)[None, :] < LENGTHS[:, None]).astype(np.float64)
  logp = -0.95 - rng.exponential(1.2, (B, T))  # a long tail of unlikely tokens, as in LLMs
  delta = rng.uniform(-0.45, 0.45, (B, T))  # log pi - log pi_old
  delta[0, 1] = np.log(1.25)  # A > 0 between GRPO's cap 1.2 and DAPO's clip-higher cap 1.28
  delta[3, 2] = np.log(2.3)  # A > 0 above CISPO's cap 1.28 and Clip-Cov's window [0, 2]
  for row in (1, 5, 10, 13):  # sequence ratio exp(1e-4): inside GSPO's (1 - 3e-4, 1 + 4e-4)
    valid = mask[row] > 0
    delta[row, valid] += 1e-4 - delta[row, valid].mean()
  old = logp - delta
  arrays = dict(mask=mask, logp=logp, old_logp=old,
                behavior_logp=np.minimum(old + rng.normal(0.0, 0.15, (B, T)), -1e-3),
                ref_logp=old - rng.uniform(0.05, 0.5, (B, T)))
  return {k: np.asarray(v, np.float32) for k, v in arrays.items()}


BATCH = _make_batch()
MASK = BATCH['mask']
VALID = MASK > 0
N = int(MASK.sum())
RHO = np.exp(BATCH['logp'].astype(np.float64) - BATCH['old_logp'])  # token ratio to old_logp


# --------------------------------------------------------------- advantages, from the papers


def _centred(r):
  """r - group mean (Dr. GRPO, REC, OPMD's mean baseline)."""
  g = np.asarray(r, np.float64).reshape(-1, G)
  return (g - g.mean(1, keepdims=True)).reshape(-1).astype(np.float32)


def _group_std(r):
  """GRPO: (r - mean) / (std + 1e-6), std with Bessel's correction as verl."""
  g = np.asarray(r, np.float64).reshape(-1, G)
  centred = g - g.mean(1, keepdims=True)
  return (centred / (g.std(1, ddof=1, keepdims=True) + 1e-6)).reshape(-1).astype(np.float32)


def _leave_one_out(r):
  """RLOO: r_i minus the mean of the other G - 1 rewards of the prompt."""
  g = np.asarray(r, np.float64).reshape(-1, G)
  return (g - (g.sum(1, keepdims=True) - g) / (G - 1)).reshape(-1).astype(np.float32)


def _tokens(a):
  return np.broadcast_to(np.asarray(a, np.float32)[:, None], (B, T))


# ------------------------------------------------------------------------------ aggregations


def _token_mean(per_token):
  return jnp.sum(per_token * MASK) / jnp.sum(MASK)


def _seq_mean_token_mean(per_token):
  return jnp.mean(jnp.sum(per_token * MASK, 1) / jnp.sum(MASK, 1))


def _seq_mean_token_sum(per_token):
  return jnp.mean(jnp.sum(per_token * MASK, 1))


def _over_budget(per_token):
  """Dr. GRPO: the token sum over the constant B * MAX_TOKENS (MAX_TOKENS = T here)."""
  return jnp.sum(per_token * MASK) / (B * T)


# ---------------------------------------------------------------------- the papers' losses


def _reinforce(logp):
  """RLOO: -(1/B) sum_i A_i log pi(y_i), the whole completion as one action."""
  return _seq_mean_token_sum(-_tokens(_leave_one_out(REWARDS)) * logp)


def _surrogate(logp, adv, eps_low, eps_high):
  """PPO's token objective min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)."""
  a, rho = _tokens(adv), jnp.exp(logp - BATCH['old_logp'])
  return jnp.minimum(rho * a, jnp.clip(rho, 1 - eps_low, 1 + eps_high) * a)


def _ppo_clip(eps_low, eps_high, adv, agg):
  """The PPO / GRPO / Dr. GRPO / DAPO loss: the negated surrogate, aggregated by `agg`."""
  return lambda logp: agg(-_surrogate(logp, adv, eps_low, eps_high))


def _gspo(logp):
  """GSPO: -(1/G) sum_i min(s_i A_i, clip(s_i, 1 - 3e-4, 1 + 4e-4) A_i), s_i = geomean ratio."""
  a = _group_std(REWARDS)
  s = jnp.exp(jnp.sum(MASK * (logp - BATCH['old_logp']), 1) / LENGTHS)
  return -jnp.mean(jnp.minimum(s * a, jnp.clip(s, 1 - 3e-4, 1 + 4e-4) * a))


def _cispo(logp):
  """CISPO: -sg(min(rho, 1 + 0.28)) A log pi, no lower bound, over all tokens of the batch."""
  w = jax.lax.stop_gradient(jnp.minimum(jnp.exp(logp - BATCH['old_logp']), 1.28))
  return _token_mean(-w * _tokens(_group_std(REWARDS)) * logp)


def _topr(logp):
  """TOPR: R = +-1, positives weight 1, negatives sg([pi(y)/mu(y)]_0^1), loss / |y|."""
  r = 2.0 * REWARDS - 1.0
  rho = jnp.exp(jnp.sum(MASK * (logp - BATCH['behavior_logp']), 1))
  w = jnp.where(r >= 0, 1.0, jax.lax.stop_gradient(jnp.clip(rho, 0.0, 1.0)))
  return _seq_mean_token_mean(-(w * r)[:, None] * logp)


def _copg(logp, pairs=lambda: itertools.combinations(range(G), 2), beta=0.1):
  """CoPG: mean over pairs of (R_b(y) - R_b(y'))^2 / (4 beta), R_b = R - beta log(pi / pi_ref)."""
  reg = REWARDS - beta * jnp.sum(MASK * (logp - BATCH['ref_logp']), 1)
  per_group = []
  for start in range(0, B, G):
    terms = [(reg[start + i] - reg[start + j]) ** 2 / (4 * beta) for i, j in pairs()]
    per_group.append(sum(terms) / len(terms))
  return sum(per_group) / len(per_group)


def _opmd(logp, tau=1.0):
  """OPMD: (1/K) sum_i [-(r_i - mean r) log pi(y_i) + tau/2 (log pi(y_i) - log pi_old(y_i))^2]."""
  d = jnp.sum(MASK * (logp - BATCH['old_logp']), 1)
  return jnp.mean(-_centred(REWARDS) * jnp.sum(MASK * logp, 1) + tau / 2 * d ** 2)


def _asymre(logp, shift=0.1):
  """AsymRE: -(r - (mean r - delta)) log pi, delta = 0.1, token-mean."""
  return _token_mean(-_tokens(_centred(REWARDS) + shift) * logp)


def _rec_keep(eps=0.2):
  """REC-OneSide: [A >= 0, rho <= 1 + eps] or [A <= 0, rho >= 1 - eps] (PPO's gradient region)."""
  a = _tokens(_centred(REWARDS))
  return ((a >= 0) & (RHO <= 1 + eps)) | ((a <= 0) & (RHO >= 1 - eps))


def _rec(logp):
  """REC-OneSide-NoIS: -M A log pi with no std, token-mean; masked tokens keep their place."""
  return _token_mean(jnp.where(_rec_keep(), -_tokens(_centred(REWARDS)) * logp, 0.0))


def _covariance():
  """Cov_i = (log pi_i - mean log pi)(A_i - mean A) over the valid tokens of the batch."""
  lp, a = BATCH['logp'].astype(np.float64), _tokens(_group_std(REWARDS)).astype(np.float64)
  lp_mean, a_mean = lp[VALID].mean(), a[VALID].mean()
  return np.where(VALID, (lp - lp_mean) * (a - a_mean), 0.0)


def _clip_cov_candidates():
  """Valid tokens PPO-clip in [0, 2] keeps, strictly inside the band (1, 5)."""
  a, cov = _tokens(_group_std(REWARDS)), _covariance()
  clipped = ((a > 0) & (RHO > 2.0)) | ((a < 0) & (RHO < 0.0))
  return VALID & ~clipped & (cov > 1.0) & (cov < 5.0)


def _clip_cov_selected(key=KEY):
  """The draw under `key`, checked to be max(floor(2e-4 N), 1) tokens of the candidate band."""
  sel = np.asarray(rljax.clip_cov_selection(
      BATCH['logp'], BATCH['old_logp'], _group_std(REWARDS), MASK, key, clip_ratio=2e-4,
      cov_lower=1.0, cov_upper=5.0, epsilon_low=1.0, epsilon_high=1.0))
  assert sel.sum() == max(int(2e-4 * N), 1)
  assert not np.any(sel & ~_clip_cov_candidates())
  return sel


def _clip_cov(logp):
  """Clip-Cov: PPO-clip in [0, 2], token-mean, with the drawn tokens' loss detached (0)."""
  per_token = -_surrogate(logp, _group_std(REWARDS), 1.0, 1.0)
  return _token_mean(jnp.where(_clip_cov_selected(), 0.0, per_token))


def _kl_cov_selected():
  """The max(floor(2e-3 N), 1) valid tokens of largest Cov_i."""
  k = max(int(2e-3 * N), 1)
  flat = np.where(VALID, _covariance(), -np.inf).reshape(-1)
  sel = np.zeros(B * T, bool)
  sel[np.argsort(-flat, kind='stable')[:k]] = True
  return sel.reshape(B, T)


def _kl_cov(logp):
  """KL-Cov: -A rho + 1.0 |log pi - log pi_old| on the selected tokens, no clipping, token-mean."""
  d = logp - BATCH['old_logp']
  per_token = -_tokens(_group_std(REWARDS)) * jnp.exp(d)
  return _token_mean(per_token + jnp.where(_kl_cov_selected(), jnp.abs(d), 0.0))


_GRPO = _ppo_clip(0.2, 0.2, _group_std(REWARDS), _token_mean)
PAPER_LOSSES = {
    # The GRPO paper averages per sequence (seq-mean-token-mean); the preset keeps verl's and
    # TRL's token-mean, which is also PPO's mean over timesteps.
    'grpo': _GRPO, 'ppo': _GRPO, 'reinforce': _reinforce,
    'dr_grpo': _ppo_clip(0.2, 0.2, _centred(REWARDS), _over_budget),
    'dapo': _ppo_clip(0.2, 0.28, _group_std(REWARDS), _token_mean),
    'gspo': _gspo, 'cispo': _cispo, 'topr': _topr, 'copg': _copg, 'opmd': _opmd,
    'asymre': _asymre, 'rec': _rec, 'clip_cov': _clip_cov, 'kl_cov': _kl_cov,
}


# ------------------------------------------------------------------------ mechanism checks


def _clipped_at(eps_low, eps_high, adv):
  """PPO's zero-gradient tokens: A < 0 below 1 - eps_low, A > 0 above 1 + eps_high."""
  a = _tokens(adv)
  return VALID & (((a < 0) & (RHO < 1 - eps_low)) | ((a > 0) & (RHO > 1 + eps_high)))


def _check_reinforce(value, grad, metrics):
  # Leave-one-out, not the group mean (G / (G - 1) apart on mixed groups): -B dL/dlogp = A_i.
  loo = _leave_one_out(REWARDS)
  assert not np.allclose(loo, _centred(REWARDS))
  np.testing.assert_allclose(-B * grad[VALID], _tokens(loo)[VALID], rtol=1e-5, atol=1e-7)


def _check_grpo(value, grad, metrics):
  assert 0 < metrics['clip_frac'] < 1
  assert metrics['clip_frac_low'] > 0 and metrics['clip_frac_high'] > 0
  np.testing.assert_allclose(metrics['clip_frac'],
                             _clipped_at(0.2, 0.2, _group_std(REWARDS)).sum() / N, rtol=1e-6)
  assert np.all(grad[FLAT_ROWS] == 0)  # std-normalised: a group with no spread has no signal


def _check_dapo(value, grad, metrics):
  # Clip-higher: the A > 0 token at ratio 1.25 keeps its gradient under DAPO, not under GRPO.
  assert metrics['clip_frac'] > 0
  assert metrics['clip_frac_high'] < _preset('grpo')[2]['clip_frac_high']
  assert grad[0, 1] != 0 and _preset('grpo')[1][0, 1] == 0


def _check_dr_grpo(value, grad, metrics):
  # The normaliser is the constant B * T whatever the row's length: -dL/dlogp = A rho / (B T).
  assert metrics['clip_frac'] > 0
  a = _tokens(_centred(REWARDS))
  free = VALID & ~_clipped_at(0.2, 0.2, _centred(REWARDS)) & (a != 0)
  assert len(set(LENGTHS[np.nonzero(free)[0]])) == T
  np.testing.assert_allclose(-grad[free] / (a * RHO)[free], 1.0 / (B * T), rtol=1e-5)


def _check_gspo(value, grad, metrics):
  assert 0 < metrics['seq_clip_frac'] < 1
  silent = np.all(grad == 0, axis=1) & (_group_std(REWARDS) != 0)
  assert np.any(silent)  # whole sequences lose their gradient at the sequence-level clip


def _check_cispo(value, grad, metrics):
  # The weight is capped at 1.28 (the A > 0 token at ratio 2.3), yet no token loses its gradient.
  assert metrics['weight_clip_frac'] > 0
  a = _tokens(_group_std(REWARDS))
  assert np.all(grad[VALID & (a != 0)] != 0)
  np.testing.assert_allclose(grad[3, 2], -1.28 * a[3, 2] / N, rtol=1e-5)


def _check_topr(value, grad, metrics):
  assert metrics['negative_frac'] > 0
  assert metrics['weight_mean'] < 1  # some negative is tapered by its ratio below 1
  assert metrics['capped_frac'] > 0  # some negative's ratio above 1 is capped at weight 1
  assert np.all(grad[FLAT_ROWS][VALID[FLAT_ROWS]] != 0)  # +-1 rewards: all-wrong still pushes


def _check_copg(value, grad, metrics):
  logp = jnp.asarray(BATCH['logp'])
  adjacent = lambda: ((i, i + 1) for i in range(G - 1))
  assert abs(value - float(_copg(logp, pairs=adjacent))) > 1e-3  # all 6 pairs, not 3
  assert metrics['regularized_reward_var'] > 0 and metrics['kl_seq'] != 0


def _check_opmd(value, grad, metrics):
  d = np.sum(MASK * np.log(RHO), 1)
  assert metrics['regularizer'] > 0
  np.testing.assert_allclose(metrics['regularizer'], np.mean(0.5 * d ** 2), rtol=1e-5)


def _check_asymre(value, grad, metrics):
  # The baseline is the mean lowered by 0.1: the all-wrong group has A = 0.1, not 0.
  flat = grad[FLAT_ROWS][VALID[FLAT_ROWS]]
  np.testing.assert_allclose(flat, -0.1 / N, rtol=1e-5)


def _check_rec(value, grad, metrics):
  keep, a = _rec_keep(), _tokens(_centred(REWARDS))
  assert 0 < metrics['masked_frac'] < 1
  np.testing.assert_allclose(metrics['masked_frac'], (VALID & ~keep).sum() / N, rtol=1e-6)
  assert np.all(grad[VALID & ~keep] == 0) and np.all(grad[VALID & keep & (a != 0)] != 0)


def _check_clip_cov(value, grad, metrics):
  sel = _clip_cov_selected()
  assert metrics['num_selected'] == 1 and metrics['clip_frac'] > 0
  assert metrics['num_candidates'] == _clip_cov_candidates().sum()
  assert np.all(grad[sel] == 0) and np.all(_preset('grpo')[1][sel] != 0)


def _check_kl_cov(value, grad, metrics):
  sel = _kl_cov_selected()
  assert metrics['num_selected'] == sel.sum() == 1
  d = np.log(RHO)
  np.testing.assert_allclose(metrics['kl_cov_abs_log_ratio'], np.abs(d[sel]).sum(), rtol=1e-5)
  want = (-_tokens(_group_std(REWARDS)) * RHO + np.sign(d))[sel] / N
  np.testing.assert_allclose(grad[sel], want, rtol=1e-5)


MECHANISMS = {
    'reinforce': _check_reinforce, 'grpo': _check_grpo, 'ppo': _check_grpo,
    'dr_grpo': _check_dr_grpo, 'dapo': _check_dapo, 'gspo': _check_gspo, 'cispo': _check_cispo,
    'topr': _check_topr, 'copg': _check_copg, 'opmd': _check_opmd, 'asymre': _check_asymre,
    'rec': _check_rec, 'clip_cov': _check_clip_cov, 'kl_cov': _check_kl_cov,
}


# ------------------------------------------------------------------- the preset, as trained


@functools.lru_cache(maxsize=None)
def _preset(name):
  """(loss, d loss / d logp, metrics) of the preset, built as `train_step._make_loss_fn` does."""
  cfg = ts.LossConfig(estimator=name)
  rewards = jnp.asarray(REWARDS)
  adv = est_lib.compute_advantages(rewards, G, cfg.advantage_mode)
  kwargs = cfg.estimator_kwargs(T)

  def loss(logp):
    x = est_lib.LossInputs(
        logp=logp, old_logp=jnp.asarray(BATCH['old_logp']),
        behavior_logp=jnp.asarray(BATCH['behavior_logp']), ref_logp=jnp.asarray(BATCH['ref_logp']),
        advantages=adv, rewards=rewards, mask=jnp.asarray(MASK), key=KEY, group_size=G)
    out = cfg.spec(x, kwargs)
    return out.loss, out.metrics

  (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(BATCH['logp']))
  return float(value), np.asarray(grad), {k: float(v) for k, v in metrics.items()}


def test_every_preset_has_a_paper_loss_and_a_mechanism_check():
  assert set(PAPER_LOSSES) == set(est_lib.ESTIMATORS) == set(MECHANISMS)


def test_the_batch_straddles_every_range():
  """The fixture itself: ragged, mixed and flat groups, ratios on both sides of every bound."""
  assert set(LENGTHS) == set(range(1, T + 1))
  groups = REWARDS.reshape(-1, G)
  spread = groups.max(1) > groups.min(1)
  assert spread.sum() >= 2 and (~spread).sum() >= 1
  rho = RHO[VALID]
  assert np.any((rho > 0.8) & (rho < 1.2)) and np.any(rho < 0.8) and np.any(rho > 2.0)
  assert np.any((rho > 1.2) & (rho < 1.28))
  s = np.exp(np.sum(MASK * np.log(RHO), 1) / LENGTHS)
  assert np.any((s > 1 - 3e-4) & (s < 1 + 4e-4))
  assert np.any(s < 1 - 3e-4) and np.any(s > 1 + 4e-4)
  traj = np.sum(MASK * (BATCH['logp'] - BATCH['behavior_logp']), 1)[REWARDS == 0]
  assert np.any(traj < 0) and np.any(traj > 0)  # TOPR negatives both tapered and capped
  assert np.all(np.abs(BATCH['logp'] - BATCH['ref_logp'])[VALID] > 0)
  assert all(np.all(BATCH[k] < 0) for k in ('logp', 'old_logp', 'behavior_logp', 'ref_logp'))
  assert _clip_cov_candidates().sum() >= 2


@pytest.mark.parametrize('name', sorted(est_lib.ESTIMATORS))
def test_preset_computes_its_papers_loss(name):
  """Loss value and gradient in logp equal the paper's loss with the paper's hyperparameters."""
  value, grad, _ = _preset(name)
  want, want_grad = jax.value_and_grad(PAPER_LOSSES[name])(jnp.asarray(BATCH['logp']))
  np.testing.assert_allclose(value, float(want), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grad, np.asarray(want_grad), rtol=1e-5, atol=1e-7)
  assert np.all(grad[~VALID] == 0)


@pytest.mark.parametrize(
    'name', sorted(n for n, s in est_lib.ESTIMATORS.items() if s.alias_of is not None))
def test_alias_computes_its_targets_loss(name):
  value, grad, _ = _preset(name)
  target_value, target_grad, _ = _preset(est_lib.ESTIMATORS[name].alias_of)
  assert value == target_value
  np.testing.assert_array_equal(grad, target_grad)


@pytest.mark.parametrize('name', sorted(est_lib.ESTIMATORS))
def test_preset_mechanism_is_active(name):
  """The mechanism that sets the estimator apart acts on this batch (metrics and gradient)."""
  MECHANISMS[name](*_preset(name))


def test_clip_cov_draws_at_random_from_the_covariance_band():
  """Every key's draw lies in the paper's band; the draws differ with the key (uniform choice)."""
  drawn = sum(_clip_cov_selected(k).astype(int) for k in jax.random.split(KEY, 16))
  assert np.count_nonzero(drawn) >= 2
