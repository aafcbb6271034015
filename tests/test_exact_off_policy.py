"""Exact expected gradients of the clipped and importance-weighted losses on off-policy data.

Samples come from a behaviour policy μ that is far from the policy π being trained (token ratios
π/μ from 0.29 to 3.5, sequence ratios from 0.09 to 4), so every clip and cap is active on at
least a tenth of μ's mass. Both are variable-length tabular policies of tests/tabular.py (two
content tokens and EOS, at most T = 3 tokens, 15 sequences, ragged masks). The expectation
E_{y~μ}[∇_θ loss(y)] is an exact sum over the 15 sequences, one sequence per batch, and is
compared with each objective's gradient written out in NumPy from its definition, with the
per-token score functions ∇log π(y_t | y_{t-1}) of the float64 reference:

* PPO / GRPO token clip: -Σ_y μ(y) c(y) A(y) Σ_t 1[token t not clipped] ρ_t ∇log π_t, clipped
  meaning (A > 0, ρ_t > 1+ε_high) or (A < 0, ρ_t < 1-ε_low); dual clip also drops
  (A < 0, ρ_t > c).
* GSPO (``level='sequence'``): the same with the length-normalised sequence ratio s(y) on every
  token, the clip decided once per sequence.
* CISPO: -Σ_y μ c A Σ_t clip(ρ_t, 1-ε_low, 1+ε_high) ∇log π_t (no token loses its gradient),
  and with ``mask_clipped`` PPO's indicator on top.
* TOPR (the paper's ±1 rewards, whole-sequence ratio): -[Σ_{A≥0} μ(y) A ∇log π(y)
  + Σ_{A<0} min(μ(y), π(y)) A ∇log π(y)], the paper's equation with [ρ]_0^1 μ = min(μ, π).
* REINFORCE weighted by `truncated_is_weights`: TIS -Σ_y μ c A Σ_t min(ρ_t, C) ∇log π_t per token,
  -Σ_y min(π(y), C μ(y)) c A ∇log π(y) per sequence; MIS keeps ρ where ρ <= C and drops the rest,
  so at sequence level it is the on-policy gradient restricted to {y : π(y) <= C μ(y)}.

c(y) is the aggregation's per-row factor with one row per batch: 1 for ``seq-mean-token-sum``,
1/|y| for ``seq-mean-token-mean`` and ``token-mean``, 1/max_tokens for ``seq-mean-token-sum-norm``.
Untruncated sequence IS gives exactly the on-policy gradient ∇_θ E_π[c(y) A(y)] (checked against
autodiff of that sum); every clipped estimator is shown to differ from its unclipped version.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rljax
from tests import tabular

V, T = 2, 3
SEQS = tabular.ragged_sequences(V, T)
TOKENS = jnp.asarray(SEQS.tokens)
MASK = jnp.asarray(SEQS.mask)
N = SEQS.tokens.shape[0]
LENGTHS = SEQS.lengths.astype(np.float64)
THETA_PI = tabular.init_ragged_theta(2, V, T)
# A behaviour policy chosen so that every branch below (each side of each clip, each side of
# each cap) holds at least a tenth of μ's mass.
THETA_MU = tabular.init_ragged_theta(130, V, T)
EPS_LOW, EPS_HIGH, DUAL_CLIP, CAP = 0.2, 0.28, 2.0, 2.0


ADV = tabular.ragged_rewards(SEQS, V) - 1.2                        # both signs: 9 positive, 6 negative sequences
SIGNED = np.where(ADV > 0, 1.0, -1.0)         # TOPR's ±1 rewards, baseline 0

# ----------------------------------------------------------------------- NumPy reference

_LP_PI = tabular.np_token_logp(THETA_PI, SEQS.tokens, SEQS.mask)
_LP_MU = tabular.np_token_logp(THETA_MU, SEQS.tokens, SEQS.mask)
PI = np.exp(_LP_PI.sum(-1))
MU = np.exp(_LP_MU.sum(-1))
RHO_TOK = np.where(SEQS.mask > 0, np.exp(_LP_PI - _LP_MU), 0.0)      # [N, T]
RHO_SEQ = PI / MU                                                    # [N]
GSPO_S = RHO_SEQ ** (1.0 / LENGTHS)                                  # [N]
SCORES = tabular.np_token_scores(THETA_PI, SEQS.tokens, SEQS.mask)   # [N, T, P], under π
SEQ_SCORES = SCORES.sum(1)

MODES = rljax.AGGREGATION_MODES


def row_factor(mode):
  """c(y): the aggregation's weight on a row's token sum when the batch is that one row."""
  if mode == "seq-mean-token-sum":
    return np.ones(N)
  if mode == "seq-mean-token-sum-norm":
    return np.full(N, 1.0 / T)
  return 1.0 / LENGTHS                        # token-mean and seq-mean-token-mean


def token_weighted(mode, adv, token_weight, sample_prob=MU):
  """-Σ_y p(y) c(y) A(y) Σ_t w_t(y) ∇log π_t(y), the loss gradient of a per-token weight."""
  coef = sample_prob * row_factor(mode) * adv
  return -np.einsum("n,nt,ntp->p", coef, token_weight, SCORES)


def sequence_weighted(mode, adv, weight):
  """-Σ_y c(y) A(y) weight(y) ∇log π(y), weight(y) holding the sampling probability."""
  return -np.einsum("n,np->p", row_factor(mode) * adv * weight, SEQ_SCORES)


def ppo_active(adv, ratio, dual_clip=None):
  """Where PPO's surrogate keeps the ratio's gradient (broadcasting A over the tokens)."""
  a = adv if np.ndim(ratio) == 1 else adv[:, None]
  clipped = ((a > 0) & (ratio > 1 + EPS_HIGH)) | ((a < 0) & (ratio < 1 - EPS_LOW))
  if dual_clip is not None:
    clipped |= (a < 0) & (ratio > dual_clip)
  return ~clipped


def closed_form(name, mode):
  """E_{y~μ}[∇ loss] of estimator `name`, from the objective's definition (NumPy)."""
  tok, seq = RHO_TOK, RHO_SEQ
  if name == "ppo":
    return token_weighted(mode, ADV, ppo_active(ADV, tok) * tok)
  if name == "ppo_dual_clip":
    return token_weighted(mode, ADV, ppo_active(ADV, tok, DUAL_CLIP) * tok)
  if name in ("gspo", "gspo_paper_eps"):
    lo, hi = (0.2, 0.2) if name == "gspo" else (3e-4, 4e-4)
    clipped = ((ADV > 0) & (GSPO_S > 1 + hi)) | ((ADV < 0) & (GSPO_S < 1 - lo))
    return sequence_weighted(mode, ADV, MU * np.where(clipped, 0.0, GSPO_S))
  if name == "cispo":                          # no lower bound (the paper)
    return token_weighted(mode, ADV, np.minimum(tok, 1 + EPS_HIGH) * SEQS.mask)
  if name == "cispo_two_sided":
    return token_weighted(mode, ADV, np.clip(tok, 1 - EPS_LOW, 1 + EPS_HIGH) * SEQS.mask)
  if name == "cispo_mask_clipped":
    weight = np.clip(tok, 1 - EPS_LOW, 1 + EPS_HIGH) * ppo_active(ADV, tok) * SEQS.mask
    return token_weighted(mode, ADV, weight)
  if name == "topr":                           # the paper: positives μ, negatives min(μ, π)
    return sequence_weighted(mode, SIGNED, np.where(SIGNED >= 0, MU, np.minimum(MU, PI)))
  if name == "topr_token":                     # Trinity-RFT's token ratios
    weight = np.where(SIGNED[:, None] >= 0, 1.0, np.minimum(tok, 1.0)) * SEQS.mask
    return token_weighted(mode, SIGNED, weight)
  if name == "tis_token":
    return token_weighted(mode, ADV, np.minimum(tok, CAP) * SEQS.mask)
  if name == "mis_token":
    return token_weighted(mode, ADV, np.where(tok <= CAP, tok, 0.0) * SEQS.mask)
  if name == "tis_sequence":
    return sequence_weighted(mode, ADV, np.minimum(PI, CAP * MU))
  if name == "mis_sequence":
    return sequence_weighted(mode, ADV, np.where(seq <= CAP, PI, 0.0))
  raise ValueError(name)


def unclipped(name, mode):
  """The same estimator without its clip or cap: plain token, GSPO or sequence IS."""
  if name.startswith(("ppo", "cispo")):
    return token_weighted(mode, ADV, RHO_TOK)
  if name.startswith("gspo"):
    return sequence_weighted(mode, ADV, MU * GSPO_S)
  adv = SIGNED if name.startswith("topr") else ADV
  return sequence_weighted(mode, adv, PI)      # = -∇ E_π[c A], the on-policy gradient


def clipped_mass(name):
  """μ-mass of the tokens (or sequences) whose weight the clip or cap changes."""
  tok_mass = lambda sel: float((MU[:, None] * (sel & (SEQS.mask > 0))).sum()
                               / (MU[:, None] * SEQS.mask).sum())
  if name == "ppo":
    return tok_mass(~ppo_active(ADV, RHO_TOK))
  if name == "ppo_dual_clip":                  # the dual clip's own share
    return tok_mass((ADV[:, None] < 0) & (RHO_TOK > DUAL_CLIP))
  if name == "gspo":
    return float(MU[((ADV > 0) & (GSPO_S > 1.2)) | ((ADV < 0) & (GSPO_S < 0.8))].sum())
  if name == "gspo_paper_eps":
    return float(MU[np.abs(GSPO_S - 1) > 4e-4].sum())
  if name == "cispo":
    return tok_mass(RHO_TOK > 1 + EPS_HIGH)
  if name.startswith("cispo"):
    return tok_mass((RHO_TOK > 1 + EPS_HIGH) | (RHO_TOK < 1 - EPS_LOW))
  if name == "topr":
    return float(MU[(SIGNED < 0) & (RHO_SEQ > 1)].sum() + MU[SIGNED >= 0].sum())
  if name == "topr_token":
    return tok_mass((SIGNED[:, None] < 0) & (RHO_TOK > 1))
  if name.endswith("token"):
    return tok_mass(RHO_TOK > CAP)
  return float(MU[RHO_SEQ > CAP].sum())


# ----------------------------------------------------------------------- the library, enumerated


def _library_loss(name, mode, lp, mu_lp, i):
  """rljax's loss for estimator `name` on sequence i (a batch of one row)."""
  mask, adv = MASK[i][None], jnp.asarray(ADV, jnp.float32)[i][None]
  signed = jnp.asarray(SIGNED, jnp.float32)[i][None]
  kw = dict(aggregation=mode)
  if name == "ppo":
    return rljax.ppo_clip_loss(lp, mu_lp, adv, mask, epsilon_low=EPS_LOW,
                               epsilon_high=EPS_HIGH, **kw)
  if name == "ppo_dual_clip":
    return rljax.ppo_clip_loss(lp, mu_lp, adv, mask, epsilon_low=EPS_LOW,
                               epsilon_high=EPS_HIGH, dual_clip=DUAL_CLIP, **kw)
  if name == "gspo":
    return rljax.ppo_clip_loss(lp, mu_lp, adv, mask, level="sequence", epsilon_low=0.2,
                               epsilon_high=0.2, **kw)
  if name == "gspo_paper_eps":
    return rljax.ppo_clip_loss(lp, mu_lp, adv, mask, level="sequence", **kw)
  if name == "cispo":
    return rljax.cispo_loss(lp, mu_lp, adv, mask, epsilon_high=EPS_HIGH, **kw)
  if name in ("cispo_two_sided", "cispo_mask_clipped"):
    return rljax.cispo_loss(lp, mu_lp, adv, mask, epsilon_low=EPS_LOW, epsilon_high=EPS_HIGH,
                            mask_clipped=name == "cispo_mask_clipped", **kw)
  if name == "topr":
    return rljax.topr_loss(lp, mu_lp, signed, mask, **kw)
  if name == "topr_token":
    return rljax.topr_loss(lp, mu_lp, signed, mask, level="token", **kw)
  # REINFORCE with rollout-correction weights multiplied into the advantages, as the
  # estimator registry does for losses without `is_weights`; π_old is the current π (data).
  level = "token" if name.endswith("token") else "sequence"
  mode_is = "truncate" if name.startswith("tis") else "mask"
  cap = 1e6 if name == "is_sequence" else CAP
  w = rljax.truncated_is_weights(mu_lp, jax.lax.stop_gradient(lp), mask, cap=cap, level=level,
                                 mode=mode_is).weights
  return rljax.reinforce_loss(lp, adv[:, None] * w, mask, **kw)


@functools.lru_cache(maxsize=None)
def library_gradient(name, mode):
  """Σ_y μ(y) ∇_θ loss(θ; y) at θ = THETA_PI, by enumeration (float64 NumPy out)."""
  mu_all = tabular.token_logp(THETA_MU, TOKENS)

  def loss(th, i):
    lp = tabular.token_logp(th, TOKENS[i][None])
    return _library_loss(name, mode, lp, mu_all[i][None], i).loss

  fn = jax.jit(lambda th: tabular.expected_per_sequence_gradient(
      loss, th, TOKENS, jnp.asarray(MU, jnp.float32)))
  return np.asarray(fn(THETA_PI), np.float64).ravel()


ESTIMATORS = ("ppo", "ppo_dual_clip", "gspo", "gspo_paper_eps", "cispo", "cispo_two_sided",
              "cispo_mask_clipped", "topr", "topr_token", "tis_token", "mis_token",
              "tis_sequence", "mis_sequence")


def close(got, want, rtol=1e-4, atol=2e-6):
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=atol)


def rel_diff(a, b):
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_setting_is_far_off_policy():
  close(MU.sum(), 1.0, atol=1e-6)
  close(PI.sum(), 1.0, atol=1e-6)
  valid = SEQS.mask > 0
  # Ratios on both sides of every clip (1 ± ε), of the dual clip c and of the cap C.
  assert RHO_TOK[valid].min() < 0.5 and RHO_TOK[valid].max() > 1.5 * max(DUAL_CLIP, CAP)
  assert RHO_SEQ.min() < 0.1 and RHO_SEQ.max() > 1.5 * CAP
  assert 0 < (ADV < 0).sum() < N


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ESTIMATORS)
def test_expected_gradient_equals_closed_form(name, mode):
  close(library_gradient(name, mode), closed_form(name, mode))


@pytest.mark.parametrize("name", ESTIMATORS)
def test_the_clip_is_active_and_changes_the_gradient(name):
  # A tenth of μ's mass or more is clipped (or capped), and the expected gradient is not the
  # unclipped one (token IS, GSPO's unclipped s, or the exact sequence-IS policy gradient).
  mode = "seq-mean-token-sum"
  assert clipped_mass(name) > 0.1, clipped_mass(name)
  assert rel_diff(library_gradient(name, mode), unclipped(name, mode)) > 0.05


@pytest.mark.parametrize("mode", MODES)
def test_untruncated_sequence_is_is_the_on_policy_gradient(mode):
  # E_μ[ρ(y) c A ∇log π] = ∇ E_π[c A]: the one unbiased off-policy estimator here, against
  # autodiff of the exact on-policy sum.
  want = np.asarray(tabular.ragged_true_gradient(THETA_PI, SEQS, row_factor(mode) * ADV))
  close(library_gradient("is_sequence", mode), -want.ravel())
  close(unclipped("tis_sequence", mode), -want.ravel())


def test_dual_clip_only_changes_negative_advantage_tokens_above_c():
  mode = "seq-mean-token-sum"
  dual, plain = library_gradient("ppo_dual_clip", mode), library_gradient("ppo", mode)
  # The difference is exactly the removed (A < 0, ρ_t > c) terms.
  removed = (ADV[:, None] < 0) & (RHO_TOK > DUAL_CLIP) & (SEQS.mask > 0)
  close(dual - plain, -token_weighted(mode, ADV, removed * RHO_TOK), atol=5e-6)
  assert rel_diff(dual, plain) > 0.05


def test_topr_negatives_below_mu_get_their_on_policy_weight():
  # Paper §3: a negative with π(y) < μ(y) contributes π(y) A ∇log π(y) (its exact on-policy
  # term), one with π(y) >= μ(y) contributes μ(y) A ∇log π(y); positives always μ(y).
  mode = "seq-mean-token-sum"
  got = library_gradient("topr", mode)
  below = (SIGNED < 0) & (PI < MU)
  assert below.any() and ((SIGNED < 0) & ~below).any()
  want = -(np.einsum("n,np->p", np.where(below, PI, MU) * SIGNED, SEQ_SCORES))
  close(got, want)
