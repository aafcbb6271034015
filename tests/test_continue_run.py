"""Runs that continue: a finished workdir given more `--rl_steps` trains the extra steps; one whose
`config.json` differs in a flag that changes the run is refused (or continued with `--override`);
an unchanged finished one reprints its summary and says it is complete.
"""

import dataclasses
import json
import logging
import os
import subprocess
import sys

import pytest

from experiments import config as config_lib
from experiments import continuation
from experiments import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = dict(task_args='{"levels": [1], "ops": ["+"]}', d_model=16, num_layers=1, num_heads=2,
            ffn_dim=32, sft_steps=0, rl_steps=2, rl_pool_size=8, eval_num=4, eval_samples=2,
            num_prompts=4, group_size=2, num_minibatches=1, num_epochs=1, max_new_tokens=3,
            eval_every=0, console=False, tensorboard=False, seed=1)


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _untimed(records):
  return [{k: v for k, v in r.items() if 'time' not in k and 'tokens_per_sec' not in k}
          for r in records]


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A workdir whose run of 2 RL steps finished, then was given --rl_steps=3."""
  workdir = str(tmp_path_factory.mktemp('run'))
  first = train.train_and_evaluate(config_lib.Config(**BASE), workdir)
  records = _records(workdir)
  second = train.train_and_evaluate(config_lib.Config(**dict(BASE, rl_steps=3)), workdir)
  return workdir, first, records, second


def test_the_continued_run_equals_an_uninterrupted_one(finished, tmp_path):
  workdir = finished[0]
  reference = str(tmp_path / 'uninterrupted')
  train.train_and_evaluate(config_lib.Config(**dict(BASE, rl_steps=3)), reference)
  want = _untimed(_records(reference))
  # The continued run has one more record: the first run's "after" evaluation at step 2.
  got = [r for r in _untimed(_records(workdir))
         if not (r['step'] == 2 and 'eval/greedy_accuracy' in r)]
  assert got == want


def test_more_rl_steps_continue_a_finished_run(finished):
  workdir, first, first_records, second = finished
  records = _records(workdir)
  assert [r['step'] for r in records if 'reward_mean' in r] == [1, 2, 3]
  # The first run's records are kept as they were; step 3 is new.
  assert records[:len(first_records)] == first_records
  evals = [r['step'] for r in records if 'eval/greedy_accuracy' in r]
  assert evals == [0, 2, 3]  # before, the old "after", the new "after" at the new end.
  assert second['before'] == first['before']
  step3 = [r for r in records if r['step'] == 3 and 'eval/greedy_accuracy' in r][0]
  assert second['after']['eval/greedy_accuracy'] == step3['eval/greedy_accuracy']
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['rl_steps'] == 3
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f)['after'] == second['after']


def test_an_unchanged_finished_run_says_it_is_complete(finished, caplog, capsys):
  workdir = finished[0]
  before = _records(workdir)
  with caplog.at_level(logging.WARNING, logger='experiments.train'):
    summary = train.train_and_evaluate(
        config_lib.Config(**dict(BASE, rl_steps=3, console=True)), workdir)
  assert 'already complete (step 3)' in caplog.text
  assert summary['text'] in capsys.readouterr().out  # The console prints the summary.
  assert _records(workdir) == before  # Nothing trained, nothing written.
  assert summary['after'] == finished[3]['after']


def test_a_differing_flag_is_refused_naming_old_and_new_values(finished):
  workdir = finished[0]
  changed = config_lib.Config(**dict(BASE, rl_steps=3, learning_rate=3e-4, top_k=2))
  with pytest.raises(config_lib.FlagValueError) as e:
    train.Harness(changed, workdir)
  message = str(e.value)
  assert '\n' not in message and '--override' in message
  assert '--learning_rate: 0.0001 there, 0.0003 now' in message
  assert '--top_k: 0 there, 2 now' in message
  # Fewer RL steps than the run has is a difference too (--rl_steps can only grow).
  with pytest.raises(config_lib.FlagValueError, match='--rl_steps: 3 there, 2 now'):
    train.Harness(config_lib.Config(**BASE), workdir)
  # Logging and checkpoint cadence are not.
  same = config_lib.Config(**dict(BASE, rl_steps=3, log_every=5, checkpoint_every=7,
                                  console=True))
  assert continuation.check_workdir(workdir, same.validate()) == []


def test_override_accepts_a_change_but_not_one_of_the_saved_state(finished):
  workdir = finished[0]
  changed = config_lib.Config(**dict(BASE, rl_steps=3, learning_rate=3e-4, override=True))
  assert continuation.check_workdir(workdir, changed.validate()) == [
      ('learning_rate', 1e-4, 3e-4)]
  wider = config_lib.Config(**dict(BASE, rl_steps=3, d_model=32, override=True))
  with pytest.raises(config_lib.FlagValueError, match=r'--d_model: 16 there, 32 now.*even with'):
    continuation.check_workdir(workdir, wider.validate())


def test_the_launcher_refuses_in_one_line(tmp_path):
  # A workdir's config.json is all the check reads: this one is written by hand.
  saved = json.loads(json.dumps(dataclasses.asdict(config_lib.Config(**BASE).validate())))
  saved['kl_coef'] = 0.5
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  flags = [f'--{k}={v}' for k, v in BASE.items()]
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env.pop('XLA_FLAGS', None)
  result = subprocess.run([sys.executable, '-m', 'experiments.launch',
                           f'--workdir={tmp_path}', *flags], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  fatal = [line for line in result.stderr.splitlines() if line.startswith('FATAL')]
  assert len(fatal) == 1 and '--kl_coef: 0.5 there, 0.0 now' in fatal[0], result.stderr[-3000:]
  assert not os.path.exists(tmp_path / 'checkpoints')
