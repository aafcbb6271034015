"""Resumption: a run killed with SIGKILL and restarted ends with exactly the metrics of an
uninterrupted run with the same seed, even when the restart finds its latest checkpoint
corrupted (it falls back to the previous one with a warning).

The runs are subprocesses of `python -m experiments.launch` (a kill must not take pytest with
it). No persistent compilation cache is shared between them: an executable loaded from the
cache can round differently from a freshly compiled one (seen at 1e-7 in the trainer-vs-sampler
log-prob gap), and the claim is bitwise equality of the metrics.
"""

import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = [
    '--task_args={"levels": [1], "ops": ["+"]}', '--d_model=16', '--num_layers=1',
    '--num_heads=2', '--ffn_dim=32', '--sft_steps=4', '--sft_batch_size=8', '--sft_num_demos=32',
    '--rl_steps=8', '--num_prompts=4', '--group_size=2', '--num_epochs=2', '--num_minibatches=2',
    '--max_new_tokens=4', '--rl_pool_size=16', '--eval_num=4', '--eval_samples=2',
    '--eval_every=4', '--checkpoint_every=2', '--keep_checkpoints=2', '--console=false',
    '--curriculum=reinforce_ada', '--curriculum_args={"samples_per_round": 2, "max_rounds": 2}',
    '--seed=3', '--track_ref_kl=true',
    # Resumption restores the stale sampler policies too (an asynchronous trainer's queue).
    '--rollout_staleness=2',
]
TIMING = ('time', 'tokens_per_sec')


def _env():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  return env


def _cmd(workdir):
  return [sys.executable, '-m', 'experiments.launch', f'--workdir={workdir}', *FLAGS]


def _run(workdir):
  result = subprocess.run(_cmd(workdir), capture_output=True, text=True, cwd=ROOT,
                          env=_env(), timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _records(workdir):
  out = []
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      r = json.loads(line)
      out.append({k: v for k, v in r.items() if not any(t in k for t in TIMING)})
  return out


def _max_step(workdir):
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return 0
  steps = [0]
  with open(path) as f:
    for line in f:
      try:
        steps.append(json.loads(line)['step'])
      except (ValueError, KeyError):
        pass
  return max(steps)


def _corrupt(step_dir):
  """Truncates every array file of a checkpoint step."""
  n = 0
  for root, _, files in os.walk(os.path.join(step_dir, 'state')):
    if os.path.basename(root) == 'd':
      for name in files:
        with open(os.path.join(root, name), 'r+b') as fh:
          fh.truncate(5)
        n += 1
  assert n


def _check_run_outputs(workdir):
  """What one run leaves in its workdir: metrics of every kind, summary, TensorBoard, plot."""
  from experiments import plot
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  rl = [r for r in records if 'reward_mean' in r]
  assert [r['step'] for r in rl] == list(range(5, 13))
  required = ['reward_mean', 'reward_std', 'pass_rate', 'response_length', 'truncation_rate',
              'entropy', 'kl_ref', 'ratio/mean', 'ratio/max', 'ratio/min', 'loss/clip_frac',
              'logp_diff/trainer_sampler_mean', 'logp_diff/trainer_sampler_max',
              'tokens_per_sec', 'step_time', 'loss/total', 'grad_norm']
  for key in required:
    assert key in rl[0], key
  # The trainer re-scores what the sampler drew with the same parameters: a tiny gap.
  assert rl[0]['logp_diff/trainer_sampler_max'] < 1e-4
  assert [r['step'] for r in records if 'sft/nll' in r] == [1, 2, 3, 4]
  assert [r['step'] for r in records if 'eval/greedy_accuracy' in r] == [4, 8, 12]
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  for key in ('eval/greedy_accuracy', 'eval/sampled_pass@1', 'eval/pass@2'):
    assert 0.0 <= summary['before'][key] <= 1.0 and 0.0 <= summary['after'][key] <= 1.0
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  png = plot.plot_workdirs([str(workdir)], os.path.join(workdir, 'curves.png'))
  assert os.path.getsize(png) > 1000


def test_sigkill_then_restart_matches_uninterrupted(tmp_path):
  ref_dir = tmp_path / 'uninterrupted'
  _run(ref_dir)
  _check_run_outputs(ref_dir)
  workdir = tmp_path / 'killed'
  proc = subprocess.Popen(_cmd(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          cwd=ROOT, env=_env())
  deadline = time.time() + 900
  # Kill in the RL phase (steps 5..12), after the checkpoint of step 6.
  while _max_step(workdir) < 7:
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    assert time.time() < deadline
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert _max_step(workdir) < 12, 'the run finished before it could be killed'
  ckpt_dir = workdir / 'checkpoints'
  steps = sorted(int(p) for p in os.listdir(ckpt_dir) if p.isdigit())
  assert len(steps) == 2 and steps[-1] < 12, steps
  # The restart finds its latest checkpoint corrupted and falls back to the previous one.
  _corrupt(ckpt_dir / str(steps[-1]))
  result = _run(workdir)
  assert 'CheckpointFallbackWarning' in result.stderr, result.stderr[-3000:]
  assert f'restored the previous checkpoint, step {steps[0]}' in result.stderr
  assert _records(workdir) == _records(ref_dir)
  with open(workdir / 'summary.json') as f, open(ref_dir / 'summary.json') as g:
    a, b = json.load(f), json.load(g)
  for k in ('before', 'after'):
    a[k].pop('eval/time'), b[k].pop('eval/time')
    assert a[k] == b[k]
