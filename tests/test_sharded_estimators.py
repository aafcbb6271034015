"""`group_advantages`, `rloo_advantages` and `truncated_is_weights` jitted over a device mesh
with the batch sharded equal the one-device computation and a float64 NumPy reference, and keep
the batch sharding.

tests/conftest.py sets XLA_FLAGS=--xla_force_host_platform_device_count=8 before JAX starts.
Meshes: ``data=8`` (B = 16 rows, 2 per device) and ``data=4 x tensor=2`` (4 rows per device,
replicated over ``tensor``; the [B, T] inputs of the IS weights also split T over ``tensor``).
Groups are contiguous: G = 2 stays on one device, G = 4 and 8 span devices, G = 16 is the whole
batch, G = 1 is singletons.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

import rljax
from rljax.train import mesh as mesh_lib

NUM_DEVICES = 8
B, T = 16, 8
EPS = 1e-6
CAP = 2.0
GROUP_SIZES = (1, 2, 4, 8, 16)

pytestmark = pytest.mark.skipif(
    jax.device_count() < NUM_DEVICES,
    reason=f"needs {NUM_DEVICES} devices (tests/conftest.py sets the XLA host device count)")

# (mesh axis sizes, PartitionSpec of [B] arrays, PartitionSpec of [B, T] arrays)
LAYOUTS = {
    "data8": (dict(data=8), P("data"), P("data", None)),
    "data4xtensor2": (dict(data=4, tensor=2), P("data"), P("data", None)),
    "data4xtensor2-T-split": (dict(data=4, tensor=2), P("data"), P("data", "tensor")),
}


@functools.lru_cache(maxsize=None)
def _mesh(sizes):
  return mesh_lib.make_mesh(**dict(sizes), devices=jax.devices()[:NUM_DEVICES])


def _layout(name):
  sizes, row_spec, token_spec = LAYOUTS[name]
  mesh = _mesh(tuple(sorted(sizes.items())))
  return mesh, NamedSharding(mesh, row_spec), NamedSharding(mesh, token_spec)


def _rewards():
  """Binary and continuous rewards: flat groups at every group size up to 4, spread elsewhere."""
  rng = np.random.default_rng(0)
  r = rng.integers(0, 2, size=B).astype(np.float64)
  r[:4] = 1.0                            # a flat group of 4 (so also 2 flat groups of 2)
  r[8:] += 0.25 * rng.normal(size=8)     # continuous rewards in the second half
  return r.astype(np.float32)


# ----------------------------------------------------------------- float64 NumPy references


def np_group_advantages(r, g, scale):
  r = np.asarray(r, np.float64).reshape(-1, g)
  centred = r - r.mean(axis=1, keepdims=True)
  flat = r.max(axis=1, keepdims=True) == r.min(axis=1, keepdims=True)
  centred = np.where(flat, 0.0, centred)
  if scale == "none":
    adv = centred
  elif scale == "std":
    if g == 1:
      return np.zeros(r.size)
    std = r.std(axis=1, ddof=1, keepdims=True)
    adv = np.where(flat, 0.0, centred / (std + EPS))
  elif scale == "batch-std":   # the n-1 std of the centred rewards over the whole batch
    adv = centred / (centred.std(ddof=1) + EPS)
  elif scale == "batch-raw-std":   # the n-1 std of the raw rewards over the whole batch
    adv = centred / (r.std(ddof=1) + EPS)
  else:
    raise NotImplementedError(f"no reference for scale={scale!r}")
  return adv.reshape(-1)


def np_rloo(r, g):
  r = np.asarray(r, np.float64).reshape(-1, g)
  if g == 1:
    return np.zeros(r.size)
  others = (r.sum(axis=1, keepdims=True) - r) / (g - 1)
  return (r - others).reshape(-1)


def np_is_weights(behavior, old, mask, level, mode):
  """Weights and the main metrics; masked slots may hold -inf and are selected away."""
  valid = mask > 0
  d = np.where(valid, np.clip(np.where(valid, old, 0.0) - np.where(valid, behavior, 0.0),
                              -20, 20), 0.0)
  nonempty = valid.any(axis=1)
  if level == "token":
    rho = np.exp(d)
    stat_rho, stat_valid = rho[valid], valid
  else:
    seq = np.clip(d.sum(axis=1), -20, 20)
    rho = np.broadcast_to(np.exp(seq)[:, None], d.shape)
    stat_rho, stat_valid = np.exp(seq)[nonempty], nonempty
  outside = rho > CAP
  w = np.minimum(rho, CAP) if mode == "truncate" else np.where(outside, 0.0, rho)
  w = np.where(valid, w, 0.0)
  frac = (valid & outside).sum() / valid.sum()
  metrics = {
      "is_ratio_mean": stat_rho.mean(), "is_ratio_min": stat_rho.min(),
      "is_ratio_max": stat_rho.max(), "is_weight_mean": w[valid].mean(),
      "truncated_frac": frac if mode == "truncate" else 0.0,
      "masked_frac": frac if mode == "mask" else 0.0,
  }
  assert stat_valid.any()
  return w, metrics


def _is_inputs():
  """Ragged mask with empty rows, -inf in masked slots, ratios on both sides of the cap."""
  rng = np.random.default_rng(1)
  lengths = rng.integers(1, T + 1, size=B)
  lengths[[1, 9]] = 0
  mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)
  behavior = np.log(rng.uniform(0.05, 0.95, size=(B, T)))
  old = behavior + 0.6 * rng.normal(size=(B, T))
  behavior = np.where(mask > 0, behavior, -np.inf).astype(np.float32)
  old = np.where(mask > 0, old, -np.inf).astype(np.float32)
  return behavior, old, mask


# ------------------------------------------------------------------------------- tests

_ADVANTAGE_FNS = {
    **{f"group-{s}": (functools.partial(rljax.group_advantages, scale=s),
                      functools.partial(np_group_advantages, scale=s))
       for s in rljax.GROUP_SCALES},
    "rloo": (rljax.rloo_advantages, np_rloo),
}


@pytest.mark.parametrize("layout", ["data8", "data4xtensor2"])
@pytest.mark.parametrize("g", GROUP_SIZES)
@pytest.mark.parametrize("name", sorted(_ADVANTAGE_FNS))
def test_advantages_on_a_mesh(name, g, layout):
  fn, reference = _ADVANTAGE_FNS[name]
  mesh, rows, _ = _layout(layout)
  r = _rewards()
  f = jax.jit(functools.partial(fn, group_size=g))
  one = f(jax.device_put(r, jax.devices()[0]))
  x = jax.device_put(r, rows)
  assert len(x.sharding.device_set) == NUM_DEVICES
  got = f(x)
  np.testing.assert_allclose(np.asarray(got), np.asarray(one), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got), reference(r, g), rtol=1e-5, atol=1e-6)
  if g == 1 and name in ("group-std", "rloo"):
    # Singletons get the constant 0, which depends on no input: JAX returns it uncommitted
    # (placed wherever it is used next), not laid out on the mesh.
    assert not got.committed and np.all(np.asarray(got) == 0)
  else:
    assert got.sharding.is_equivalent_to(rows, 1), got.sharding


def test_reference_data_cover_flat_and_spread_groups():
  """The rewards give flat and non-flat groups at G = 2 and 4 (so both branches run)."""
  r = _rewards()
  for g in (2, 4):
    groups = r.reshape(-1, g)
    spread = groups.max(1) > groups.min(1)
    assert spread.any() and (~spread).any(), g


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("level", ("token", "sequence"))
@pytest.mark.parametrize("mode", ("truncate", "mask"))
def test_truncated_is_weights_on_a_mesh(mode, level, layout):
  mesh, rows, tokens = _layout(layout)
  behavior, old, mask = _is_inputs()
  f = jax.jit(functools.partial(rljax.truncated_is_weights, cap=CAP, level=level, mode=mode))
  one = f(*jax.device_put((behavior, old, mask), jax.devices()[0]))
  args = jax.device_put((behavior, old, mask), tokens)
  assert all(len(a.sharding.device_set) == NUM_DEVICES for a in args)
  got = f(*args)
  want_w, want_metrics = np_is_weights(behavior, old, mask, level, mode)
  np.testing.assert_allclose(np.asarray(got.weights), np.asarray(one.weights), rtol=1e-6,
                             atol=1e-7)
  np.testing.assert_allclose(np.asarray(got.weights), want_w, rtol=1e-5, atol=1e-7)
  assert got.weights.sharding.is_equivalent_to(tokens, 2), got.weights.sharding
  assert set(got.metrics) == set(one.metrics)
  for k, v in got.metrics.items():
    np.testing.assert_allclose(float(v), float(one.metrics[k]), rtol=1e-6, atol=1e-7, err_msg=k)
    # Scalars come back replicated over the whole mesh.
    assert v.sharding.is_fully_replicated and len(v.sharding.device_set) == NUM_DEVICES, k
  for k, want in want_metrics.items():
    np.testing.assert_allclose(float(got.metrics[k]), want, rtol=1e-5, atol=1e-7, err_msg=k)
  # The data reach both sides of the cap.
  assert 0 < want_metrics["truncated_frac" if mode == "truncate" else "masked_frac"] < 1
