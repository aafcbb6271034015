"""User reward functions (`--reward=module:function`): loading, calling, failures; and the
launcher end to end with a reward module written by the test (on the GSM8K-format prompt files
of tests/test_prompt_file.py, whose FAIL prompt makes the function raise)."""

import logging
import math
import os

import numpy as np
import pytest

from experiments import config as config_lib
from rljax.data import rewards
from rljax.data import tasks
from tests.test_prompt_file import launch
from tests.test_prompt_file import prompt_files
from tests.test_prompt_file import rl_records
from tests.test_prompt_file import TINY


def _module(tmp_path, name, body):
  path = tmp_path / f'{name}.py'
  path.write_text(body)
  return str(path)


# ------------------------------------------------------------------ loading


def test_load_by_module_name_and_by_file(tmp_path, monkeypatch):
  _module(tmp_path, 'user_rewards_a', 'def score(p, c, a):\n  return [1.5] * len(c)\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  by_name = rewards.load_reward('user_rewards_a:score')
  assert by_name(['p'], ['c'], [None]) == [1.5]
  path = _module(tmp_path, 'user_rewards_b', 'def score(p, c, a):\n  return [2.5] * len(c)\n')
  assert rewards.load_reward(f'{path}:score')(['p'], ['c'], [None]) == [2.5]


@pytest.mark.parametrize('spec, pattern', [
    ('no_colon', 'not of the form module:function'),
    ('module:', 'not of the form'),
    ('rljax_no_such_module:fn', r"cannot import 'rljax_no_such_module': ModuleNotFoundError"),
    ('math:no_such_fn', r"'math' has no attribute 'no_such_fn'"),
    ('math:pi', r'math:pi is a float, not a function'),
    ('/no/such/file.py:fn', r'/no/such/file.py does not exist'),
])
def test_bad_specs(spec, pattern):
  with pytest.raises(rewards.RewardError, match=pattern):
    rewards.load_reward(spec)


def test_a_module_that_fails_on_import(tmp_path):
  path = _module(tmp_path, 'broken', 'import os\nraise RuntimeError("needs a GPU")\n')
  with pytest.raises(rewards.RewardError, match=r'RuntimeError: needs a GPU'):
    rewards.load_reward(f'{path}:fn')


def test_a_bad_reward_flag_fails_at_validation_naming_it(tmp_path):
  path = _module(tmp_path, 'ok', 'def fn(p, c, a):\n  return [0.0] * len(c)\n')
  config_lib.Config(reward=f'{path}:fn').validate()
  with pytest.raises(ValueError, match=rf'--reward={path}:nope: .* has no attribute'):
    config_lib.Config(reward=f'{path}:nope').validate()


# ------------------------------------------------------------------ calling


def test_batched_call_passes_aligned_lists_and_metadata_when_asked():
  seen = {}

  def plain(prompts, completions, answers):
    seen['plain'] = (prompts, completions, answers)
    return np.array([0.25, 0.5])

  def with_kwargs(prompts, completions, answers, **kwargs):
    seen['kwargs'] = kwargs
    return (1, 2)

  out = rewards.RewardFunction(plain)(['p', 'q'], ['c', 'd'], ['a', None], [{'x': 1}, {}])
  assert out.dtype == np.float32 and out.tolist() == [0.25, 0.5]
  assert seen['plain'] == (['p', 'q'], ['c', 'd'], ['a', None])
  rewards.RewardFunction(with_kwargs)(['p', 'q'], ['c', 'd'], ['a', None], [{'x': 1}, {}])
  assert seen['kwargs'] == {'metadata': [{'x': 1}, {}]}


def test_a_raising_batch_falls_back_to_items_and_counts_the_failures(caplog):
  calls = []

  def picky(prompts, completions, answers):
    calls.append(len(completions))
    if any(c == 'bad' for c in completions):
      raise KeyError('cannot score "bad"')
    return [float(len(c)) for c in completions]

  fn = rewards.RewardFunction(picky, label='--reward=picky')
  with caplog.at_level(logging.WARNING):
    out = fn(['p'] * 4, ['ok', 'bad', 'fine', 'bad'], [None] * 4)
    out2 = fn(['p'] * 2, ['bad', 'x'], [None] * 2)
  assert out.tolist() == [2.0, 0.0, 4.0, 0.0] and out2.tolist() == [0.0, 1.0]
  assert calls == [4, 1, 1, 1, 1, 2, 1, 1]   # each failing batch, then item by item
  assert fn.errors == 3
  warnings = [r.getMessage() for r in caplog.records if 'picky' in r.getMessage()]
  assert len(warnings) == 1, warnings   # the first message only
  assert 'KeyError' in warnings[0] and 'cannot score' in warnings[0]


@pytest.mark.parametrize('returned, pattern', [
    ([1.0], r'returned shape \(1,\) for 2 completions'),
    ([[1.0, 2.0]], r'returned shape \(1, 2\) for 2'),
    ([1.0, math.nan], r'returned nan for completion 1 \(1 non-finite values of 2\)'),
    ([math.inf, 0.0], r'returned inf for completion 0'),
    (['high', 'low'], r'returned list values that are not numbers'),
    (None, r'returned shape \(\) for 2'),
])
def test_a_return_that_is_not_rewards_is_an_error_naming_the_function(returned, pattern):
  fn = rewards.RewardFunction(lambda p, c, a: returned, label='--reward=m:f',
                              error_class=config_lib.FlagValueError)
  with pytest.raises(config_lib.FlagValueError, match='reward --reward=m:f ' + pattern):
    fn(['p', 'q'], ['c', 'd'], [None, None])


def test_task_with_reward_takes_rewards_from_the_function_and_correctness_from_the_task():
  task = tasks.get_task('arithmetic', levels=(1,), ops=('+',))
  examples = task.examples('train', 2)
  got = {}

  def fn(prompts, completions, answers):
    got['answers'] = answers
    return [0.5 * len(c) for c in completions]

  wrapped = rewards.TaskWithReward(task, rewards.RewardFunction(fn), examples)
  prompts = [examples[0].prompt, examples[1].prompt, 'unseen prompt']
  completions = [examples[0].answer, 'wrong', 'abc']
  r, correct = wrapped.grade_batch(prompts[:2], completions[:2])
  assert r.tolist() == [0.5 * len(examples[0].answer), 2.5]
  assert correct.tolist() == [True, False]
  assert got['answers'] == [examples[0].answer, examples[1].answer]
  assert wrapped.levels == task.levels and wrapped.reward_errors == 0
  by_reward = rewards.TaskWithReward(task, rewards.RewardFunction(lambda p, c, a: [0.0, 2.0]),
                                     examples, correct_from_reward=True)
  assert by_reward.grade_batch(prompts[:2], completions[:2])[1].tolist() == [False, True]


# ------------------------------------------------------------------ the launcher end to end

REWARD_MODULE = '''
import os

def reward(prompts, completions, answers):
  with open(os.path.join(os.path.dirname(__file__), 'calls.txt'), 'a') as f:
    f.write(f'{len(completions)}\\n')
  if any(p.startswith('FAIL') for p in prompts):
    raise RuntimeError('no reward for FAIL prompts')
  return [float(a.split('####')[-1].strip() in c) for c, a in zip(completions, answers)]
'''


def test_launch_with_a_reward_module(tmp_path):
  paths = prompt_files(tmp_path)
  module = _module(tmp_path, 'my_reward', REWARD_MODULE)
  result = launch(tmp_path / 'run', f'--prompt_file={paths["train"]}', '--verifier=gsm8k',
                  f'--task_args={{"test_path": "{paths["test"]}"}}', '--sft_steps=0',
                  f'--reward={module}:reward', *TINY)
  assert result.returncode == 0, result.stderr[-3000:]
  # Each RL batch (2 prompts x 2 completions, one prompt FAILs) is called once, raises, and is
  # scored item by item: 2 errors a step. An evaluation (2 test prompts: greedy, then 2 samples
  # each) succeeds in one call per grading.
  calls = [int(n) for n in (tmp_path / 'calls.txt').read_text().split()]
  assert calls == [2, 4] + [4, 1, 1, 1, 1] * 2 + [2, 4], calls
  assert [r['reward/errors'] for r in rl_records(tmp_path / 'run')] == [2.0, 2.0]
  warnings = [line for line in result.stderr.splitlines() if 'no reward for FAIL' in line]
  assert len(warnings) == 1 and f'--reward={module}:reward' in warnings[0], result.stderr[-2000:]


def test_launch_with_a_bad_reward_fails_at_startup(tmp_path):
  module = _module(tmp_path, 'my_reward', REWARD_MODULE)
  result = launch(tmp_path / 'run', f'--reward={module}:rewrad', timeout=120)
  assert result.returncode == 2
  fatal = [line for line in result.stderr.splitlines() if line.startswith('FATAL')]
  assert len(fatal) == 1 and f'--reward={module}:rewrad' in fatal[0], result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_docstring_examples():
  import doctest  # pylint: disable=g-import-not-at-top
  results = doctest.testmod(rewards)
  assert results.attempted and not results.failed
