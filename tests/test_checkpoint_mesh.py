"""Checkpoints move between meshes: saved on 8x1x1, restored on 2x2x2 and on one device.

`experiments.train.Harness` runs a tiny RL experiment on the 8x1x1 mesh without interruption
(checkpoints at steps 0, 2 and 4). Its workdir is then copied with the checkpoints after step 2
removed, as if the run had stopped there, and resumed with `--mesh_data/--mesh_fsdp/
--mesh_tensor` changed: the restored state lands with the new mesh's shardings (parameters by
the partition rules; the optimizer state and reference parameters too) and steps 3 and 4 give
the metrics and final evaluation of the uninterrupted run. Sampled tokens, rewards and counts
are equal exactly; float metrics to 1e-5 (float32 sums in another order on another mesh).
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from experiments import config as config_lib
from experiments.train import Harness
from rljax.train import mesh as mesh_lib

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason='needs 8 devices (conftest.py)')

BASE = dict(
    task_args='{"levels": [1], "ops": ["+"]}', d_model=16, num_layers=1, num_heads=2,
    ffn_dim=32, sft_steps=0, rl_steps=4, num_prompts=4, group_size=2, num_epochs=1,
    num_minibatches=1, max_new_tokens=4, rl_pool_size=16, eval_num=4, eval_samples=1,
    eval_every=0, checkpoint_every=2, keep_checkpoints=5, console=False, tensorboard=False,
    seed=5, learning_rate=1e-2)
RESUME_STEP = 2
TIMING = ('time', 'tokens_per_sec')


def _config(data, fsdp, tensor):
  return config_lib.Config(mesh_data=data, mesh_fsdp=fsdp, mesh_tensor=tensor, **BASE)


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('mesh8'))
  summary = Harness(_config(8, 1, 1), workdir).run()
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))
                 if s.isdigit())
  assert steps == [0, 2, 4], steps
  return workdir, summary


def _stopped_copy(workdir, dest):
  shutil.copytree(workdir, dest)
  ckpts = os.path.join(dest, 'checkpoints')
  for s in os.listdir(ckpts):
    if s.isdigit() and int(s) > RESUME_STEP:
      shutil.rmtree(os.path.join(ckpts, s))
  return dest


@pytest.mark.parametrize('mesh_shape', [(2, 2, 2), (1, 1, 1)], ids=['2x2x2', '1'])
def test_resume_on_another_mesh_continues_identically(uninterrupted, tmp_path, mesh_shape):
  workdir, summary = uninterrupted
  resumed_dir = _stopped_copy(workdir, str(tmp_path / 'resumed'))
  harness = Harness(_config(*mesh_shape), resumed_dir)
  step, state, phase, _, resumed = harness._restore()  # pylint: disable=protected-access
  assert (step, phase, resumed) == (RESUME_STEP, 'rl', True)
  # Parameters, optimizer moments and reference land with the new mesh's shardings.
  expected = mesh_lib.param_shardings(state['train'], harness.mesh)
  for x, s in zip(jax.tree.leaves(state['train']), jax.tree.leaves(expected)):
    assert x.sharding.is_equivalent_to(s, x.ndim), (x.sharding, s)
  for x, s in zip(jax.tree.leaves(state['ref_params']), jax.tree.leaves(harness.param_shardings)):
    assert x.sharding.is_equivalent_to(s, x.ndim)
  assert {d for x in jax.tree.leaves(state['train']) for d in x.sharding.device_set} == set(
      harness.mesh.devices.flat)
  summary2 = harness.run()
  want = [r for r in _records(workdir) if r['step'] > RESUME_STEP]
  got = [r for r in _records(resumed_dir) if r['step'] > RESUME_STEP]
  assert [r['step'] for r in got] == [r['step'] for r in want] and want
  for a, b in zip(got, want):
    assert set(a) == set(b)
    for k in b:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=f"step {b['step']} {k}")
  train_records = [(a, b) for a, b in zip(got, want) if 'reward_mean' in b]
  assert len(train_records) == BASE['rl_steps'] - RESUME_STEP
  for a, b in train_records:   # the same completions were sampled and graded
    assert (a['reward_mean'], a['num_tokens']) == (b['reward_mean'], b['num_tokens'])
  for k, v in summary['after'].items():
    if 'time' not in k:
      np.testing.assert_allclose(summary2['after'][k], v, rtol=1e-5, atol=1e-5, err_msg=k)
