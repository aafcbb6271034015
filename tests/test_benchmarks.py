"""The benchmark scripts run end to end on small shapes.

`benchmarks/estimators.py` also checks every estimator's loss and gradient against an
independent eager-PyTorch implementation and exits with an error on a mismatch, so this run is a
parity test as well. No timing is asserted (speed goals are checked by the benchmarks, not here).
"""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=g-import-not-at-top
try:
  import torch  # noqa: F401
  import transformers  # noqa: F401
  HAVE_TORCH = True
except ImportError:  # a user's machine; scripts/test.sh installs both, so CI skips nothing
  HAVE_TORCH = False

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason='torch and transformers are not installed')


def _run(script, *args, timeout=600):
  # This interpreter's path, so that the scripts see the same packages (under Bazel the
  # virtual environment's site-packages are added at run time, not through the interpreter).
  path = [ROOT] + [p for p in sys.path if p and os.path.isdir(p)]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
  env.pop('XLA_FLAGS', None)  # the scripts set their own flags; no forced device count
  result = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', script), *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
  assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
  return result.stdout


@needs_torch
def test_estimator_benchmark_matches_pytorch_for_every_estimator():
  out = _run('estimators.py', '--batch', '16', '--length', '32', '--reps', '1', '--threads', '1',
             '--pause', '0', '--warmup', '0')
  rows = [line for line in out.splitlines()
          if re.search(r'\d+\.\d+x\s', line) and not line.startswith('vs ')]
  assert len(rows) == 14, out
  for line in rows:  # the last two columns are the loss and gradient relative errors
    loss_err, grad_err = (float(v) for v in line.split()[-2:])
    assert loss_err <= 1e-4 and grad_err <= 1e-4, line
  assert 'vs PyTorch eager: min' in out


@needs_torch
def test_sampler_benchmark_runs():
  out = _run('sampler.py', '--config', 'tiny', '--batch_sizes', '2', '--prompt_len', '4',
             '--new_tokens', '4', '--repeats', '1', '--rounds', '1', '--matmul_size', '128',
             '--naive_batch_sizes', '2', '--torch_threads', '1')
  assert re.search(r'batch 2: rljax [\d,]+ tok/s .*vs HF generate: [\d.]+x.*vs naive: [\d.]+x'
                   r'.*% of compute bound', out), out


@needs_torch
def test_train_step_benchmark_runs():
  out = _run('train_step.py', '--config', 'tiny', '--batch', '2', '--seq', '16', '--steps', '1',
             '--rounds', '1', '--warmup', '1', '--peak-size', '128', '--no-compile')
  assert re.search(r'rljax [\d,]+ tok/s .*torch eager [\d,]+ tok/s .*ratio [\d.]+x', out), out


def test_sampler_breakdown_runs():
  out = _run('sampler_breakdown.py', '--batch', '2', '--prompt_len', '4', '--new_tokens', '4',
             '--repeats', '1', '--rounds', '1')
  for name in ('full sampler', 'without attention', 'without rotary embeddings',
               'without sampling (argmax)'):
    assert re.search(rf'^{re.escape(name)} +[\d.]+ ms per step', out, re.M), out


def test_scaling_benchmark_runs_and_shards_the_parameters():
  out = _run('scaling.py', '--quick')
  rows = {m.group(1): m.group(2).split() for m in
          re.finditer(r'^ +(1|2x2x2) +(\d+\.\d+ .*)$', out, re.M) if 'HLO' not in m.group(2)}
  assert sorted(rows) == ['1', '2x2x2'], out
  # columns: step s, tok/s, params MiB, optim MiB, 2 temps, XLA GFLOP, model GFLOP, ratio, MB
  one, mesh = (float(v) for v in rows['1'][2:4]), (float(v) for v in rows['2x2x2'][2:4])
  for full, shard in zip(one, mesh):
    assert full / 4.5 < shard < full / 3, out  # fsdp x tensor = 4, norms and biases replicated
  for row in rows.values():
    assert 0.9 < float(row[8]) < 1.5, out  # XLA's FLOPs against the model's


@needs_torch
def test_rl_step_benchmark_runs(tmp_path):
  # rljax alone, on one and on two XLA:CPU devices (TRL and tunix are not test dependencies);
  # the long-prompt setting also times the sampler with and without the shared prefill.
  path = os.path.join(tmp_path, 'rl_step.json')
  out = _run('rl_step.py', '--quick', '--peers', '', '--setting', 'long', '--json', path)
  with open(path, encoding='utf-8') as f:
    results = json.load(f)['long']
  assert results['rljax']['devices'] == 1 and results['rljax:2']['devices'] == 2, results
  for system in ('rljax', 'rljax:2'):
    assert re.search(rf'^{system} +[\d.]+ \([\d.]+-[\d.]+\)( +-?[\d.]+){{4}} ', out, re.M), out
  assert re.search(r'^system .* vs rljax +vs rljax:2$', out, re.M), out
  for variant in ('shared_prefill', 'repeated_prompts'):
    assert len(re.findall(rf'sampler alone, {variant}: [\d.]+ s', out)) == 2, out
