"""Tests of the launcher: flag validation and the flagfiles.

The end-to-end runs of the launcher are in tests/test_resume.py.
"""

import dataclasses
import glob
import os
import re
import subprocess
import sys

import pytest
from absl import flags

from experiments import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _launch(args, tmp_path, timeout=120):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  return subprocess.run([sys.executable, '-m', 'experiments.launch',
                         f'--workdir={tmp_path}', *args], capture_output=True, text=True,
                        cwd=ROOT, env=env, timeout=timeout)


@pytest.mark.parametrize('args, pattern', [
    (['--estimator=sgd_magic'], r'--estimator.*grpo'),
    (['--num_prompts=32', '--num_minibatches=3'], r'--num_minibatches=3.*--num_prompts=32'),
])
def test_invalid_flags_fail_at_startup_naming_the_flag(tmp_path, args, pattern):
  result = _launch(args, tmp_path)
  assert result.returncode != 0
  assert re.search(pattern, result.stderr, re.S), result.stderr[-2000:]
  # Nothing was built: no checkpoint, no metrics.
  assert not os.path.exists(os.path.join(tmp_path, 'checkpoints'))



def test_a_flag_that_fails_when_the_data_is_built_prints_one_line(tmp_path):
  # Level-1 addition has 55 distinct problems: more demonstrations than that is a user mistake.
  result = _launch(['--task_args={"levels": [1], "ops": ["+"]}', '--sft_num_demos=500',
                    '--sft_steps=1', '--rl_steps=0', '--model=micro'], tmp_path, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  fatal = [line for line in result.stderr.splitlines() if line.startswith('FATAL')]
  assert len(fatal) == 1 and '--sft_num_demos' in fatal[0], result.stderr[-2000:]

@pytest.mark.parametrize('args, pattern', [
    (['--aggregation=mean'], r'--aggregation.*token-mean'),
    (['--group_size=0'], r'--group_size'),
    (['--task_args=levels=3'], r'--task_args must be a JSON object'),
    (['--mesh_data=3'], r'--mesh_data x --mesh_fsdp = 3'),
    (['--estimator=topr', '--is_correction=tis'], r'--is_correction=tis.*--estimator=topr'),
    (['--sft_levels=1:x'], r'--sft_levels'),
    (['--demo_error=systematic'], r'--demo_error=systematic.*--demo_error_rate=0'),
])
def test_invalid_flags_fail_when_parsed(args, pattern):
  """The same checks in-process: absl's own (enums, bounds) then `Config.validate`."""
  fv = flags.FlagValues()
  config_lib.define_flags(fv)
  with pytest.raises((flags.Error, ValueError), match=pattern):
    fv(['prog', *args])
    config_lib.config_from_flags(fv)


@pytest.mark.parametrize('field, value, pattern', [
    ('estimator', 'nope', r"--estimator='nope' is invalid; valid values: \[.*'grpo'"),
    ('temperature', 0.0, r'--temperature=0.0 is invalid; it must be > 0'),
    ('top_p', 1.5, r'--top_p=1.5 is invalid; it must be <= 1'),
    ('curriculum', 'random', r"--curriculum='random' is invalid; valid values: \[.*'uniform'"),
    ('tokenizer', 'words', r"--tokenizer='words' is invalid"),
    ('kl_estimator', 'k4', r"--kl_estimator='k4'"),
])
def test_config_validate_names_flag_and_valid_values(field, value, pattern):
  with pytest.raises(ValueError, match=pattern):
    config_lib.Config(**{field: value}).validate()


def test_every_field_is_a_flag_with_the_same_default():
  fv = flags.FlagValues()
  config_lib.define_flags(fv)
  fv(['prog'])
  for f in dataclasses.fields(config_lib.Config):
    assert fv[f.name].value == f.default, f.name
  assert config_lib.config_from_flags(fv) == config_lib.Config().validate()
  # The unset defaults are filled in from the other flags: a fresh model gets a warm start.
  assert config_lib.Config().sft_steps is None and config_lib.Config().tokenizer == ''
  resolved = config_lib.Config().validate()
  assert resolved.sft_steps == config_lib.DEFAULT_SFT_STEPS == 300
  assert resolved.tokenizer == 'char'
  assert config_lib.Config(sft_steps=7).validate().sft_steps == 7


def _flagfiles():
  return sorted(glob.glob(os.path.join(ROOT, 'experiments', 'configs', '*.flags')))


def test_there_are_flagfiles():
  names = [os.path.basename(p) for p in _flagfiles()]
  assert 'arithmetic_grpo.flags' in names


@pytest.mark.parametrize('path', _flagfiles(), ids=os.path.basename)
def test_flagfile_header_and_values(path, tmp_path):
  with open(path) as f:
    text = f.read()
  header = []
  for line in text.splitlines():
    if not line.startswith('#'):
      break
    header.append(line.lower())
  header = '\n'.join(header)
  assert 'python -m experiments.' in header and os.path.basename(path) in header
  assert 'run time' in header and 'expected result' in header
  fv = flags.FlagValues()
  config_lib.define_flags(fv)
  fv(['prog', f'--flagfile={path}'] + _local_files(path, tmp_path))
  config_lib.config_from_flags(fv)  # validates


def _local_files(path, tmp_path):
  """Flags pointing a flagfile's /tmp inputs at files the test makes (the checkpoint and prompts
  that scripts/make_tiny_hf_checkpoint.py writes before the worked example runs)."""
  if os.path.basename(path) != 'hf_word_problems.flags':
    return []
  out, data = str(tmp_path / 'base'), str(tmp_path / 'data')
  subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'make_tiny_hf_checkpoint.py'),
                  f'--out={out}', f'--data={data}', '--num_train=50', '--num_test=10'],
                 check=True, capture_output=True)
  return [f'--init_from_hf={out}', f'--prompt_file={data}/train.jsonl',
          '--task_args={"test_path": "%s/test.jsonl"}' % data]


def test_init_from_hf_and_from_workdir_load_the_weights(tmp_path):
  """`--init_from_hf` loads a safetensors checkpoint, `--init_from_workdir` another run's
  parameters (both checked against the source arrays; nothing is compiled or trained)."""
  import jax
  import numpy as np
  from flax import nnx
  from experiments.train import Harness
  from rljax.models import Transformer, TransformerConfig
  from rljax.models import hf
  from rljax.train import checkpoint as ckpt_lib
  from rljax.train import train_step as ts
  cfg = TransformerConfig(vocab_size=40, d_model=16, num_layers=1, num_heads=2, num_kv_heads=1,
                          head_dim=8, ffn_dim=32, max_seq_len=32)
  model = Transformer(cfg, rngs=nnx.Rngs(7))
  hf_dir = tmp_path / 'hf'
  hf.to_hf(model, str(hf_dir))
  # The checkpoint's tokenizer is the default: a character tokenizer of 19 ids (< 40).
  from tests import hf_checkpoint  # pylint: disable=g-import-not-at-top
  hf_checkpoint.build_tokenizer().save(str(hf_dir / 'tokenizer.json'))
  (hf_dir / 'tokenizer_config.json').write_text('{"bos_token": "<s>", "eos_token": "</s>"}')
  base = dict(task_args='{"levels": [1], "ops": ["+"]}', sft_steps=0, rl_steps=1,
              rl_pool_size=8, eval_num=4, num_prompts=4, group_size=2, num_minibatches=1,
              console=False, tensorboard=False)
  h = Harness(config_lib.Config(init_from_hf=str(hf_dir), **base), str(tmp_path / 'a'))
  want = jax.tree.leaves(nnx.state(model))
  got = jax.tree.leaves(h.init_params)
  assert len(got) == len(want)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)
  h.close()
  # A finished run's checkpoint (here: written by hand) seeds --init_from_workdir.
  small = dict(base, d_model=16, num_layers=1, num_heads=2, ffn_dim=32)
  h0 = Harness(config_lib.Config(**small), str(tmp_path / 'src'))
  params = jax.tree.map(lambda x: x + 1.0, h0.init_params)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / 'src' / 'checkpoints'))
  ckpt.save(3, {'train': ts.init_train_state(params, h0.sft_tx), 'rng': np.zeros(2, np.uint32)},
            {'layout': 'sft'})
  ckpt.close()
  h0.close()
  h2 = Harness(config_lib.Config(init_from_workdir=str(tmp_path / 'src'), **small),
               str(tmp_path / 'b'))
  for a, b in zip(jax.tree.leaves(h2.init_params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  h2.close()


def test_corrupt_demonstrations_is_seeded_and_changes_only_answers():
  from experiments.train import corrupt_demonstrations
  from rljax.data import tasks
  task = tasks.get_task('arithmetic', levels=(3,), ops=('+',), seed=0)
  examples = task.examples('train', 2000)
  noisy = corrupt_demonstrations(examples, 0.3, seed=5)
  assert noisy == corrupt_demonstrations(examples, 0.3, seed=5)
  assert noisy != corrupt_demonstrations(examples, 0.3, seed=6)
  assert [e.prompt for e in noisy] == [e.prompt for e in examples]
  wrong = [not task.is_correct(e.prompt, e.demonstration) for e in noisy]
  # Bernoulli(0.3) over 2000 examples: within 5 standard deviations (about 0.05).
  assert abs(sum(wrong) / len(wrong) - 0.3) < 0.05
  assert corrupt_demonstrations(examples, 0.0, seed=5) == list(examples)


def test_systematic_teacher_drops_the_carry_on_a_fraction_of_the_problems_it_applies_to():
  from experiments.train import corrupt_demonstrations
  from rljax.data import tasks
  task = tasks.get_task('arithmetic', levels=(3,), ops=('+',), seed=0)
  examples = task.examples('train', 2000)
  flawed = corrupt_demonstrations(examples, 0.6, seed=5, task=task, kind='systematic')
  assert flawed == corrupt_demonstrations(examples, 0.6, seed=5, task=task, kind='systematic')
  carry = [e.metadata['a'] + e.metadata['b'] >= 1000 for e in examples]
  wrong = [not task.is_correct(e.prompt, e.demonstration) for e in flawed]
  # Only problems with a carry out of the hundreds are wrong, and then as the last 3 digits.
  assert not any(w and not c for w, c in zip(wrong, carry))
  for e, w in zip(flawed, wrong):
    if w:
      assert e.demonstration == str(e.metadata['a'] + e.metadata['b'])[1:]
  # Bernoulli(0.6) over the ~1200 carry problems: within 5 standard deviations (about 0.07).
  assert abs(sum(wrong) / sum(carry) - 0.6) < 0.07
  # A task without a systematic error for these examples is an error, not a silent no-op.
  other = tasks.get_task('arithmetic', levels=(3,), ops=('*',), seed=0)
  with pytest.raises(ValueError, match='no systematic error'):
    corrupt_demonstrations(other.examples('train', 50), 0.6, seed=5, task=other,
                           kind='systematic')
