"""Two processes run one experiment together and get the one-process result.

Two local CPU processes (4 devices each, loopback coordinator) run
`python -m experiments.launch` on one 2x2x2 (data x fsdp x tensor) mesh of 8 devices: 2 RL
steps with evaluations before and after; a restart restores the final checkpoint on every
process (and, marked slow, resumes training from an earlier one). Their metrics and summary
equal those of one process with 8 devices and the same flags. The float metrics agree to 1e-5
(cross-process reductions may add in another order); what the sampled tokens decide (rewards,
lengths, accuracy) is equal exactly. Only process 0 writes: each record of metrics.jsonl
appears once.

Subprocesses, because `jax.distributed.initialize` must run before JAX touches a device and
only once per process; every one has a timeout so a hang fails the test instead of blocking CI.
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys

import pytest

from experiments import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 300
FLAGS = [
    '--task_args={"levels": [1], "ops": ["+"]}', '--d_model=16', '--num_layers=1',
    '--num_heads=2', '--ffn_dim=32', '--sft_steps=0',
    '--rl_steps=2', '--num_prompts=8', '--group_size=2', '--num_epochs=2', '--num_minibatches=1',
    '--max_new_tokens=4', '--rl_pool_size=16', '--eval_num=4', '--eval_samples=2',
    '--entropy_coef=0.01', '--kl_coef=0.01', '--checkpoint_every=1', '--console=false',
    '--tensorboard=false', '--seed=3', '--mesh_data=2', '--mesh_fsdp=2', '--mesh_tensor=2',
]
SKIP = ('time', 'tokens_per_sec')  # wall-clock measurements differ run to run
# Functions of the sampled tokens only: equal exactly when the processes sample the same tokens.
EXACT = ('num_tokens', 'response_length', 'reward_mean', 'pass_rate', 'eval/greedy_accuracy',
         'eval/sampled_pass@1', 'eval/pass@2', 'eval/greedy_length', 'eval/sampled_length')


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _env(devices):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}', JAX_PLATFORMS='cpu')
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  return env


def _launch(workdir, num_processes):
  """Runs the experiment in `workdir` on `num_processes` processes x 8/num_processes devices."""
  cmd = [sys.executable, '-m', 'experiments.launch', f'--workdir={workdir}', *FLAGS]
  if num_processes > 1:
    port = _free_port()
    cmds = [cmd + [f'--coordinator_address=localhost:{port}',
                   f'--num_processes={num_processes}', f'--process_id={i}']
            for i in range(num_processes)]
  else:
    cmds = [cmd]
  procs = [subprocess.Popen(c, cwd=ROOT, env=_env(8 // num_processes), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for c in cmds]
  try:
    outs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  for i, (p, (_, err)) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f'process {i} of {num_processes}: {err[-3000:]}'


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(line).items() if not any(s in k for s in SKIP)}
            for line in f]


def _evals(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    evals = json.load(f)['evals']
  return {name: {k: v for k, v in e.items() if k != 'eval/time'} for name, e in evals.items()}


def _assert_same(got, want, where):
  assert sorted(got) == sorted(want), where
  for k, w in want.items():
    g = got[k]
    if k in EXACT or isinstance(w, str):
      assert g == w, (where, k, g, w)
    else:
      assert math.isclose(g, w, rel_tol=1e-5, abs_tol=1e-6), (where, k, g, w)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  one, two = tmp_path_factory.mktemp('one_process'), tmp_path_factory.mktemp('two_processes')
  _launch(one, 1)
  _launch(two, 2)
  return one, two


def test_two_processes_log_the_one_process_metrics_once(runs):
  one, two = runs
  want, got = _records(one), _records(two)
  assert [r['step'] for r in got] == [r['step'] for r in want]  # no record written twice
  rl = [r for r in want if 'grad_norm' in r]
  assert len(rl) == 2 and all(r['grad_norm'] > 0 for r in rl)  # the updates change the policy
  for g, w in zip(got, want):
    _assert_same(g, w, f'step {w["step"]}')


def test_two_processes_evaluate_as_one(runs):
  one, two = runs
  want = _evals(one)
  assert sorted(want) == ['after', 'before']
  got = _evals(two)
  for name in want:
    _assert_same(got[name], want[name], name)
  with open(os.path.join(two, 'config.json')) as f:
    assert json.load(f)['mesh_tensor'] == 2


def test_two_processes_restore_the_final_checkpoint_on_every_process(runs):
  one, two = runs
  # A restart of a finished run restores its last checkpoint (sharded over both processes'
  # devices) on both processes and writes the summary again from what it restored.
  os.remove(os.path.join(two, 'summary.json'))
  _launch(two, 2)
  assert [r['step'] for r in _records(two)] == [r['step'] for r in _records(one)]
  want, got = _evals(one), _evals(two)
  for name in want:
    _assert_same(got[name], want[name], f'restored {name}')


@pytest.mark.slow
def test_two_processes_resume_training_from_a_checkpoint(runs):
  one, two = runs
  # Without the final checkpoint the restart restores step 1 (an RL step) on both processes
  # and runs the last RL step and the final evaluation again.
  shutil.rmtree(os.path.join(two, 'checkpoints', '2'))
  os.remove(os.path.join(two, 'summary.json'))
  _launch(two, 2)
  assert [r['step'] for r in _records(two)] == [r['step'] for r in _records(one)]
  for g, w in zip(_records(two)[-2:], _records(one)[-2:]):
    _assert_same(g, w, f'resumed step {w["step"]}')
  want, got = _evals(one), _evals(two)
  for name in want:
    _assert_same(got[name], want[name], f'resumed {name}')


@pytest.mark.parametrize('args, pattern', [
    (('off', 'localhost:1234', None, 0), r'--coordinator_address=.* also needs --num_processes'),
    (('off', None, 2, 0), r'--num_processes / --process_id need --coordinator_address'),
    (('off', 'localhost:1234', 2, 2), r'--process_id=2 must be < --num_processes=2'),
    (('off', 'localhost', 2, 0), r"--coordinator_address='localhost' must be host:port"),
    (('auto', None, 0, None), r'--num_processes=0 must be >= 1'),
])
def test_inconsistent_distributed_flags_are_named(args, pattern):
  with pytest.raises(ValueError, match=pattern):
    distributed.validate(*args)


def test_distributed_flags_that_start_nothing_or_let_jax_detect_the_cluster_are_valid():
  distributed.validate('off', None, None, None)
  distributed.validate('auto', None, None, None)
  distributed.validate('off', 'localhost:1234', 2, 1)
  assert distributed.initialize('off') is False  # one process: jax.distributed is not started
