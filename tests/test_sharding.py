"""Every loss gives the same value, metrics and gradient (1e-6) on one device and jitted over a
mesh of 8 CPU devices with the batch split along ``data``.

tests/conftest.py sets XLA_FLAGS=--xla_force_host_platform_device_count=8 before JAX starts.
Groups of 4 rows span two devices (2 rows per device), so group reductions cross shards.
"""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from tests import loss_table

NUM_DEVICES = 8
B, T, G = 16, 8, 4
CASES = loss_table.cases(group_sizes=(G,), variants=False) + [
    loss_table.Case("ppo_clip_loss", (("level", "sequence"),), None),
    loss_table.Case("ppo_clip_loss", (("dual_clip", 3.0),), None),
]
CASES = [c for c in CASES if hasattr(loss_table.rljax, c.name)]

pytestmark = pytest.mark.skipif(
    jax.device_count() < NUM_DEVICES,
    reason=f"needs {NUM_DEVICES} devices (tests/conftest.py sets the XLA host device count)")


def _mesh():
  return jax.make_mesh((NUM_DEVICES,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:NUM_DEVICES])


def _put(tree, mesh):
  def put(x):
    x = np.asarray(x)
    spec = P() if x.dtype == np.uint32 else P("data")   # the PRNG key is replicated
    return jax.device_put(x, NamedSharding(mesh, spec))
  return jax.tree_util.tree_map(put, tree)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_single_device_equals_data_parallel_mesh(case):
  data = loss_table.make_data(3, B, T, group_size=G)
  diff, rest = loss_table.diff_and_data(case, data)
  fn = loss_table.value_and_grad(case)
  one = jax.devices()[0]
  (loss1, metrics1), grad1 = fn(*jax.device_put((diff, rest), one))
  mesh = _mesh()
  sharded_diff, sharded_rest = _put((diff, rest), mesh)
  assert len(sharded_diff.sharding.device_set) == NUM_DEVICES
  (loss8, metrics8), grad8 = fn(sharded_diff, sharded_rest)
  assert len(grad8.sharding.device_set) == NUM_DEVICES   # ran distributed
  np.testing.assert_allclose(float(loss8), float(loss1), rtol=1e-6, atol=1e-6, err_msg=case.id)
  np.testing.assert_allclose(np.asarray(grad8), np.asarray(grad1), rtol=1e-6, atol=1e-6,
                             err_msg=case.id)
  assert set(metrics8) == set(metrics1)
  for k in metrics1:
    np.testing.assert_allclose(float(metrics8[k]), float(metrics1[k]), rtol=1e-6, atol=1e-6,
                               err_msg=f"{case.id}: metric {k}")
