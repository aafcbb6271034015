"""Property-based robustness of every exported loss (hypothesis).

For every loss `rljax` exports (discovered by name, see tests/loss_table.py) and each listed
variant: with log-ratios up to ±1e4, all-masked rows (and all-masked batches), -inf or ±1e4 in
masked positions, zero-variance groups and group_size 1, the loss, its gradient and its metrics
are finite, and masked positions get exactly zero gradient. A group size below the one a loss is
defined for (CoPG's pairs) instead raises a ValueError that names group_size. Shapes are fixed so
that each case compiles one jitted function.
"""

import functools

import hypothesis
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rljax
from tests import loss_table

B, T = 4, 6
# The fewest completions per prompt a loss is defined for, as its docstring states (CoPG
# contrasts pairs); every other loss takes any group size >= 1.
MIN_GROUP_SIZE = {"copg_loss": 2}


def _defined(case):
  return case.group_size is None or case.group_size >= MIN_GROUP_SIZE.get(case.name, 1)


ALL_CASES = loss_table.cases(group_sizes=(1, 2, 4))
CASES = [c for c in ALL_CASES if _defined(c)]
UNDEFINED_CASES = [c for c in ALL_CASES if not _defined(c)]
SETTINGS = hypothesis.settings(
    max_examples=25, deadline=None, derandomize=True, database=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow,
                           hypothesis.HealthCheck.data_too_large])

f32 = functools.partial(st.floats, width=32, allow_nan=False, allow_infinity=False)
# Log-ratio offsets: ordinary, huge (±1e4) and exactly at / around the ±20 clamp.
_offsets = st.one_of(f32(-3, 3), f32(-1e4, 1e4), st.sampled_from([0.0, 20.0, -20.0, 1e4, -1e4]))


@st.composite
def batches(draw):
  logp = draw(hnp.arrays(np.float32, (B, T), elements=f32(-50, 0)))
  mask = draw(hnp.arrays(np.bool_, (B, T)))
  empty_rows = draw(hnp.arrays(np.bool_, (B,)))
  mask = mask & ~empty_rows[:, None]
  fill = draw(st.sampled_from([-np.inf, 1e4, -1e4, 0.0]))
  data = {"mask": mask.astype(np.float32)}
  for name in ("old_logp", "behavior_logp", "ref_logp"):
    data[name] = logp - draw(hnp.arrays(np.float32, (B, T), elements=_offsets))
  data["logp"] = logp
  for name in ("logp", "old_logp", "behavior_logp", "ref_logp"):
    data[name] = np.where(mask, data[name], fill).astype(np.float32)
  data["entropy"] = np.where(mask, -logp, fill if np.isfinite(fill) else 0.0).astype(np.float32)
  # Binary rewards give zero-variance groups often; wide rewards and advantages test scale.
  data["rewards"] = draw(st.one_of(
      hnp.arrays(np.float32, (B,), elements=st.sampled_from([0.0, 1.0])),
      hnp.arrays(np.float32, (B,), elements=f32(-1e3, 1e3))))
  data["advantages"] = draw(st.one_of(
      hnp.arrays(np.float32, (B,), elements=f32(-1e3, 1e3)),
      st.just(data["rewards"] - np.repeat(data["rewards"].reshape(-1, 2).mean(1), 2))))
  # The raw threefry key PRNGKey(seed) is [0, seed]; built in NumPy so no JAX op runs here.
  data["key"] = np.array([0, draw(st.integers(0, 3))], np.uint32)
  return data


@pytest.mark.parametrize("case", UNDEFINED_CASES, ids=[c.id for c in UNDEFINED_CASES])
def test_group_size_below_the_minimum_raises(case):
  data = loss_table.make_data(0, B, T)
  with pytest.raises(ValueError,
                     match=f"group_size must be a Python int >= {MIN_GROUP_SIZE[case.name]}"):
    loss_table.value_and_grad(case)(*loss_table.diff_and_data(case, data))


def test_minimum_group_sizes_are_the_documented_ones():
  """Each minimum is an exported loss's documented `G >= m`, and some case falls below one."""
  for name, minimum in MIN_GROUP_SIZE.items():
    assert name in loss_table.exported_losses(), name
    assert f"G >= {minimum}" in getattr(rljax, name).__doc__, name
  assert UNDEFINED_CASES, "no case below a minimum group size is checked for its error"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@SETTINGS
@given(data=batches())
def test_loss_gradient_and_metrics_are_finite(case, data):
  fn = loss_table.value_and_grad(case)
  diff, rest = loss_table.diff_and_data(case, data)
  (loss, metrics), grad = fn(diff, rest)
  assert np.isfinite(float(loss)), f"{case.id}: loss {loss}"
  grad = np.asarray(grad)
  assert np.all(np.isfinite(grad)), f"{case.id}: non-finite gradient {grad}"
  assert np.all(grad[data["mask"] == 0] == 0), f"{case.id}: gradient on masked tokens {grad}"
  for k, v in metrics.items():
    assert np.ndim(v) == 0, f"{case.id}: metric {k} is not a scalar"
    assert np.isfinite(float(v)), f"{case.id}: metric {k} = {v}"


@pytest.mark.parametrize("case", loss_table.cases(variants=False),
                         ids=[c.id for c in loss_table.cases(variants=False)])
def test_all_masked_batch(case):
  data = loss_table.make_data(1, B, T)
  data["mask"] = np.zeros((B, T), np.float32)
  for name in ("logp", "old_logp", "behavior_logp", "ref_logp"):
    data[name] = np.full((B, T), -np.inf, np.float32)
  data["entropy"] = np.zeros((B, T), np.float32)
  (loss, metrics), grad = loss_table.value_and_grad(case)(*loss_table.diff_and_data(case, data))
  # CoPG documents that an empty row counts as the empty completion (log-prob 0), so its pair
  # terms keep their reward differences; every other loss gives exactly 0.
  if case.name != "copg_loss":
    assert float(loss) == 0.0, f"{case.id}: an empty batch gives loss {loss}"
  assert np.isfinite(float(loss))
  assert np.all(np.asarray(grad) == 0)
  assert all(np.isfinite(float(v)) for v in metrics.values()), metrics


@pytest.mark.parametrize("name", loss_table.exported_losses())
def test_invalid_arguments_raise_clear_value_errors(name):
  case = loss_table.Case(name, (), 2 if loss_table.takes(name, "group_size") else None)
  f = loss_table.bind(case)
  diff, data = loss_table.diff_and_data(case, loss_table.make_data(2, B, T))
  bad_mask = dict(data, mask=data["mask"][:, :3])
  with pytest.raises(ValueError, match="mask"):
    f(diff, bad_mask)
  with pytest.raises(ValueError, match=r"\[4, 6\]|\[B, T\]|shape"):
    f(diff[:, :3], data)
  if loss_table.takes(name, "aggregation"):
    with pytest.raises(ValueError, match=r"aggregation=.*token-mean"):
      loss_table.bind(case._replace(options=(("aggregation", "mean"),)))(diff, data)
  if loss_table.takes(name, "group_size"):
    with pytest.raises(ValueError, match="group_size"):
      loss_table.bind(case._replace(group_size=3))(diff, data)   # 4 is not a multiple of 3
  if loss_table.takes(name, "advantages"):
    with pytest.raises(ValueError, match="advantages"):
      f(diff, dict(data, advantages=data["advantages"][:3]))
  if loss_table.takes(name, "rewards"):
    with pytest.raises(ValueError, match="rewards"):
      f(diff, dict(data, rewards=data["rewards"][:3]))


@functools.lru_cache(maxsize=None)
def _is_weights(level, mode):
  return jax.jit(functools.partial(rljax.truncated_is_weights, level=level, mode=mode))


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("mode", ["truncate", "mask"])
@SETTINGS
@given(data=batches())
def test_truncated_is_weights_are_finite_bounded_data(level, mode, data):
  out = _is_weights(level, mode)(data["behavior_logp"], data["old_logp"], data["mask"])
  w = np.asarray(out.weights)
  assert np.all(np.isfinite(w)) and np.all(w >= 0) and np.all(w <= 2.0 + 1e-6), w
  assert np.all(w[data["mask"] == 0] == 0)
  assert all(np.isfinite(float(v)) for v in out.metrics.values()), out.metrics


def test_api_is_complete():
  """Every name in shared/API.md's estimator tables is exported (checked last, so that the
  property tests above run over whatever exists while losses are being added)."""
  missing = [n for n in loss_table.API_LOSSES + loss_table.API_OTHERS if not hasattr(rljax, n)]
  assert not missing, f"not exported by rljax: {missing}"
  assert set(loss_table.API_LOSSES) <= set(loss_table.exported_losses())
