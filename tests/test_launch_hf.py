"""The launcher with a Hugging Face checkpoint (`--init_from_hf`): its tokenizer and chat template
by default, no warm start unless asked, and one-line errors for every bad path, file or size.

The checkpoints are written by transformers (`tests/hf_checkpoint.py`). The error cases run the
launcher as a subprocess and check that stderr holds one `FATAL` line naming the flag and no
traceback.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from experiments import config as config_lib
from tests import hf_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--task_args={"levels": [1], "ops": ["+"]}', '--rl_steps=1', '--rl_pool_size=8',
        '--eval_num=4', '--num_prompts=4', '--group_size=2', '--num_minibatches=1',
        '--console=false', '--tensorboard=false']


@pytest.fixture(scope='module')
def ckpts(tmp_path_factory):
  """Checkpoint directories by name: a good one and one per kind of defect."""
  import shutil
  root = tmp_path_factory.mktemp('hf')
  good = hf_checkpoint.write_checkpoint(root / 'good')
  out = {'good': good}

  def variant(name, remove=(), **tokenizer_kwargs):
    d = str(root / name)
    shutil.copytree(good, d)
    for f in remove:
      os.remove(os.path.join(d, f))
    if tokenizer_kwargs:
      hf_checkpoint.write_tokenizer(d, **tokenizer_kwargs)
    out[name] = d

  variant('no_eos', eos=False)
  variant('big_vocab', extra_tokens=40)
  variant('no_tok', remove=('tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja'))
  variant('no_config', remove=('config.json',))
  variant('no_weights', remove=('model.safetensors',))
  return out


def _launch(args, workdir):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env.pop('XLA_FLAGS', None)  # One CPU device, whatever the parent process has.
  return subprocess.run([sys.executable, '-m', 'experiments.launch', f'--workdir={workdir}',
                         *TINY, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                        timeout=300)


# --------------------------------------------------------------------- tokenizer and template


def test_chat_template_renders_as_transformers_does(ckpts):
  transformers = pytest.importorskip('transformers')
  from rljax.data import tokenizer as tok_lib
  tok = tok_lib.load_checkpoint_tokenizer(ckpts['good'])
  want_tok = transformers.AutoTokenizer.from_pretrained(ckpts['good'])
  for messages in ([{'role': 'user', 'content': '2+7='}],
                   [{'role': 'user', 'content': '1+1='}, {'role': 'assistant', 'content': '2'},
                    {'role': 'user', 'content': '3+4='}]):
    want = want_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert tok.chat_template.render(messages, add_generation_prompt=True) == want
    assert tok.encode(want) == want_tok(want, add_special_tokens=False)['input_ids']
  assert tok.chat_template.render_prompt('2+7=') == '<s><|user|>2+7=<|assistant|>'
  # The template's raise_exception helper raises, as in transformers.
  import jinja2
  with pytest.raises(jinja2.exceptions.TemplateError, match='only user and assistant'):
    tok.chat_template.render([{'role': 'system', 'content': 'x'}])


def test_eos_from_generation_config(tmp_path):
  import json
  from rljax.data import tokenizer as tok_lib
  hf_checkpoint.build_tokenizer().save(str(tmp_path / 'tokenizer.json'))
  (tmp_path / 'generation_config.json').write_text(json.dumps({'eos_token_id': [2, 1]}))
  tok = tok_lib.HFTokenizer.load(tmp_path)
  assert tok.eos_id == 2 and tok.pad_id == 2 and tok.chat_template is None
  # Sampling stops at every end token generate() stops at (an instruct model's end of turn and
  # end of text), the configured eos first.
  assert tok.stop_ids == (2, 1)
  assert tok_lib.HFTokenizer.load(tmp_path, eos_token=tok.id_to_piece(1)).stop_ids == (1, 2)


def test_checkpoint_tokenizer_and_template_are_the_defaults(ckpts, tmp_path):
  from experiments.data import build_data
  from rljax.data import tokenizer as tok_lib
  base = dict(task_args='{"levels": [1], "ops": ["+"]}', rl_steps=1, rl_pool_size=8,
              eval_num=4, num_prompts=4, group_size=2, num_minibatches=1)
  c = config_lib.Config(init_from_hf=ckpts['good'], **base).validate()
  assert c.sft_steps == 0 and c.tokenizer == ''  # No warm start; the checkpoint's tokenizer.
  data = build_data(c, str(tmp_path))
  assert isinstance(data.tok, tok_lib.HFTokenizer) and data.tok.vocab_size == 19
  row = data.eval_ids[0][data.eval_mask[0].astype(bool)].tolist()
  # bos, <|user|>, the prompt's characters, <|assistant|>: the rendered template's ids.
  assert row == [1, 3] + [5 + hf_checkpoint.CHARS.index(ch) for ch in data.eval_prompts[0]] + [4]
  # The verifier still reads the task's own text.
  assert re.fullmatch(r'\d\+\d=', data.eval_prompts[0])
  raw = build_data(c.replace(chat_template=False), str(tmp_path))
  row = raw.eval_ids[0][raw.eval_mask[0].astype(bool)].tolist()
  assert row == [1] + [5 + hf_checkpoint.CHARS.index(ch) for ch in raw.eval_prompts[0]]
  # An explicit --sft_steps is honoured; --tokenizer accepts the tokenizer.json path.
  explicit = config_lib.Config(init_from_hf=ckpts['good'], sft_steps=5, sft_num_demos=16,
                               tokenizer=os.path.join(ckpts['good'], 'tokenizer.json'), **base)
  assert explicit.validate().sft_steps == 5
  assert build_data(explicit.validate(), str(tmp_path)).tok.vocab_size == 19
  np.testing.assert_array_equal(build_data(explicit.validate(), str(tmp_path)).eval_ids,
                                data.eval_ids)


def test_bad_tokenizer_value_lists_every_accepted_form():
  with pytest.raises(ValueError) as e:
    config_lib.Config(tokenizer='words').validate()
  for form in ('char', 'bpe', 'unigram', 'tokenizer.json', '.model', 'unset'):
    assert form in str(e.value)


# --------------------------------------------------------------------- one-line errors

_BAD = [
    ('missing_dir', lambda d, t: [f'--init_from_hf={t}/nope'], r'--init_from_hf=.*no such'),
    ('no_config', lambda d, t: [f'--init_from_hf={d["no_config"]}'],
     r'--init_from_hf=.*no config\.json'),
    ('no_weights', lambda d, t: [f'--init_from_hf={d["no_weights"]}'],
     r'--init_from_hf=.*no weights'),
    ('no_tokenizer', lambda d, t: [f'--init_from_hf={d["no_tok"]}'],
     r'--init_from_hf=.*no tokenizer: .*no_tok/tokenizer\.json'),
    ('no_eos', lambda d, t: [f'--init_from_hf={d["no_eos"]}'],
     r'--init_from_hf=.*no end-of-sequence token'),
    ('vocab', lambda d, t: [f'--init_from_hf={d["big_vocab"]}'],
     r'--tokenizer.*59 ids.*--init_from_hf=.*32 embeddings'),
    ('task_tokenizer', lambda d, t: [f'--init_from_hf={d["good"]}', '--tokenizer=char'],
     r'--tokenizer=char.*--init_from_hf='),
    ('tokenizer_file', lambda d, t: [f'--tokenizer={t}/missing/tokenizer.json'],
     r'--tokenizer=.*missing/tokenizer\.json.*no such file'),
    ('workdir', lambda d, t: [f'--init_from_workdir={t}/nope'],
     r'--init_from_workdir=.*no such directory'),
    ('mesh', lambda d, t: ['--mesh_data=2', '--mesh_tensor=2'],
     r'--mesh_data=2 x --mesh_fsdp=1 x --mesh_tensor=2 = 4 devices.*only 1'),
]


# Errors raised once the run builds its data or model, and one of the start-up checks, through
# the launcher; the other start-up checks in-process (the launcher prints their ValueError as one
# FATAL line, as the first case shows).
_LAUNCHED = ('missing_dir', 'no_eos', 'vocab', 'mesh')


@pytest.mark.parametrize('name, args, pattern', [b for b in _BAD if b[0] in _LAUNCHED],
                         ids=_LAUNCHED)
def test_bad_path_file_or_size_is_one_fatal_line(ckpts, tmp_path, name, args, pattern):
  del name
  result = _launch(args(ckpts, tmp_path), tmp_path / 'run')
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  fatal = [line for line in result.stderr.splitlines() if line.startswith('FATAL')]
  assert len(fatal) == 1 and re.search(pattern, fatal[0]), result.stderr[-3000:]
  # Nothing was compiled or trained: no checkpoint, no metrics.
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')
  assert not os.path.exists(tmp_path / 'run' / 'metrics.jsonl')


@pytest.mark.parametrize('name, args, pattern', [b for b in _BAD if b[0] not in _LAUNCHED],
                         ids=[b[0] for b in _BAD if b[0] not in _LAUNCHED])
def test_bad_path_fails_when_the_flags_are_parsed(ckpts, tmp_path, name, args, pattern):
  del name
  from absl import flags
  fv = flags.FlagValues()
  config_lib.define_flags(fv)
  fv(['prog', *TINY, *args(ckpts, tmp_path)])
  with pytest.raises(ValueError) as e:
    config_lib.config_from_flags(fv)
  assert '\n' not in str(e.value) and re.search(pattern, str(e.value)), str(e.value)


def test_rl_from_a_checkpoint_with_its_tokenizer_and_template(ckpts, tmp_path):
  """A run on the checkpoint: no warm start, prompts through the template, RL steps, a summary."""
  import json
  from experiments import train
  config = config_lib.Config(
      init_from_hf=ckpts['good'], task_args='{"levels": [1], "ops": ["+"]}', rl_steps=2,
      rl_pool_size=8, eval_num=4, eval_samples=2, num_prompts=4, group_size=2,
      num_minibatches=1, num_epochs=1, max_new_tokens=3, eval_every=0, console=False,
      tensorboard=False)
  harness = train.Harness(config, str(tmp_path))
  # The prompt width is that of the rendered template: bos, <|user|>, 4 characters, <|assistant|>.
  assert harness.data.prompt_width == 7 and harness.data.chat_template is not None
  summary = harness.run()
  with open(tmp_path / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  assert not [r for r in records if 'sft/nll' in r]  # No warm start unless asked.
  assert [r['step'] for r in records if 'reward_mean' in r] == [1, 2]
  assert [r['step'] for r in records if 'eval/greedy_accuracy' in r] == [0, 2]
  for key in ('eval/greedy_accuracy', 'eval/sampled_pass@1'):
    assert 0.0 <= summary['before'][key] <= 1.0 and 0.0 <= summary['after'][key] <= 1.0
  with open(tmp_path / 'config.json') as f:
    saved = json.load(f)
  assert saved['sft_steps'] == 0 and saved['tokenizer'] == ''


def test_chat_template_docstring_example():
  import doctest
  from rljax.data import chat_template
  assert doctest.testmod(chat_template, raise_on_error=True).attempted > 0
