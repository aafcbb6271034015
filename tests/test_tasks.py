"""Tests for rljax.data.tasks: determinism, disjoint splits, verifiers, malformed completions."""

import ast
import fractions
import hashlib
import json
import operator
import os
import re

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from rljax.data import tasks
from rljax.data.tasks import countdown as countdown_lib
from rljax.data.tasks import gsm8k as gsm8k_lib

GENERATED = ('arithmetic', 'countdown', 'sorting', 'reversal')
GSM8K_SAMPLE = os.path.join(os.path.dirname(__file__), 'data', 'gsm8k_sample.jsonl')

MALFORMED = [
    '', ' ', '\n\n', 'é', '🙂' * 100, 'x' * 10_000, '(' * 5000, ')' * 10, '((1+2)', '1+2)',
    '10**10000', '9' * 10_000, '1' * 5000 + '+1', '\x00', '-', '#### ', '####', '1e999',
    'nan', 'inf', '٣', '１２', '<answer>', '\ud800',
]


def _hash_split(name, key, test_fraction):
  """Independent re-implementation of the documented split rule."""
  digest = hashlib.blake2b(f'{name}:{key}'.encode(), digest_size=8).digest()
  return 'test' if int.from_bytes(digest, 'big') / 2**64 < test_fraction else 'train'


_AST_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
            ast.Div: operator.truediv}


def _ast_eval(text):
  """Evaluates a +-*/ integer expression with Python's own parser (independent of the task's)."""

  def ev(node):
    if isinstance(node, ast.Expression):
      return ev(node.body)
    if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
      return _AST_OPS[type(node.op)](ev(node.left), ev(node.right))
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
      return fractions.Fraction(node.value)
    raise ValueError(ast.dump(node))

  return ev(ast.parse(text, mode='eval'))


def _ast_numbers(text):
  return sorted(n.value for n in ast.walk(ast.parse(text, mode='eval'))
                if isinstance(n, ast.Constant))


@pytest.fixture(scope='module')
def gsm8k_task():
  return tasks.get_task('gsm8k', path=GSM8K_SAMPLE, test_fraction=0.3)


def _make(name, **kwargs):
  return tasks.get_task(name, **kwargs)


# ------------------------------------------------------------------------ generation


@pytest.mark.parametrize('name', GENERATED)
def test_examples_are_deterministic_and_prefix_stable(name):
  a = _make(name, seed=3).examples('train', 60)
  b = _make(name, seed=3).examples('train', 60)
  c = _make(name, seed=4).examples('train', 60)
  assert a == b
  assert [e.prompt for e in a] != [e.prompt for e in c]
  assert _make(name, seed=3).examples('train', 25) == a[:25]


@pytest.mark.parametrize('name', GENERATED)
def test_splits_are_disjoint_across_seeds_and_follow_the_hash_rule(name):
  train = _make(name, seed=0).examples('train', 600)
  test = _make(name, seed=1).examples('test', 150)
  train_keys = {e.metadata['key'] for e in train}
  test_keys = {e.metadata['key'] for e in test}
  assert not train_keys & test_keys
  assert not {e.prompt for e in train} & {e.prompt for e in test}
  for split, examples in (('train', train), ('test', test)):
    assert all(e.metadata['split'] == split for e in examples)
    assert all(_hash_split(name, e.metadata['key'], 0.1) == split for e in examples)
  assert len({e.prompt for e in train}) == len(train)  # unique=True by default


def test_split_keys_are_canonical():
  arith = _make('arithmetic')
  assert arith.key(34, '+', 12) == arith.key(12, '+', 34) == '12+34'
  assert arith.key(34, '-', 12) == '34-12'
  cd = _make('countdown')
  assert cd.key([7, 2, 5], 16) == cd.key([2, 5, 7], 16)


def test_test_fraction_is_respected():
  task = _make('reversal', levels=(6,), test_fraction=0.25)
  rng_keys = [f'key{i}' for i in range(4000)]
  frac = sum(task.split_of(k) == 'test' for k in rng_keys) / len(rng_keys)
  assert abs(frac - 0.25) < 0.03


def test_unique_exhaustion_raises_and_unique_false_repeats():
  task = _make('arithmetic', levels=(1,), ops=('+',))  # 55 unordered pairs in all
  with pytest.raises(ValueError, match='nothing new'):
    task.examples('test', 50, level=1)
  repeated = task.examples('test', 50, level=1, unique=False)
  assert len(repeated) == 50 and len({e.prompt for e in repeated}) < 50


def test_invalid_arguments_raise():
  with pytest.raises(ValueError, match='Unknown task'):
    tasks.get_task('chess')
  with pytest.raises(ValueError, match='split'):
    _make('arithmetic').examples('validation', 3)
  with pytest.raises(ValueError, match='level'):
    _make('arithmetic', levels=(1, 2)).examples('train', 3, level=5)
  with pytest.raises(ValueError, match='ops'):
    _make('arithmetic', ops=('/',))
  with pytest.raises(ValueError, match='test_fraction'):
    _make('sorting', test_fraction=1.0)
  with pytest.raises(ValueError, match='alphabet'):
    _make('reversal', alphabet='ab a')
  with pytest.raises(ValueError, match='gsm8k|GSM8K'):
    tasks.get_task('gsm8k')


def test_register_task():
  name = 'arithmetic_plus_only_for_test'
  if name not in tasks.task_names():
    tasks.register_task(name, lambda **kw: tasks.Arithmetic(ops=('+',), **kw))
  with pytest.raises(ValueError, match='already'):
    tasks.register_task(name, tasks.Arithmetic)
  assert all('+' in e.prompt for e in tasks.get_task(name).examples('train', 10))


# ------------------------------------------------------------------------ arithmetic


def test_arithmetic_levels_operands_and_answers():
  task = _make('arithmetic', levels=(1, 3, 5))
  for level in (1, 3, 5):
    for ex in task.examples('train', 40, level=level):
      m = re.fullmatch(r'(\d+)([-+*])(\d+)=', ex.prompt)
      a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
      for x in (a, b):
        assert len(str(x)) == level
      expected = {'+': a + b, '-': a - b, '*': a * b}[op]
      assert ex.answer == ex.demonstration == str(expected)
      assert expected >= 0  # allow_negative=False
      assert ex.metadata['level'] == level
  mixed = task.examples('train', 300)
  assert {e.metadata['level'] for e in mixed} == {1, 3, 5}
  assert {e.metadata['op'] for e in mixed} == {'+', '-', '*'}


def test_arithmetic_allow_negative():
  task = _make('arithmetic', levels=(2,), ops=('-',), allow_negative=True)
  answers = [int(e.answer) for e in task.examples('train', 200)]
  assert min(answers) < 0
  neg = next(e for e in task.examples('train', 200) if int(e.answer) < 0)
  assert task.reward(neg.prompt, neg.answer) == 1.0


@pytest.mark.parametrize('completion,reward', [
    ('46', 1.0), (' 46\n', 1.0), ('046', 1.0), ('47', 0.0), ('46 47', 0.0), ('46=46', 0.0),
    ('+46', 0.0), ('4 6', 0.0), ('forty six', 0.0), ('', 0.0),
])
def test_arithmetic_reward_by_hand(completion, reward):
  assert _make('arithmetic').reward('12+34=', completion) == reward


def test_format_reward_adds_only_for_well_formed():
  task = _make('arithmetic', format_reward=0.1)
  assert task.reward('12+34=', '46') == pytest.approx(1.1)
  assert task.reward('12+34=', '45') == pytest.approx(0.1)
  assert task.reward('12+34=', 'x') == 0.0
  assert task.is_correct('12+34=', '46') and not task.is_correct('12+34=', '45')


def test_unknown_prompt_is_a_caller_error():
  for name in GENERATED:
    with pytest.raises(ValueError, match='not a prompt'):
      _make(name).reward('hello', '1')


# ------------------------------------------------------------------------ malformed


@pytest.mark.parametrize('name', GENERATED + ('gsm8k',))
def test_malformed_completions_give_zero_and_are_counted(name, gsm8k_task):
  task = gsm8k_task if name == 'gsm8k' else _make(name, format_reward=0.5)
  task.reset_failure_counts()
  prompt = task.examples('train', 1)[0].prompt
  for completion in MALFORMED:
    r = task.reward(prompt, completion)
    assert r in (0.0, 0.5), (completion[:20], r)  # never correct, never raises
  assert task.reward(prompt, None) == 0.0  # not even a string
  counts = task.failure_counts
  assert counts.get('empty', 0) >= 3
  assert counts['not_a_string'] == 1
  assert sum(counts.values()) >= len(MALFORMED) // 2
  assert 'internal_error' not in counts
  task.reset_failure_counts()
  assert task.failure_counts == {}


@settings(max_examples=150, deadline=None)
@given(completion=st.text(max_size=60))
def test_rewards_never_raise_on_random_text(completion):
  for name in GENERATED:
    task = _CACHED[name]
    prompt = _PROMPTS[name]
    r = task.reward(prompt, completion)
    assert r in (0.0, 1.0)
    assert 'internal_error' not in task.failure_counts


_CACHED = {name: tasks.get_task(name) for name in GENERATED}
_PROMPTS = {name: t.examples('train', 1)[0].prompt for name, t in _CACHED.items()}


@settings(max_examples=100, deadline=None)
@given(completion=st.text(alphabet='0123456789+-*/() ', max_size=40))
def test_countdown_parser_agrees_with_python_parser(completion):
  """On expressions of the grammar, the task's evaluator equals Python's ``ast`` evaluation."""
  try:
    tree = countdown_lib.parse_expression(completion)
  except countdown_lib.ExpressionError:
    return
  # Python's grammar is a superset of ours, except that it rejects integer literals with
  # leading zeros such as 007.
  try:
    expected = _ast_eval(completion.strip())
  except SyntaxError:
    assert re.search(r'(?<![0-9])0[0-9]', completion)
    return
  except ZeroDivisionError:
    with pytest.raises(ZeroDivisionError):
      countdown_lib.evaluate_expression(tree)
    return
  assert countdown_lib.evaluate_expression(tree) == expected
  assert sorted(countdown_lib.expression_numbers(tree)) == _ast_numbers(completion.strip())


# ------------------------------------------------------------------------ countdown


def test_countdown_demonstrations_are_solutions():
  task = _make('countdown', levels=(2, 3, 4, 5))
  for ex in task.examples('train', 200) + task.examples('test', 40):
    numbers, target = ex.metadata['numbers'], ex.metadata['target']
    assert ex.prompt == f'Make {target} with {" ".join(map(str, numbers))}:'
    assert ex.answer == str(target)
    assert len(numbers) == ex.metadata['level']
    assert all(1 <= x <= 20 for x in numbers) and 1 <= target <= 100
    assert _ast_eval(ex.demonstration) == target
    assert _ast_numbers(ex.demonstration) == sorted(numbers)  # uses every number exactly once
    assert task.reward(ex.prompt, ex.demonstration) == 1.0


@pytest.mark.parametrize('completion,reason', [
    ('(3+5)*2', None), ('2*(5+3)', None), (' ( 3 + 5 ) * 2 ', None), ('7+5+2+2', 'invalid_numbers'),
    ('7*2+5-3', None), ('16', 'invalid_numbers'), ('3+5+2', 'wrong_value'),
    ('7/(5-5)', 'invalid_numbers'), ('(3+5)*2=16', 'invalid_character'), ('-3+19', 'parse_error'),
    ('(3+5)*2)', 'parse_error'), ('((3+5)*2', 'parse_error'), ('3 5', 'parse_error'),
    ('2**3', 'parse_error'), ('', 'empty'), ('(' * 40 + '3' + ')' * 40, 'too_deep'),
    ('1' * 13, 'number_too_long'), ('3x5', 'invalid_character'), ('7*2+3-5', 'wrong_value'),
])
def test_countdown_grades_by_hand(completion, reason):
  task = _make('countdown')
  grade = task.grade('Make 16 with 3 5 2 7:', completion)
  assert grade.reason == reason
  assert grade.correct == (reason is None)


def test_countdown_exact_rational_arithmetic_and_division_by_zero():
  task = _make('countdown')
  assert task.is_correct('Make 8 with 8 3 3:', '8/3*3')  # exact: 8/3*3 == 8
  assert task.grade('Make 8 with 8 3 3:', '8/(3-3)').reason == 'division_by_zero'
  assert task.grade('Make 7 with 3 5 2 7:', '7').correct  # a subset is allowed
  strict = _make('countdown', use_all_numbers=True)
  assert strict.grade('Make 7 with 3 5 2 7:', '7').reason == 'unused_numbers'
  assert strict.is_correct('Make 18 with 3 5 2 7:', '(7+5)/2*3')


def test_countdown_parser_precedence_and_associativity():
  ev = lambda s: countdown_lib.evaluate_expression(countdown_lib.parse_expression(s))
  assert ev('2+3*4') == 14
  assert ev('(2+3)*4') == 20
  assert ev('2-3-4') == -5
  assert ev('64/4/2') == 8
  assert ev('2*(3-(4-5))') == 8


# ------------------------------------------------------------------------ sequences


def test_sorting_and_reversal_answers():
  sort_task = _make('sorting', levels=(2, 6), max_value=50)
  for ex in sort_task.examples('train', 100):
    items = [int(x) for x in ex.prompt[len('sort '):-1].split(' ')]
    assert len(items) == ex.metadata['level'] and max(items) <= 50
    assert ex.answer == ' '.join(str(x) for x in sorted(items))
  rev_task = _make('reversal', alphabet='xyz', levels=(5,))
  for ex in rev_task.examples('train', 50):
    s = ex.prompt[len('reverse '):-1]
    assert set(s) <= set('xyz') and len(s) == 5
    assert ex.answer == ''.join(reversed(s))


@pytest.mark.parametrize('name,prompt,completion,reason', [
    ('sorting', 'sort 53 7 21:', '7 21 53', None),
    ('sorting', 'sort 53 7 21:', ' 7  21\n53 ', None),
    ('sorting', 'sort 53 7 21:', '7 53 21', 'wrong_answer'),
    ('sorting', 'sort 53 7 21:', '7 21', 'wrong_answer'),
    ('sorting', 'sort 53 7 21:', '7,21,53', 'not_integers'),
    ('sorting', 'sort 5 5 1:', '1 5 5', None),
    ('reversal', 'reverse abcd:', 'dcba', None),
    ('reversal', 'reverse abcd:', ' dcba\n', None),
    ('reversal', 'reverse abcd:', 'd c b a', 'invalid_character'),
    ('reversal', 'reverse abcd:', 'abcd', 'wrong_answer'),
    ('reversal', 'reverse abcd:', 'DCBA', 'invalid_character'),
])
def test_sequence_grades_by_hand(name, prompt, completion, reason):
  grade = _make(name).grade(prompt, completion)
  assert grade.reason == reason and grade.correct == (reason is None)


# ------------------------------------------------------------------------ gsm8k


def _sample_records():
  with open(GSM8K_SAMPLE) as f:
    return [json.loads(line) for line in f]


def test_gsm8k_sample_file_has_the_public_schema():
  records = _sample_records()
  assert len(records) >= 5
  for rec in records:
    assert set(rec) == {'question', 'answer'}
    assert re.search(r'\n#### -?[\d,]+$', rec['answer'])


def test_gsm8k_reference_extraction_and_demonstrations(gsm8k_task):
  assert gsm8k_lib.extract_reference_answer('x\n#### 1,525') == '1525'
  assert gsm8k_lib.extract_reference_answer('x\n#### -5') == '-5'
  with pytest.raises(ValueError):
    gsm8k_lib.extract_reference_answer('no marker')
  records = {r['question']: r for r in _sample_records()}
  every = gsm8k_task.examples('train') + gsm8k_task.examples('test')
  assert len(every) == len(records)
  for ex in every:
    rec = records[ex.metadata['question']]
    assert ex.prompt == f"Question: {rec['question']}\nAnswer:\n"
    assert ex.answer == rec['answer'].split('#### ')[-1].replace(',', '')
    assert '<<' not in ex.demonstration and ex.demonstration.endswith('#### ' + ex.answer)
    assert ex.metadata['level'] == rec['answer'].count('\n')
    assert gsm8k_task.reward(ex.prompt, ex.demonstration) == 1.0


def test_gsm8k_single_file_split_is_disjoint_and_follows_hash(gsm8k_task):
  train, test = gsm8k_task.examples('train'), gsm8k_task.examples('test')
  assert train and test
  assert not {e.prompt for e in train} & {e.prompt for e in test}
  for split, examples in (('train', train), ('test', test)):
    for ex in examples:
      key = ' '.join(ex.metadata['question'].split())
      assert _hash_split('gsm8k', key, 0.3) == split


def test_gsm8k_seeded_order_and_num(gsm8k_task):
  a = gsm8k_task.examples('train', 3)
  assert a == gsm8k_task.examples('train', 3)
  other = tasks.get_task('gsm8k', path=GSM8K_SAMPLE, test_fraction=0.3, seed=5)
  assert sorted(e.prompt for e in other.examples('train')) == sorted(
      e.prompt for e in gsm8k_task.examples('train'))
  with pytest.raises(ValueError, match='asked for'):
    gsm8k_task.examples('train', 1000)


def test_gsm8k_two_files_and_parquet(tmp_path):
  records = _sample_records()
  train, test = records[:7], records[6:]  # one question in both files
  gsm8k_lib.write_jsonl(train, tmp_path / 'train.jsonl')
  gsm8k_lib.write_jsonl(test, tmp_path / 'test.jsonl')
  task = tasks.get_task('gsm8k', path=tmp_path)
  assert len(task.examples('test')) == len(test)
  assert len(task.examples('train')) == len(train) - 1  # the shared question stays in test
  pq = pytest.importorskip('pyarrow.parquet')
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  pq.write_table(pa.Table.from_pylist(records), tmp_path / 'all.parquet')
  task_pq = tasks.get_task('gsm8k', path=tmp_path / 'all.parquet', test_fraction=0.3)
  assert sorted(e.prompt for e in task_pq.examples('test')) == sorted(
      e.prompt for e in tasks.get_task('gsm8k', path=GSM8K_SAMPLE,
                                       test_fraction=0.3).examples('test'))


def test_gsm8k_bad_files(tmp_path):
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"question": "q"}\n')
  with pytest.raises(ValueError, match='question'):
    tasks.get_task('gsm8k', path=bad)
  bad.write_text('not json\n')
  with pytest.raises(ValueError, match='bad.jsonl:1'):
    tasks.get_task('gsm8k', path=bad)


@pytest.mark.parametrize('completion,strict,flexible', [
    ('so 15 pencils.\n#### 15', True, True),
    ('#### 15.0', True, True),
    ('#### $15', True, True),
    ('The answer is 15', False, True),
    ('#### 15\nand then 16', True, False),
    ('#### 14\n#### 15', True, True),
    ('#### 1,5', True, True),
    ('#### fifteen', False, False),
    ('', False, False),
])
def test_gsm8k_extraction(completion, strict, flexible, tmp_path):
  path = tmp_path / 'one.jsonl'
  gsm8k_lib.write_jsonl([{'question': 'Q?', 'answer': 'a\n#### 15'}], path)
  for mode, expected in (('strict', strict), ('flexible', flexible)):
    task = tasks.GSM8K(train_path=path, extraction=mode, test_fraction=1e-9)
    prompt = task.examples('train')[0].prompt
    assert task.is_correct(prompt, completion) == expected, (mode, completion)


def test_gsm8k_unknown_prompt_raises(gsm8k_task):
  with pytest.raises(ValueError, match='not a prompt'):
    gsm8k_task.reward('Question: unseen\nAnswer:\n', '#### 1')


# ------------------------------------------------------------------------ helpers


def test_load_split_and_tokenizer_corpus(gsm8k_task):
  lists = tasks.load_split('sorting', 'test', 7)
  assert set(lists) == {'prompt', 'answer', 'demonstration', 'level'}
  assert all(len(v) == 7 for v in lists.values())
  exs = tasks.get_task('sorting').examples('test', 7)
  assert lists['prompt'] == [e.prompt for e in exs]
  assert lists['demonstration'] == [e.demonstration for e in exs]
  corpus = tasks.tokenizer_corpus(['arithmetic', tasks.get_task('reversal'), gsm8k_task],
                                  num_per_task=20)
  n_gsm = len(gsm8k_task.examples('train'))
  assert len(corpus) == 40 + n_gsm
  assert corpus[0] == tasks.get_task('arithmetic').examples('train', 1)[0].text
  assert all(isinstance(t, str) and t for t in corpus)


def test_rewards_vectorised():
  task = _make('arithmetic')
  r = task.rewards(['1+1=', '2*3=', '9-4='], ['2', '5', '5'])
  assert r.dtype.name == 'float32' and r.tolist() == [1.0, 0.0, 1.0]
  with pytest.raises(ValueError, match='same length'):
    task.rewards(['1+1='], [])


@pytest.mark.parametrize('name', GENERATED)
def test_grade_batch_grades_each_completion_once(name):
  task = _make(name, format_reward=0.5)
  ex = task.examples('train', 1)[0]
  prompts, completions = [ex.prompt] * 3, [ex.demonstration, '', 'no idea']
  task.reset_failure_counts()
  rewards, correct = task.grade_batch(prompts, completions)
  assert rewards.dtype.name == 'float32' and correct.dtype == bool
  assert rewards.tolist() == [task.reward(p, c) for p, c in zip(prompts, completions)]
  assert correct.tolist() == [True, False, False]
  counts = task.failure_counts
  # `reward` above graded the pairs once more: each malformed completion twice in all.
  assert sum(counts.values()) == 4, counts
  task.reset_failure_counts()
  task.grade_batch(prompts, completions)
  assert sum(task.failure_counts.values()) == 2, task.failure_counts
  with pytest.raises(ValueError, match='same length'):
    task.grade_batch(prompts, completions[:1])


def test_docstring_examples():
  import doctest  # pylint: disable=g-import-not-at-top
  assert doctest.testmod(tasks, raise_on_error=True).attempted > 0


def test_small_test_fraction_still_fills_the_test_split():
  test = _make('sorting', test_fraction=0.01).examples('test', 20)
  assert len(test) == 20 and all(_hash_split('sorting', e.metadata['key'], 0.01) == 'test'
                                 for e in test)


@pytest.mark.parametrize('prompt, want', [
    ('999+999=', '998'), ('500+500=', '000'), ('123+877=', '000'), ('950+51=', '001'),
    ('123+456=', None), ('499+500=', None), ('9+9=', '8'), ('3+4=', None)])
def test_arithmetic_systematic_error_drops_the_final_carry(prompt, want):
  a, b = (int(x) for x in prompt[:-1].split('+'))
  ex = tasks.Example(prompt=prompt, answer=str(a + b), demonstration=str(a + b),
                     metadata={'a': a, 'b': b, 'op': '+'})
  task = tasks.get_task('arithmetic', levels=(1, 2, 3), ops=('+',))
  assert task.systematic_error(ex) == want
  if want is not None:
    assert not task.is_correct(prompt, want)


def test_systematic_error_is_none_where_it_does_not_apply():
  task = tasks.get_task('arithmetic', levels=(3,), ops=('-', '*'))
  assert all(task.systematic_error(e) is None for e in task.examples('train', 200))
  task = tasks.get_task('countdown')
  assert all(task.systematic_error(e) is None for e in task.examples('train', 20))
