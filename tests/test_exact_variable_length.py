"""Exact bias of REINFORCE per aggregation mode when sequence lengths vary.

The policy is the variable-length tabular reference of tests/tabular.py: two content tokens and
an EOS token, at most T = 3 tokens, so 15 sequences of lengths 1, 2 and 3 with ragged masks, and
a reward that depends on the content and on the length. Every expectation is an exact sum: over
the 15 sequences, or over all 15**B ordered batches of B i.i.d. sequences for the batch-level
normalisers and the group baselines (one group of G = B completions per batch).

Two objectives: the sequence-level J = E[R(y)] and the length-normalised J_len = E[R(y)/|y|].
Their gradients (the policy-gradient theorem, Σ_y π(y) f(y) ∇log π(y) with the score functions
of the NumPy float64 reference) are computed without JAX, and so is the expected gradient of
each estimator (plain enumeration of the batches in NumPy). Losses are minimised, so "unbiased
for c·J" means E[∇ loss] = -c ∇J exactly.

What the enumeration shows (the table printed by `python -m tests.test_exact_variable_length`):

* ``seq-mean-token-sum`` is unbiased for ∇J with no baseline, a constant baseline or RLOO; the
  group-mean baseline gives (G-1)/G ∇J. It is biased for J_len.
* ``seq-mean-token-sum-norm`` (constant ``max_tokens`` M) is the same divided by M.
* ``seq-mean-token-mean`` is unbiased for ∇J_len only without a baseline (A = R). A constant
  baseline b gives ∇J_len - b ∇E[1/|y|], RLOO gives ∇J_len - J ∇E[1/|y|] and the group mean
  (G-1)/G times that: biased for both objectives, by a term that favours longer sequences
  when b (or J) > 0.
* ``token-mean`` over one row is ``seq-mean-token-mean``. Over B >= 2 rows its normaliser
  Σ_i |y_i| is random and correlated with the sample, so it is biased for both objectives at
  every finite B, with or without a baseline; the bias relative to ∇J shrinks as B grows (to
  ∇J / E[|y|] in the limit).
"""

import functools
import itertools

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
THETA = tabular.init_ragged_theta(2, V, T)   # P(|y| = 1, 2, 3) = 0.31, 0.33, 0.36
BASELINE = 1.0                               # a constant baseline (E[R] is about 1.22)


REWARDS = tabular.ragged_rewards(SEQS, V)   # 2 + #zeros - |y|/2 - 1 if truncated

# ----------------------------------------------------------------------- NumPy reference

_PROBS = np.exp(tabular.np_token_logp(THETA, SEQS.tokens, SEQS.mask).sum(-1))
_SCORES = tabular.np_token_scores(THETA, SEQS.tokens, SEQS.mask).sum(1)   # [N, P]


def _policy_gradient(values):
  """∇_θ Σ_y π(y) f(y) = Σ_y π(y) f(y) ∇log π(y), f fixed."""
  return np.einsum("n,n,np->p", _PROBS, values, _SCORES)


J = float(_PROBS @ REWARDS)
GRAD_J = _policy_gradient(REWARDS)                       # the sequence-level objective
GRAD_J_LEN = _policy_gradient(REWARDS / LENGTHS)         # the length-normalised objective
GRAD_INV_LEN = _policy_gradient(1.0 / LENGTHS)           # ∇E[1/|y|]
MEAN_LENGTH = float(_PROBS @ LENGTHS)
OBJECTIVES = {"J": GRAD_J, "J_len": GRAD_J_LEN}


def _np_advantages(r, kind):
  """Advantages of a batch of rewards r[K, B] (K batches), written out in NumPy."""
  b = r.shape[1]
  if kind == "none":
    return r
  if kind == "const":
    return r - BASELINE
  if kind == "rloo":                                     # r_i - mean of the others
    return r - (r.sum(1, keepdims=True) - r) / (b - 1)
  centred = r - r.mean(1, keepdims=True)
  if kind == "mean":                                     # Dr. GRPO
    return centred
  std = np.sqrt((centred ** 2).sum(1, keepdims=True) / (b - 1))   # GRPO: (n-1) std, eps 1e-6
  return np.where(std > 0, centred / (std + 1e-6), 0.0)


def _np_expected_loss_gradient(mode, kind, batch, max_tokens=None):
  """E over i.i.d. batches of ∇ loss, the loss written per mode from its definition."""
  tuples = np.array(list(itertools.product(range(N), repeat=batch)))   # [K, B]
  weight = _PROBS[tuples].prod(-1)
  adv = _np_advantages(REWARDS[tuples], kind)
  lengths = LENGTHS[tuples]
  if mode == "seq-mean-token-sum":            # (1/B) Σ_i A_i ∇log π(y_i)
    coef = adv / batch
  elif mode == "seq-mean-token-mean":         # (1/B) Σ_i A_i / |y_i| ∇log π(y_i)
    coef = adv / lengths / batch
  elif mode == "token-mean":                  # Σ_i A_i ∇log π(y_i) / Σ_j |y_j|
    coef = adv / lengths.sum(1, keepdims=True)
  else:                                       # Σ_i A_i ∇log π(y_i) / (B · M)
    coef = adv / (batch * (T if max_tokens is None else max_tokens))
  return -np.einsum("k,kb,kbp->p", weight, coef, _SCORES[tuples])


def direction_error(g, target):
  """‖g - proj_target(g)‖ / ‖g‖, the sine of the angle: 0 iff g is parallel to target."""
  g, target = np.ravel(g), np.ravel(target)
  proj = (g @ target) / (target @ target) * target
  return float(np.linalg.norm(g - proj) / np.linalg.norm(g))


# ----------------------------------------------------------------------- the library, enumerated


@functools.lru_cache(maxsize=None)
def library_gradient(mode, kind, batch, max_tokens=None):
  """E over i.i.d. batches of ∇_θ rljax.reinforce_loss, by enumeration (float64 NumPy out)."""

  def loss(th, idx):
    r = jnp.asarray(REWARDS, jnp.float32)[idx]
    if kind in ("none", "const"):
      adv = r - (BASELINE if kind == "const" else 0.0)
    elif kind == "rloo":
      adv = rljax.rloo_advantages(r, batch)
    else:
      adv = rljax.group_advantages(r, batch, scale="none" if kind == "mean" else "std")
    lp = tabular.token_logp(th, TOKENS[idx])
    return rljax.reinforce_loss(lp, adv, MASK[idx], aggregation=mode,
                                max_tokens=max_tokens).loss

  weights = jnp.asarray(_PROBS, jnp.float32)
  fn = jax.jit(lambda th: tabular.expected_group_gradient(loss, th, TOKENS, weights, batch))
  return np.asarray(fn(THETA), np.float64).ravel()


# (mode, advantages, batch size B = group size G, max_tokens) -> {objective: scale c such that
# E[∇ loss] = -c ∇objective exactly}; an objective left out is one the estimator is biased for.
S, M, TM, SN = "seq-mean-token-sum", "seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"
TABLE = {
    (S, "none", 1, None): {"J": 1.0},
    (S, "none", 2, None): {"J": 1.0},
    (S, "const", 1, None): {"J": 1.0},
    (S, "rloo", 2, None): {"J": 1.0},
    (S, "rloo", 3, None): {"J": 1.0},
    (S, "mean", 2, None): {"J": 1 / 2},
    (S, "mean", 3, None): {"J": 2 / 3},
    (S, "std", 2, None): {},
    (SN, "none", 1, None): {"J": 1 / T},
    (SN, "none", 2, 8): {"J": 1 / 8},
    (SN, "const", 2, None): {"J": 1 / T},
    (SN, "rloo", 2, None): {"J": 1 / T},
    (SN, "mean", 3, 8): {"J": 2 / 3 / 8},
    (M, "none", 1, None): {"J_len": 1.0},
    (M, "none", 2, None): {"J_len": 1.0},
    (M, "const", 1, None): {},
    (M, "rloo", 2, None): {},
    (M, "rloo", 3, None): {},
    (M, "mean", 2, None): {},
    (M, "mean", 3, None): {},
    (M, "std", 3, None): {},
    (TM, "none", 1, None): {"J_len": 1.0},
    (TM, "none", 2, None): {},
    (TM, "none", 3, None): {},
    (TM, "const", 2, None): {},
    (TM, "rloo", 2, None): {},
    (TM, "rloo", 3, None): {},
    (TM, "mean", 3, None): {},
    (TM, "std", 3, None): {},
}


def _case_id(case):
  mode, kind, batch, max_tokens = case
  return f"{mode}-{kind}-B{batch}" + ("" if max_tokens is None else f"-M{max_tokens}")


def close(got, want, rtol=1e-4, atol=2e-6):
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=atol)


def test_reference_objectives_are_distinct_and_match_autodiff():
  close(_PROBS.sum(), 1.0, atol=1e-6)
  for values, grad in ((REWARDS, GRAD_J), (REWARDS / LENGTHS, GRAD_J_LEN)):
    close(np.asarray(tabular.ragged_true_gradient(THETA, SEQS, values)).ravel(), grad)
  # The two objectives point in different directions, so a bias for one is visible.
  assert direction_error(GRAD_J_LEN, GRAD_J) > 0.5
  assert np.linalg.norm(GRAD_INV_LEN) > 0.05


@pytest.mark.parametrize("case", list(TABLE), ids=_case_id)
def test_expected_gradient_equals_numpy_enumeration(case):
  close(library_gradient(*case), _np_expected_loss_gradient(*case))


@pytest.mark.parametrize("case", list(TABLE), ids=_case_id)
def test_unbiased_exactly_for_the_table_objectives_and_biased_for_the_others(case):
  got = library_gradient(*case)
  want = _np_expected_loss_gradient(*case)
  for name, grad in OBJECTIVES.items():
    scale = TABLE[case].get(name)
    if scale is not None:
      close(got, -scale * grad)
    else:
      # Not a multiple of the objective's gradient: the measured direction error is the one
      # of the NumPy enumeration, and material.
      err = direction_error(got, grad)
      assert err > 0.05, (name, err)
      close(err, direction_error(want, grad), rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------- closed forms of the bias


@pytest.mark.parametrize("batch", [1, 2])
def test_seq_mean_token_mean_constant_baseline_adds_a_length_term(batch):
  # E[(R - b)/|y| ∇log π] = ∇J_len - b ∇E[1/|y|]: with b > 0 the extra ascent term lowers
  # E[1/|y|], i.e. it favours long sequences (GRPO's length bias, Dr. GRPO §3).
  got = library_gradient(M, "const", batch)
  close(got, -(GRAD_J_LEN - BASELINE * GRAD_INV_LEN))
  if batch == 1:
    close(library_gradient(TM, "const", 1), got)     # one row: token-mean is the same mode


@pytest.mark.parametrize("group_size", [2, 3])
def test_seq_mean_token_mean_group_baselines_closed_form(group_size):
  # The other samples are independent of y_i, so the leave-one-out mean contributes
  # E[R] E[∇log π(y)/|y|] = J ∇E[1/|y|]; the group mean is (G-1)/G times the RLOO advantage.
  rloo = -(GRAD_J_LEN - J * GRAD_INV_LEN)
  close(library_gradient(M, "rloo", group_size), rloo)
  close(library_gradient(M, "mean", group_size), (group_size - 1) / group_size * rloo)


def test_token_mean_bias_shrinks_with_the_batch_towards_grad_j_over_mean_length():
  errors = [direction_error(library_gradient(TM, "none", b), GRAD_J) for b in (1, 2, 3)]
  # B = 1 is the length-normalised estimator; each added row moves it towards ∇J / E[|y|]
  # (the ratio of expectations), never reaching it at finite B.
  close(errors[0], direction_error(GRAD_J_LEN, GRAD_J), rtol=1e-3)
  assert errors[0] > errors[1] > errors[2] > 0.2, errors
  limit = -GRAD_J / MEAN_LENGTH
  gaps = [np.linalg.norm(library_gradient(TM, "none", b) - limit) for b in (1, 2, 3)]
  assert gaps[0] > gaps[1] > gaps[2] > 0.3 * np.linalg.norm(limit), gaps


def test_token_mean_constant_baseline_changes_the_expected_gradient():
  # Per-row modes ignore a constant baseline in expectation only when the weight of row i does
  # not depend on the other rows; token-mean's shared Σ_j |y_j| breaks that.
  got, plain = library_gradient(TM, "const", 2), library_gradient(TM, "none", 2)
  assert np.linalg.norm(got - plain) > 0.05 * np.linalg.norm(plain)
  close(library_gradient(S, "const", 1), library_gradient(S, "none", 1))


# ----------------------------------------------------------------------- the table itself


def bias_table() -> str:
  """Markdown table: per estimator, 'unbiased ×c' or the direction error for J and J_len."""
  lines = ["| aggregation | advantage | B = G | J = E[R] | J_len = E[R/\\|y\\|] |",
           "| --- | --- | --- | --- | --- |"]
  for case, unbiased in TABLE.items():
    mode, kind, batch, max_tokens = case
    got = library_gradient(*case)
    cells = []
    for name, grad in OBJECTIVES.items():
      if name in unbiased:
        cells.append(f"unbiased ×{unbiased[name]:.4g}")
      else:
        cells.append(f"biased, sin∠ = {direction_error(got, grad):.3f}")
    label = mode + ("" if max_tokens is None else f" (M={max_tokens})")
    lines.append(f"| {label} | {kind} | {batch} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  print(bias_table())
