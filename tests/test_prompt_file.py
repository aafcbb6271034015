"""The `prompt_file` task: JSONL, JSON, Parquet and saved Hugging Face datasets, its splits and
its errors, and the launcher flags that build it.

The two saved-datasets directories under tests/data were written by ``datasets`` 5.2.0
(``Dataset.from_list(rows).save_to_disk(dir)`` and a ``DatasetDict`` of train/test) from the three
rows of `MATH_ROWS`; the task reads them with pyarrow alone.
"""

import json
import os
import subprocess
import sys

import pytest

from experiments import config as config_lib
from experiments import data as data_lib
from rljax.data import tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(__file__), 'data')
MATH_ROWS = [
    ('What is 1/2 + 1/4?', r'We get $\frac{3}{4}$, so the answer is $\boxed{\dfrac{3}{4}}$.'),
    ('What is 2^3?', r'$2^3 = \boxed{8}$.'),
    ('Solve x + 1 = 3.', r'So $x = \boxed{2}$.'),
]
QA = [{'q': f'What is {i} + {i}?', 'a': f'{i} + {i} = {2 * i}\n#### {2 * i}'} for i in range(40)]


def _write_jsonl(path, records):
  with open(path, 'w') as f:
    for r in records:
      f.write(json.dumps(r) + '\n')
  return str(path)


def _task(path, **kwargs):
  return tasks.get_task('prompt_file', path=path, **kwargs)


def test_jsonl_hash_split_is_disjoint_complete_and_fixed_per_prompt(tmp_path):
  path = _write_jsonl(tmp_path / 'qa.jsonl', QA)
  task = _task(path, prompt_field='q', answer_field='a', verifier='gsm8k', test_fraction=0.25,
               template='Q: {prompt}\nA:')
  train, test = task.examples('train'), task.examples('test')
  assert len(train) + len(test) == 40 and 0 < len(test) < 20
  assert not {e.prompt for e in train} & {e.prompt for e in test}
  assert {e.prompt for e in train + test} == {f'Q: {r["q"]}\nA:' for r in QA}
  # The split is a function of the prompt: another seed reorders, never moves a prompt.
  other = _task(path, prompt_field='q', answer_field='a', verifier='gsm8k', test_fraction=0.25,
                template='Q: {prompt}\nA:', seed=5)
  assert {e.prompt for e in other.examples('test')} == {e.prompt for e in test}
  assert [e.prompt for e in other.examples('train')] != [e.prompt for e in train]
  ex = next(e for e in train if e.prompt == 'Q: What is 3 + 3?\nA:')
  assert (ex.answer, ex.demonstration) == ('3 + 3 = 6\n#### 6', '3 + 3 = 6\n#### 6')
  assert ex.metadata['record'] == {'q': 'What is 3 + 3?', 'a': '3 + 3 = 6\n#### 6'}
  rewards, correct = task.grade_batch([ex.prompt] * 4, ['#### 6', 'so 6', '#### 7', ''])
  assert rewards.tolist() == [1.0, 0.0, 0.0, 0.0]
  assert correct.tolist() == [True, False, False, False]
  assert task.failure_counts == {'no_answer_marker': 1, 'empty': 1}
  with pytest.raises(ValueError, match='not a prompt'):
    task.grade('Q: unseen\nA:', '#### 6')


def test_a_json_list_and_parquet_with_other_field_names(tmp_path):
  pq = pytest.importorskip('pyarrow.parquet')
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  rows = [{'text': 'capital of France?', 'label': 'Paris', 'n': 1},
          {'text': 'capital of Italy?', 'label': 'Rome', 'n': 2}]
  (tmp_path / 'rows.json').write_text(json.dumps(rows))
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / 'rows.parquet')
  for name in ('rows.json', 'rows.parquet'):
    task = _task(str(tmp_path / name), prompt_field='text', answer_field='label',
                 verifier='exact', verifier_args={'case_sensitive': False},
                 split_field=None, test_fraction=0.5)
    every = task.examples('train') + task.examples('test')
    assert sorted(e.prompt for e in every) == ['capital of France?', 'capital of Italy?']
    assert task.is_correct('capital of Italy?', ' rome\n')
    assert not task.is_correct('capital of Italy?', 'Paris')


def test_saved_dataset_with_the_boxed_verifier():
  task = _task(os.path.join(DATA, 'prompts_saved_dataset'), prompt_field='problem',
               answer_field='solution', verifier='boxed', test_fraction=0.5)
  every = task.examples('train') + task.examples('test')
  assert sorted(e.prompt for e in every) == sorted(q for q, _ in MATH_ROWS)
  assert task.is_correct('What is 1/2 + 1/4?', r'It is \boxed{0.75}.')
  assert task.is_correct('What is 1/2 + 1/4?', r'\boxed{\frac{3}{4}}')
  assert not task.is_correct('What is 1/2 + 1/4?', r'\boxed{\frac{3}{4}} no, \boxed{1}')
  assert task.is_correct('What is 2^3?', r'\boxed{8}')


def test_saved_dataset_dict_gives_the_splits():
  task = _task(os.path.join(DATA, 'prompts_saved_dataset_dict'), prompt_field='problem',
               answer_field='solution', verifier='boxed')
  assert sorted(e.prompt for e in task.examples('train')) == sorted(q for q, _ in MATH_ROWS[:2])
  assert [e.prompt for e in task.examples('test')] == [MATH_ROWS[2][0]]


def test_split_files_and_test_path_keep_test_prompts_out_of_train(tmp_path):
  train = _write_jsonl(tmp_path / 'train.jsonl', QA[:10])
  _write_jsonl(tmp_path / 'test.jsonl', QA[8:12])   # QA[8], QA[9] in both files
  for task in (_task(str(tmp_path), prompt_field='q', answer_field='a', verifier='gsm8k'),
               _task(train, test_path=str(tmp_path / 'test.jsonl'), prompt_field='q',
                     answer_field='a', verifier='gsm8k')):
    assert sorted(e.prompt for e in task.examples('train')) == sorted(r['q'] for r in QA[:8])
    assert sorted(e.prompt for e in task.examples('test')) == sorted(r['q'] for r in QA[8:12])
    assert task.num_duplicates == 2


def test_split_field_and_duplicate_prompts(tmp_path):
  rows = [{'prompt': 'a', 'answer': '1', 'part': 'train'},
          {'prompt': 'b', 'answer': '2', 'part': 'test'},
          {'prompt': 'a', 'answer': '3', 'part': 'test'}]     # a duplicate prompt: dropped
  task = _task(_write_jsonl(tmp_path / 'p.jsonl', rows), split_field='part', verifier='numeric')
  assert [e.prompt for e in task.examples('train')] == ['a']
  assert [e.prompt for e in task.examples('test')] == ['b']
  assert task.num_duplicates == 1 and task.is_correct('a', 'one: 1')
  rows[0]['part'] = 'validation'
  with pytest.raises(ValueError, match=r"split_field='part': value 'validation'"):
    _task(_write_jsonl(tmp_path / 'q.jsonl', rows), split_field='part')


@pytest.mark.parametrize('records, kwargs, pattern', [
    ([], {}, 'holds no records'),
    ([{'question': 'q', 'answer': '1'}], {}, r"record 1 has no field 'prompt' \(prompt_field="
     r"'prompt'; its fields: \['answer', 'question'\]\)"),
    ([{'prompt': 'q', 'answer': '1'}, {'prompt': 'r'}], {},
     r"record 2 has no field 'answer' \(answer_field="),
    ([{'prompt': 'q', 'answer': 'blue'}], {'verifier': 'numeric'},
     r"record 1: the reference answer 'blue' is not a number \(verifier='numeric'\)"),
    ([{'prompt': ['q'], 'answer': '1'}], {}, r"field 'prompt' \(prompt_field\) must be a string"),
    ([{'prompt': 'q', 'answer': '1'}], {'template': 'Q:'}, 'template must contain'),
    ([{'prompt': 'q'}], {'answer_field': None}, "verifier='exact' needs answer_field"),
])
def test_bad_files_raise_one_message_naming_the_argument(tmp_path, records, kwargs, pattern):
  path = _write_jsonl(tmp_path / 'bad.jsonl', records)
  with pytest.raises(ValueError, match=pattern):
    _task(path, **kwargs)


def test_missing_paths_and_unknown_formats(tmp_path):
  with pytest.raises(ValueError, match='nope.jsonl does not exist'):
    _task(str(tmp_path / 'nope.jsonl'))
  (tmp_path / 'rows.csv').write_text('prompt,answer\n')
  with pytest.raises(ValueError, match='unknown format'):
    _task(str(tmp_path / 'rows.csv'))
  with pytest.raises(ValueError, match='no train'):
    _task(str(tmp_path))
  (tmp_path / 'x.jsonl').write_text('{"prompt": "a"\n')
  with pytest.raises(ValueError, match='x.jsonl:1: not a JSON object'):
    _task(str(tmp_path / 'x.jsonl'))


def test_prompts_only_file_and_tokenizer_corpus(tmp_path):
  path = _write_jsonl(tmp_path / 'p.jsonl', [{'prompt': f'p{i}'} for i in range(6)])
  task = _task(path, answer_field=None, verifier=None, test_fraction=0.5)
  assert task.grade_batch(['p0'], ['x'])[1].tolist() == [False]
  assert {e.demonstration for e in task.examples('train')} == {''}
  with pytest.raises(ValueError, match='given without a verifier'):
    _task(path, answer_field=None, verifier=None, verifier_args={'rel_tol': 0.1})
  # Capped at what the file holds (a generated task would draw 2000).
  corpus = tasks.tokenizer_corpus(task, 2000)
  assert sorted(corpus) == sorted(e.prompt for e in task.examples('train'))


# ------------------------------------------------------------------ launcher flags


def _config(**kw):
  return config_lib.Config(**kw).validate()


def test_a_demonstration_field_without_answers(tmp_path):
  path = _write_jsonl(tmp_path / 'p.jsonl', [{'prompt': 'p', 'demo': 'd'}])
  config = _config(prompt_file=path, answer_field='', verifier='none', reward='math:fsum',
                   task_args='{"demonstration_field": "demo", "test_fraction": 0.5}')
  task = data_lib.build_task(config)
  assert [e.demonstration for s in ('train', 'test') for e in task.examples(s)] == ['d']


def test_flags_build_the_task(tmp_path):
  path = _write_jsonl(tmp_path / 'qa.jsonl', QA)
  config = _config(prompt_file=path, prompt_field='q', answer_field='a', verifier='gsm8k',
                   task_args='{"test_fraction": 0.5, "template": "Q: {prompt}"}')
  task = data_lib.build_task(config)
  assert isinstance(task, tasks.PromptFile) and task.verifier == 'gsm8k'
  assert task.is_correct('Q: What is 4 + 4?', '#### 8')


@pytest.mark.parametrize('kw, pattern', [
    (dict(prompt_file='/no/such.jsonl'), r'--prompt_file=/no/such.jsonl does not exist'),
    (dict(verifier='gsm8k'), r'--verifier applies to --prompt_file'),
    (dict(prompt_field='q'), r'--prompt_field applies to --prompt_file'),
    (dict(prompt_file='FILE', task='countdown'), r'--prompt_file replaces --task'),
    (dict(prompt_file='FILE', verifier='none'), r'--verifier=none needs --reward'),
    (dict(prompt_file='FILE', answer_field=''), r'--answer_field is empty'),
    (dict(prompt_file='FILE', answer_field='', verifier='none', reward='math:fsum'),
     r'--sft_steps=300 needs demonstrations and --answer_field is empty'),
    (dict(prompt_file='FILE', task_args='{"verifier": "exact"}'), r"--task_args sets \['verifier"),
    (dict(prompt_file='FILE', verifier='regex'), r"--verifier='regex' is invalid; valid values"),
])
def test_bad_flags_fail_at_validation(tmp_path, kw, pattern):
  if kw.get('prompt_file') == 'FILE':
    kw['prompt_file'] = _write_jsonl(tmp_path / 'qa.jsonl', QA)
  with pytest.raises(ValueError, match=pattern):
    _config(**kw)


@pytest.mark.parametrize('records, flags, pattern', [
    (QA, dict(prompt_field='question'), r"--prompt_file=.*qa.jsonl.*has no field 'question'"),
    ([], {}, r'--prompt_file=.*holds no records'),
    (QA, dict(prompt_field='q', answer_field='a', task_args='{"colour": 1}'),
     r"--prompt_file=.*--task_args.*unexpected keyword argument 'colour'"),
    (QA, dict(prompt_file='', task='prompt_file'),
     r"--task=prompt_file --task_args={}: .*'path'.*or pass --prompt_file"),
])
def test_data_errors_are_flag_errors(tmp_path, records, flags, pattern):
  flags.setdefault('prompt_file', _write_jsonl(tmp_path / 'qa.jsonl', records))
  config = _config(**flags)
  with pytest.raises(config_lib.FlagValueError, match=pattern):
    data_lib.build_task(config)


def test_unset_counts_take_the_whole_file_and_explicit_ones_are_checked(tmp_path):
  path = _write_jsonl(tmp_path / 'qa.jsonl', QA)
  flags = dict(prompt_file=path, prompt_field='q', answer_field='a', verifier='gsm8k',
               task_args='{"test_fraction": 0.25}')
  task = data_lib.build_task(_config(**flags))
  n_train, n_test = task.split_size('train'), task.split_size('test')
  assert n_train + n_test == len(QA) and n_test > 0
  # Unset --sft_num_demos / --rl_pool_size / --eval_num: every prompt of the file, the RL pool
  # being the train prompts the warm start does not demonstrate.
  sft, pool, evals = data_lib._phase_examples(_config(**flags, sft_steps=0), task)
  assert (len(sft), len(pool), len(evals)) == (0, n_train, n_test)
  sft, pool, evals = data_lib._phase_examples(_config(**flags, sft_num_demos=5), task)
  assert len(sft) == 5 and len(pool) == n_train - 5
  assert not {e.prompt for e in sft} & {e.prompt for e in pool}
  with pytest.raises(config_lib.FlagValueError, match=r'--rl_pool_size .*has \d+ examples'):
    data_lib._phase_examples(_config(**flags, sft_steps=0, rl_pool_size=n_train + 1), task)
  # A generated task keeps the fixed defaults.
  assert tasks.get_task('arithmetic').split_size('train') is None


def test_the_tfds_builder_writes_a_prompt_file(tmp_path):
  from rljax.data import tfds_builders  # pylint: disable=g-import-not-at-top
  kwargs = dict(path=os.path.join(DATA, 'prompts_saved_dataset_dict'), prompt_field='problem',
                answer_field='solution', verifier='boxed')
  sources = tfds_builders.data_sources('prompt_file', tmp_path, **kwargs)
  task = tasks.get_task('prompt_file', **kwargs)
  for split in ('train', 'test'):
    assert tfds_builders.read_examples(sources[split]) == task.examples(split)


# ------------------------------------------------------------------ the launcher end to end

QUESTIONS = {
    'train': [('What is 1 + 1?', 2), ('FAIL: what is 2 + 2?', 4)],  # FAIL: see test_custom_reward
    'test': [('What is 3 + 1?', 4), ('What is 1 + 2?', 3)],
}
TINY = [
    '--d_model=16', '--num_layers=1', '--num_heads=2', '--ffn_dim=32', '--sft_batch_size=2',
    '--sft_num_demos=2', '--rl_steps=2', '--num_prompts=2', '--group_size=2', '--num_epochs=1',
    '--num_minibatches=1', '--max_new_tokens=24', '--rl_pool_size=2', '--rl_pool_disjoint=false',
    '--eval_num=2', '--eval_samples=2', '--console=false', '--tensorboard=false',
    '--prompt_field=question',
]


def prompt_files(tmp_path):
  paths = {}
  for split, rows in QUESTIONS.items():
    paths[split] = tmp_path / f'{split}.jsonl'
    with open(paths[split], 'w') as f:
      for q, a in rows:
        f.write(json.dumps({'question': q, 'answer': f'so it is {a}\n#### {a}'}) + '\n')
  return paths


def launch(workdir, *args, timeout=300):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  return subprocess.run([sys.executable, '-m', 'experiments.launch', f'--workdir={workdir}',
                         *args], capture_output=True, text=True, cwd=ROOT, env=env,
                        timeout=timeout)


def rl_records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if 'reward_mean' in r]


def test_launch_on_a_gsm8k_prompt_file(tmp_path):
  paths = prompt_files(tmp_path)
  result = launch(tmp_path / 'run', f'--prompt_file={paths["train"]}', '--verifier=gsm8k',
                  f'--task_args={{"test_path": "{paths["test"]}"}}', '--sft_steps=2', *TINY)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / 'run' / 'summary.json') as f:
    summary = json.load(f)
  assert 0.0 <= summary['after']['eval/greedy_accuracy'] <= 1.0
  records = rl_records(tmp_path / 'run')
  assert [r['step'] for r in records] == [3, 4]
  assert 'reward/errors' not in records[0]   # only with --reward
