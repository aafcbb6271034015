"""GSM8K grade-school math word problems, read from local files the user provides.

The files use the public release's schema: one record per problem with a ``question`` string
and an ``answer`` string whose last line is ``#### <number>``; JSON Lines (``.jsonl``) or
Parquet (``.parquet``, needs ``pyarrow``). Nothing is downloaded.
"""

from __future__ import annotations

import fractions
import json
import os
import re
from typing import Any, Iterable, Mapping, Sequence

from rljax.data import verifiers
from rljax.data.tasks import base
from rljax.data.tasks import prompt_file

_NUMBER = r'-?[0-9][0-9,]*(?:\.[0-9]+)?'
_FLEXIBLE_RE = re.compile(_NUMBER)
_CALCULATOR_RE = re.compile(r'<<[^<>]*>>')
MAX_NUMBER_CHARS = verifiers.MAX_NUMBER_CHARS
EXTRACTIONS = ('strict', 'flexible')

PROMPT_TEMPLATE = 'Question: {question}\nAnswer:\n'


def extract_reference_answer(answer: str) -> str:
  """The standard GSM8K reference: the text after the last ``####``, commas removed.

  Raises:
    ValueError: if `answer` has no ``####`` or what follows is not a number.
  """
  if '####' not in answer:
    raise ValueError(f'GSM8K answer has no "####" line: {answer[-80:]!r}.')
  final = answer.split('####')[-1].strip().replace(',', '')
  if not re.fullmatch(r'-?[0-9]+(?:\.[0-9]+)?', final):
    raise ValueError(f'GSM8K final answer is not a number: {final!r}.')
  return final


def clean_solution(answer: str) -> str:
  """Removes ``<<48/2=24>>`` calculator annotations and normalises the ``#### N`` line."""
  body = answer.split('####')[0]
  body = _CALCULATOR_RE.sub('', body).rstrip()
  final = extract_reference_answer(answer)
  return f'{body}\n#### {final}' if body else f'#### {final}'


def extract_completion_answer(completion: str, extraction: str = 'strict'
                              ) -> tuple[fractions.Fraction | None, str | None]:
  """Extracts the final number of a completion.

  ``'strict'``: the number after the last ``####`` (the GSM8K convention; an optional ``$`` is
  allowed), as `rljax.data.verifiers.extract_gsm8k`. ``'flexible'``: the last run of digits and
  commas anywhere in the completion (``'1,5'`` reads as 15).

  Returns:
    ``(value, None)`` or ``(None, reason)`` with reason ``'empty'``, ``'no_answer_marker'``
    (strict), ``'no_number'`` (flexible) or ``'number_too_long'``.
  """
  if extraction == 'strict':
    return verifiers.extract_gsm8k(completion)
  if not completion.strip():
    return None, 'empty'
  matches = list(_FLEXIBLE_RE.finditer(completion))
  if not matches:
    return None, 'no_number'
  text = matches[-1].group(0).replace(',', '')
  if len(text) > MAX_NUMBER_CHARS:
    return None, 'number_too_long'
  return fractions.Fraction(text), None


def load_records(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Reads GSM8K-format records from a ``.jsonl`` or ``.parquet`` file.

  Raises:
    ValueError: on an unknown extension, a line that is not JSON, or a record without
      ``question``/``answer`` strings (the message names the file and line).
  """
  path = os.fspath(path)
  if not path.endswith(('.jsonl', '.json', '.parquet')):
    raise ValueError(f'GSM8K file must end in .jsonl or .parquet, got {path!r}.')
  records = prompt_file.read_records(path)
  for i, rec in enumerate(records, 1):
    if not (isinstance(rec, Mapping) and isinstance(rec.get('question'), str)
            and isinstance(rec.get('answer'), str)):
      raise ValueError(f'{path}: record {i} needs string fields "question" and "answer".')
  return records


def _find_split_file(directory: str, split: str) -> str | None:
  for name in sorted(os.listdir(directory)):
    if name.startswith(split) and name.endswith(('.jsonl', '.parquet')):
      return os.path.join(directory, name)
  return None


def _normalise_question(question: str) -> str:
  return ' '.join(question.split())


class GSM8K(base.Task):
  """GSM8K from local files with the standard ``#### answer`` extraction.

  Prompt ``'Question: {question}\\nAnswer:\\n'``; demonstration the reference solution without
  the ``<<...>>`` calculator annotations, ending in ``'#### {answer}'``; answer the number after
  ``####`` with commas removed. The level is the number of solution lines before ``####``
  (clipped to ``max_level``), a rough difficulty bucket.

  Splits: with ``train_path`` and ``test_path`` (or a directory `path` holding ``train*.jsonl``
  / ``test*.jsonl`` or ``.parquet`` files, as in the public release) the files give the splits and
  any train question also in the test file is dropped from train. With one file `path`, a
  question is in the test split iff its hash falls below `test_fraction` (see `base`).

  Args:
    path: a ``.jsonl``/``.parquet`` file, or a directory with train and test files.
    train_path, test_path: explicit files (instead of `path`).
    extraction: ``'strict'`` (number after the last ``####``) or ``'flexible'`` (last number).
    max_level: the largest level; longer solutions are put in this bucket.
    **kwargs: `base.Task` arguments (seed shuffles the order of `examples`).
  """

  name = 'gsm8k'
  FORMAT = ('The completion is a worked solution whose final answer follows "####", e.g. '
            '"... so she has 5 apples.\\n#### 5" (strict extraction: the number after the last '
            '"####"; flexible: the last number in the completion). Numbers compare exactly '
            'after removing commas ("1,000" == "1000", "2.50" == "2.5").')

  def __init__(self, path: str | os.PathLike | None = None, *,
               train_path: str | os.PathLike | None = None,
               test_path: str | os.PathLike | None = None,
               extraction: str = 'strict', max_level: int = 8, **kwargs):
    super().__init__(**kwargs)
    if extraction not in EXTRACTIONS:
      raise ValueError(f'extraction must be one of {EXTRACTIONS}, got {extraction!r}.')
    if max_level < 1:
      raise ValueError(f'max_level must be >= 1, got {max_level}.')
    self.extraction = extraction
    self.max_level = int(max_level)
    if path is not None and (train_path is not None or test_path is not None):
      raise ValueError('Pass either path or train_path/test_path, not both.')
    if path is None and train_path is None:
      raise ValueError('GSM8K needs local data: pass path= (a .jsonl/.parquet file or a '
                       'directory with train/test files) or train_path= [and test_path=].')
    if path is not None and os.path.isdir(path):
      train_path = _find_split_file(os.fspath(path), 'train')
      test_path = _find_split_file(os.fspath(path), 'test')
      if train_path is None and test_path is None:
        raise ValueError(f'{path}: no train*/test* .jsonl or .parquet files found.')
    elif path is not None:
      train_path = path
    self._rows: dict[str, list[base.Example]] = {'train': [], 'test': []}
    self._answers: dict[str, str] = {}
    if test_path is not None:
      test = [self._make_example(r, 'test') for r in load_records(test_path)]
      test_keys = {ex.metadata['key'] for ex in test}
      train = [] if train_path is None else [
          self._make_example(r, 'train') for r in load_records(train_path)]
      self._rows['test'] = test
      self._rows['train'] = [ex for ex in train if ex.metadata['key'] not in test_keys]
    else:
      for r in load_records(train_path):
        key = _normalise_question(r['question'])
        split = self.split_of(key)
        self._rows[split].append(self._make_example(r, split))
    for split in base.SPLITS:
      self._rows[split] = self._dedupe(self._rows[split])
      for ex in self._rows[split]:
        self._answers[ex.prompt] = ex.answer
    self._levels = tuple(sorted({ex.metadata['level'] for s in base.SPLITS
                                 for ex in self._rows[s]})) or (1,)

  def _make_example(self, record: Mapping[str, Any], split: str) -> base.Example:
    question = record['question'].strip()
    answer = extract_reference_answer(record['answer'])
    body = record['answer'].split('####')[0]
    steps = sum(1 for line in body.splitlines() if line.strip())
    level = min(max(steps, 1), self.max_level)
    return base.Example(
        prompt=PROMPT_TEMPLATE.format(question=question), answer=answer,
        demonstration=clean_solution(record['answer']),
        metadata={'level': level, 'key': _normalise_question(question), 'split': split,
                  'question': question})

  @staticmethod
  def _dedupe(examples: Iterable[base.Example]) -> list[base.Example]:
    seen, out = set(), []
    for ex in examples:
      if ex.prompt not in seen:
        seen.add(ex.prompt)
        out.append(ex)
    return out

  @property
  def levels(self) -> tuple[int, ...]:
    return self._levels

  def split_size(self, split: str) -> int:
    base._check_split(split)  # pylint: disable=protected-access
    return len(self._rows[split])

  def examples(self, split: str, num: int | None = None, *, level: int | None = None,
               unique: bool = True) -> list[base.Example]:
    """Returns `num` examples of `split` (all of them if ``None``) in a seeded random order.

    Raises:
      ValueError: on an unknown split or level, or if fewer than `num` examples exist.
    """
    del unique  # Rows are deduplicated on load.
    base._check_split(split)  # pylint: disable=protected-access
    rows = self._rows[split]
    if level is not None:
      if level not in self.levels:
        raise ValueError(f'level must be one of {self.levels}, got {level!r}.')
      rows = [ex for ex in rows if ex.metadata['level'] == level]
    return self._seeded_subset(rows, split, level, num,
                               f'GSM8K {split} split (level={level})')

  def _grade(self, prompt, completion):
    reference = self._answers.get(prompt) if isinstance(prompt, str) else None
    if reference is None:
      raise self._prompt_error(prompt)
    value, reason = extract_completion_answer(completion, self.extraction)
    if reason is not None:
      return base.Grade(False, False, reason)
    if value == fractions.Fraction(reference):
      return base.Grade(True, True, None)
    return base.Grade(False, True, 'wrong_answer')


def write_jsonl(records: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
  """Writes records as JSON Lines (e.g. to prepare a GSM8K-format file)."""
  with open(path, 'w', encoding='utf-8') as f:
    for rec in records:
      f.write(json.dumps(dict(rec), ensure_ascii=False) + '\n')
