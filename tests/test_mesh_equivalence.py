"""The RL update gives the same numbers on every mesh, with parameters and optimizer state sharded.

Three `rljax.train.make_rl_update` calls (each 2 optimizer steps over 2 mini-batches) from the
same parameters and batch on the meshes of `tests/mesh_cases.py` (1, 8x1x1, 2x4x1, 2x2x2,
1x2x4, 1x1x8; data x fsdp x tensor) agree with the one-device run to 1e-5 (float32): the loss
and gradient-norm metrics of every update, the SGD momentum (whose value after the first update
is the first clipped gradient, so gradients are compared exactly where they enter the
optimizer), and the parameters.

Compilations (one per (estimator, mesh), the cost of this module): GRPO, TOPR and Clip-Cov
(the one with a global top-k over the batch) on all six meshes, and GRPO on a batch whose
groups share their prompts (each prompt run once per group, its stream of B / G rows split
over the batch axes or replicated where they do not divide it) on four. Each update is lowered once per mesh and compiled with XLA's backend optimisation
level 0 (the same program, compiled about three times faster on CPU); the compiled executable
only accepts arguments with the shardings it was compiled for, so the second and third updates,
fed the first one's output state, also check that the update keeps the state's layout.
"""

import jax
import numpy as np
import optax
import pytest

from rljax.train import mesh as mesh_lib
from rljax.train import train_step as ts
from tests import mesh_cases as mc

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason='needs 8 devices (conftest.py)')

CASES = [(e, m, False) for e in ('grpo', 'topr', 'clip_cov')
         for m in mc.MESHES if m != '1']
NUM_UPDATES = 3
TOL = dict(rtol=1e-5, atol=1e-5)

_RUNS = {}
_SETUP = {}


def _setup(shared_prompts: bool = False):
  if not _SETUP:
    _SETUP['model'] = mc.split_model()
    _SETUP['batch'] = mc.host_batch()
    _SETUP['shared'] = mc.host_batch(shared_prompts=True)
  return _SETUP['model'], _SETUP['shared' if shared_prompts else 'batch']


def _tx():
  return optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.5, momentum=0.9))


def run(estimator: str, mesh_name: str, shared_prompts: bool = False):
  """`(metrics per update, momentum per update, final state, initial state)` on one mesh."""
  key = (estimator, mesh_name, shared_prompts)
  if key not in _RUNS:
    (graphdef, params), batch = _setup(shared_prompts)
    assert ts._check_layout(batch, mc.N, mc.G) == shared_prompts  # pylint: disable=protected-access
    tx = _tx()
    update = ts.make_rl_update(graphdef, tx, ts.LossConfig(estimator=estimator), group_size=mc.G,
                               num_minibatches=2, max_new_tokens=mc.N, donate=False)
    m = mc.mesh(mesh_name)
    with jax.set_mesh(m):
      state = ts.init_train_state(mc.place_params(params, m), tx, m)
      initial = state
      sharded = mesh_lib.shard_batch(batch, m)
      compiled = update.lower(state, None, sharded, jax.random.key(0)).compile(
          compiler_options=mc.FAST_COMPILE)
      metrics, momenta = [], []
      for i in range(NUM_UPDATES):
        state, mets = compiled(state, None, sharded, jax.random.key(i))
        metrics.append(jax.device_get(mets))
        momenta.append(jax.device_get(state.opt_state[1][0].trace))
    _RUNS[key] = (metrics, momenta, state, initial)
  return _RUNS[key]


@pytest.mark.parametrize('estimator,mesh_name,shared_prompts',
                         CASES + [('grpo', m, True) for m in ('8x1x1', '2x2x2', '1x2x4')],
                         ids=[f'{e}-{m}' for e, m, _ in CASES] +
                         [f'grpo-shared_prompts-{m}' for m in ('8x1x1', '2x2x2', '1x2x4')])
def test_update_matches_one_device(estimator, mesh_name, shared_prompts):
  ref_metrics, ref_momenta, ref_state, _ = run(estimator, '1', shared_prompts)
  metrics, momenta, state, initial = run(estimator, mesh_name, shared_prompts)
  for i in range(NUM_UPDATES):
    for name in ('loss/total', 'loss/policy', 'grad_norm'):
      np.testing.assert_allclose(metrics[i][name], ref_metrics[i][name], **TOL,
                                 err_msg=f'{name} of update {i}')
    assert float(metrics[i]['grad_norm']) > 0
    for a, b in zip(jax.tree.leaves(momenta[i]), jax.tree.leaves(ref_momenta[i])):
      np.testing.assert_allclose(a, b, **TOL, err_msg=f'momentum after update {i}')
  moved = 0.0
  for a, b, a0 in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params),
                      jax.tree.leaves(initial.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)
    moved = max(moved, float(np.max(np.abs(np.asarray(a) - np.asarray(a0)))))
  assert moved > 1e-3, 'the parameters did not move: the comparison would be vacuous'
  # The update keeps the layout it was given (no resharding into a replicated state).
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(initial)):
    assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (a.sharding, b.sharding)


@pytest.mark.parametrize('mesh_name', ['2x4x1', '2x2x2', '1x2x4', '1x1x8'])
def test_params_and_adam_state_are_split_over_fsdp_x_tensor(mesh_name):
  """Per-device bytes of parameters and AdamW moments are the total / (fsdp x tensor).

  Exceptions allowed: the RMSNorm scales ([D] vectors, split over fsdp only, replicated over
  tensor) and scalars (the step and Adam's count), at most their total size per device.
  """
  (graphdef, params), _ = _setup()
  del graphdef
  m = mc.mesh(mesh_name)
  _, fsdp, tensor = mc.MESHES[mesh_name]
  tx = optax.adamw(1e-3)
  with jax.set_mesh(m):
    state = ts.init_train_state(mc.place_params(params, m), tx, m)
  is_matrix = lambda x: x.ndim >= 2
  matrices = [x for x in jax.tree.leaves(state) if is_matrix(x)]
  small = [x for x in jax.tree.leaves(state) if not is_matrix(x)]
  held, total = mc.per_device_bytes(matrices)
  assert held == total // (fsdp * tensor), (held, total)
  # Moments are sharded like their parameters.
  mu = state.opt_state[0].mu
  for p, x in zip(jax.tree.leaves(state.params), jax.tree.leaves(mu)):
    assert x.sharding.is_equivalent_to(p.sharding, x.ndim)
  held_small, total_small = mc.per_device_bytes(small)
  assert held_small <= total_small
  assert held + held_small < (total + total_small) / (fsdp * tensor) + total_small
