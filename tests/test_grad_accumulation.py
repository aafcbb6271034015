"""Gradient accumulation is exact: the parameter gradient summed over 4 micro-batches, each
given the full batch's external normaliser, equals the full-batch gradient (1e-6).

The parameters are a tabular softmax policy (tests/tabular.py) scoring 8 fixed sequences, so
the micro-batch gradients land in the same parameters and really are summed. Every aggregation
mode is checked for `reinforce_loss` and token-level `ppo_clip_loss`; GSPO (PPO at sequence
level) and every other loss that takes ``normalizer`` are checked with their default
aggregation. Micro-batches hold 2 rows, aligned with groups of 2 for the group losses. Clip-Cov / KL-Cov select tokens from
batch statistics, so they get the full-batch ``selection`` as well (as their docstrings say).
"""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rljax
from tests import loss_table
from tests import tabular

B, T, V, G = 8, 4, 3, 2
MICRO = 4
_ALL_MODES = ["reinforce_loss", "ppo_clip_loss"]
_COEFS = {"entropy_bonus": {"coef": 1.0}, "kl_penalty_loss": {"coef": 1.0}}   # defaults 0, 1e-3


def _cases():
  out = []
  for name in loss_table.exported_losses():
    if not loss_table.takes(name, "normalizer"):
      continue
    levels = [None, "sequence"] if name == "ppo_clip_loss" else [None]
    for level in levels:
      # Every mode for REINFORCE and token-level PPO; the default for the rest (fewer compiles).
      modes = rljax.AGGREGATION_MODES if name in _ALL_MODES and level is None else [None]
      for mode in modes:
        opts = tuple(sorted(
            ([("aggregation", mode)] if mode else []) + ([("level", level)] if level else [])
            + list(_COEFS.get(name, {}).items())))
        out.append(loss_table.Case(name, opts, G if loss_table.takes(name, "group_size") else None))
  return out


CASES = _cases()


_score = jax.jit(tabular.token_logp)


def _setup(seed=4):
  rng = np.random.default_rng(seed)
  # Built in NumPy (plus one jitted scoring call) so that no eager JAX op needs compiling.
  theta = jnp.asarray(rng.normal(size=(T, V + 1, V)), jnp.float32)
  seqs = jnp.asarray(rng.integers(0, V, size=(B, T)), jnp.int32)
  data = loss_table.make_data(seed, B, T, group_size=G)
  logp0 = np.asarray(_score(theta, seqs))
  for name, scale in (("old_logp", 0.3), ("behavior_logp", 0.3), ("ref_logp", 0.5)):
    data[name] = (logp0 + scale * rng.normal(size=logp0.shape)).astype(np.float32)
  data = {k: jnp.asarray(v) for k, v in data.items() if k not in ("logp", "entropy")}
  return theta, seqs, data


def _diff(case, theta, seqs):
  """The differentiable input as a function of the parameters: log-probs, or entropies."""
  if loss_table.bind(case).diff_name == "entropy":
    length = theta.shape[0]
    prev = jnp.concatenate([jnp.full((seqs.shape[0], 1), V), seqs[:, :-1]], axis=1)
    return rljax.entropy_from_logits(theta[jnp.arange(length)[None, :], prev])
  return tabular.token_logp(theta, seqs)


def _normalizer(case, mask):
  if case.name == "copg_loss":
    return jnp.float32(mask.shape[0] // G)   # the number of groups
  mode = case.kwargs.get("aggregation")
  if mode is None:
    mode = inspect.signature(getattr(rljax, case.name)).parameters["aggregation"].default
  if mode is None:   # ppo_clip_loss: the level's paper default (GSPO: seq-mean-token-mean)
    mode = "seq-mean-token-mean" if case.kwargs.get("level") == "sequence" else "token-mean"
  return rljax.aggregation_normalizer(mask, mode)


@functools.lru_cache(maxsize=None)
def _full_and_accumulated(case):
  f = loss_table.bind(case)
  selector = {"clip_cov_loss": "clip_cov_selection", "kl_cov_loss": "kl_cov_selection"}.get(
      case.name)

  @jax.jit
  def run(theta, seqs, data):
    if selector is not None:
      logp = tabular.token_logp(theta, seqs)
      sel_fn = getattr(rljax, selector)
      if selector == "clip_cov_selection":
        sel = sel_fn(logp, data["old_logp"], data["advantages"], data["mask"], data["key"])
      else:
        sel = sel_fn(logp, data["advantages"], data["mask"])
      data = dict(data, selection=jax.lax.stop_gradient(sel))
    full = jax.grad(lambda th: _call(f, case, th, seqs, data, None))(theta)
    norm = _normalizer(case, data["mask"])
    # The 4 micro-batches as one vmapped gradient (one graph to compile), then summed.
    split = lambda v: v.reshape((MICRO, B // MICRO) + v.shape[1:])
    micro = {n: split(v) for n, v in data.items() if n != "key"}
    key = data["key"]

    def micro_grad(sq, d):
      return jax.grad(lambda th: _call(f, case, th, sq, dict(d, key=key), norm))(theta)
    acc = jnp.sum(jax.vmap(micro_grad)(split(seqs), micro), axis=0)
    return full, acc

  return run


def _call(f, case, theta, seqs, data, normalizer):
  extra = {} if normalizer is None else {"normalizer": normalizer}
  if "selection" in data:
    extra["selection"] = data["selection"]
  return f(_diff(case, theta, seqs), data, **extra).loss


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_micro_batched_gradient_equals_full_batch(case):
  theta, seqs, data = _setup()
  full, acc = _full_and_accumulated(case)(theta, seqs, data)
  full, acc = np.asarray(full), np.asarray(acc)
  assert np.abs(full).max() > 1e-4, "degenerate: zero full-batch gradient"
  np.testing.assert_allclose(acc, full, rtol=1e-6, atol=1e-6,
                             err_msg=case.id)


def test_every_aggregation_mode_is_covered_for_reinforce_and_ppo():
  for name in _ALL_MODES:
    if hasattr(rljax, name):
      modes = {c.kwargs.get("aggregation") for c in CASES
               if c.name == name and "level" not in c.kwargs}
      assert modes == set(rljax.AGGREGATION_MODES)
