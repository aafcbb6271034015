"""A task read from a file of prompts and reference answers, graded by a named verifier.

Sources (`path`):

* a JSON Lines file (``.jsonl``; one JSON object a line) or a ``.json`` file holding a list of
  objects;
* a Parquet file (``.parquet``; needs ``pyarrow``);
* a directory saved by Hugging Face ``datasets`` (``Dataset.save_to_disk`` or
  ``DatasetDict.save_to_disk``), read with ``pyarrow`` from its arrow files and ``state.json``
  (the ``datasets`` package itself is not needed);
* a directory holding ``train*`` and ``test*`` files of the formats above.

Splits, in this order of precedence: `test_path` (a second source; its prompts are dropped from
train); a `DatasetDict` or a directory with ``train*``/``test*`` files (their splits);
`split_field` (a field whose value is ``'train'`` or ``'test'``); otherwise a prompt is in the test
split iff its hash falls below `test_fraction` (the rule of `base`, fixed for the prompt whatever
the seed).

Each record gives the prompt (`prompt_field`, put into `template`), the reference answer
(`answer_field`) and the demonstration of the warm start (`demonstration_field`, by default the
answer field: for GSM8K-format files the worked solution); a number in these fields is read as
its text. Records with a prompt seen before are dropped and counted in `num_duplicates` (logged
once).
"""

from __future__ import annotations

import glob
import json
import logging
import os
from typing import Any, Mapping

from rljax.data import verifiers as verifiers_lib
from rljax.data.tasks import base

FORMATS = ('.jsonl', '.json', '.parquet')


def _read_json(path: str) -> list[Any]:
  with open(path, encoding='utf-8') as f:
    if path.endswith('.json'):
      try:
        data = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not JSON ({e})') from None
      if not isinstance(data, list):
        raise ValueError(f'{path}: a .json file must hold a list of records')
      return data
    records = []
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{lineno}: not a JSON object ({e})') from None
    return records


def _pyarrow():
  try:
    import pyarrow  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise ImportError('Reading parquet files or saved datasets directories needs pyarrow '
                      '(pip install pyarrow); JSON Lines files need nothing.') from e
  return pyarrow


def _read_saved_dataset(directory: str) -> list[dict[str, Any]]:
  """The rows of a directory written by ``datasets.Dataset.save_to_disk``."""
  pa = _pyarrow()
  with open(os.path.join(directory, 'state.json'), encoding='utf-8') as f:
    files = [d['filename'] for d in json.load(f)['_data_files']]
  rows = []
  for name in files:
    with pa.memory_map(os.path.join(directory, name)) as source:
      rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
  return rows


def read_records(path: str | os.PathLike) -> list[Any]:
  """All records of a ``.jsonl``, ``.json`` or ``.parquet`` file or a saved ``Dataset`` dir.

  Raises:
    ValueError: for a missing path, an unknown format or a line that is not JSON (the message
      names the file and line).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ValueError(f'{path} does not exist')
  if os.path.isdir(path):
    if not os.path.exists(os.path.join(path, 'state.json')):
      raise ValueError(f'{path}: a directory must be saved by datasets (state.json) or hold '
                       f'train*/test* files of {FORMATS}')
    return _read_saved_dataset(path)
  if path.endswith('.parquet'):
    return _pyarrow().parquet.read_table(path).to_pylist()
  if path.endswith(('.jsonl', '.json')):
    return _read_json(path)
  raise ValueError(f'{path}: unknown format; use one of {FORMATS} or a saved datasets directory')


def split_sources(path: str | os.PathLike) -> dict[str, str] | None:
  """``{'train': path, 'test': path}`` of a directory with splits, or None for one source.

  A directory with splits is a saved ``DatasetDict`` (``dataset_dict.json``) or one holding
  ``train*`` / ``test*`` files of `FORMATS`.
  """
  path = os.fspath(path)
  if not os.path.isdir(path) or os.path.exists(os.path.join(path, 'state.json')):
    return None
  dict_file = os.path.join(path, 'dataset_dict.json')
  if os.path.exists(dict_file):
    with open(dict_file, encoding='utf-8') as f:
      splits = json.load(f)['splits']
    missing = [s for s in base.SPLITS if s not in splits]
    if missing:
      raise ValueError(f'{path}: the saved DatasetDict has splits {splits}, needs {missing}')
    return {s: os.path.join(path, s) for s in base.SPLITS}
  found = {}
  for split in base.SPLITS:
    names = sorted(n for n in glob.glob(os.path.join(glob.escape(path), split + '*'))
                   if n.endswith(FORMATS))
    if len(names) > 1:
      raise ValueError(f'{path}: several {split} files {names}; keep one')
    if names:
      found[split] = names[0]
  if 'train' not in found:
    raise ValueError(f'{path}: no train* file of {FORMATS} and no datasets state.json')
  return found


def _field(record: Any, name: str, arg: str, where: str) -> str:
  if not isinstance(record, Mapping) or name not in record:
    fields = sorted(record) if isinstance(record, Mapping) else type(record).__name__
    raise ValueError(f'{where} has no field {name!r} ({arg}={name!r}; its fields: {fields})')
  value = record[name]
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    value = str(value)
  if not isinstance(value, str):
    raise ValueError(f'{where}: field {name!r} ({arg}) must be a string, got '
                     f'{type(value).__name__}')
  return value


class PromptFile(base.Task):
  """Prompts and answers from a file, graded by the verifier `verifier` (see the module doc).

  Args:
    path: the source (a file, a saved datasets directory, or a directory with split files).
    test_path: a second source holding the test split.
    prompt_field: the field holding the prompt text.
    answer_field: the field holding the reference answer (None: prompts only; then `verifier`
      must be None and the rewards come from elsewhere, e.g. a user reward function).
    demonstration_field: the field holding the warm-start completion (None: `answer_field`;
      empty demonstrations when both are None).
    verifier: a name of `rljax.data.verifiers.VERIFIERS`, or None (nothing is correct).
    verifier_args: the verifier's options, e.g. ``{"rel_tol": 1e-3}`` for ``'numeric'``.
    split_field: the field whose value (``'train'`` or ``'test'``) gives the split.
    template: the prompt given to the policy; ``{prompt}`` is replaced by the prompt field.
    **kwargs: `base.Task` arguments (``seed`` orders `examples`; ``test_fraction``).

  Raises:
    ValueError: for a missing source or field, an empty split source, a split value other than
      train/test, or an answer the verifier cannot read (the message names file and record).
  """

  name = 'prompt_file'
  FORMAT = ('Whatever the verifier reads: exact (the whole completion), numeric (its last '
            'number), gsm8k (the number after "####"), boxed (the last \\boxed{...}).')

  def __init__(self, path: str | os.PathLike, *, test_path: str | os.PathLike | None = None,
               prompt_field: str = 'prompt', answer_field: str | None = 'answer',
               demonstration_field: str | None = None, verifier: str | None = 'exact',
               verifier_args: Mapping[str, Any] | None = None, split_field: str | None = None,
               template: str = '{prompt}', **kwargs):
    super().__init__(**kwargs)
    if verifier is not None and answer_field is None:
      raise ValueError(f'verifier={verifier!r} needs answer_field')
    if verifier is None and verifier_args:
      raise ValueError(f'verifier_args={dict(verifier_args)} given without a verifier')
    if '{prompt}' not in template:
      raise ValueError(f'template must contain {{prompt}}, got {template!r}')
    self.verifier = verifier
    self._spec = None if verifier is None else verifiers_lib.VERIFIERS.get(verifier)
    self._grade_fn = None if verifier is None else verifiers_lib.get_verifier(
        verifier, **dict(verifier_args or {}))
    self.fields = dict(prompt_field=prompt_field, answer_field=answer_field,
                       demonstration_field=demonstration_field or answer_field)
    self.template = template
    self.split_field = split_field
    self.num_duplicates = 0
    self._rows: dict[str, list[base.Example]] = {s: [] for s in base.SPLITS}
    self._answers: dict[str, str] = {}
    self._load(os.fspath(path), None if test_path is None else os.fspath(test_path))

  # ------------------------------------------------------------------ loading

  def _load(self, path: str, test_path: str | None) -> None:
    sources = {'train': path, 'test': test_path} if test_path else split_sources(path)
    if sources is not None and 'test' in sources:
      # The test source first: a prompt of both is a test prompt (training on it would leak the
      # held-out set), dropped from train as a duplicate.
      for split in ('test', 'train'):
        self._add(sources[split], lambda record, prompt, s=split: s)
    elif self.split_field:
      self._add(path if sources is None else sources['train'], self._split_of_record)
    else:
      self._add(path if sources is None else sources['train'],
                lambda record, prompt: self.split_of(' '.join(prompt.split())))
    for split in base.SPLITS:
      for ex in self._rows[split]:
        self._answers[ex.prompt] = ex.answer
    if self.num_duplicates:
      logging.warning('Task %r (%s): dropped %d records whose prompt appeared before (in the '
                      'test split or earlier in the file).', self.name, path, self.num_duplicates)

  def _split_of_record(self, record: Mapping[str, Any], prompt: str) -> str:
    del prompt
    value = record.get(self.split_field) if isinstance(record, Mapping) else None
    if value not in base.SPLITS:
      raise ValueError(f'split_field={self.split_field!r}: value {value!r} is not one of '
                       f'{base.SPLITS}')
    return value

  def _add(self, source: str, split_of) -> None:
    records = read_records(source)
    if not records:
      raise ValueError(f'{source} holds no records')
    seen = {e.prompt for s in base.SPLITS for e in self._rows[s]}
    for i, record in enumerate(records, 1):
      ex = self._example(record, f'{source}: record {i}')
      if ex.prompt in seen:
        self.num_duplicates += 1
        continue
      seen.add(ex.prompt)
      split = split_of(record, ex.prompt)
      meta = dict(ex.metadata, split=split)
      self._rows[split].append(base.Example(ex.prompt, ex.answer, ex.demonstration, meta))

  def _example(self, record: Any, where: str) -> base.Example:
    f = self.fields
    text = _field(record, f['prompt_field'], 'prompt_field', where)
    prompt = self.template.replace('{prompt}', text)
    answer, demonstration = '', ''
    if f['answer_field'] is not None:
      answer = _field(record, f['answer_field'], 'answer_field', where)
      if self._spec is not None:
        try:
          self._spec.reference(answer)
        except ValueError as e:
          raise ValueError(f'{where}: {e} (verifier={self.verifier!r})') from None
    if f['demonstration_field'] is not None:
      demonstration = _field(record, f['demonstration_field'], 'demonstration_field', where)
    return base.Example(prompt, answer, demonstration,
                        {'level': 1, 'key': ' '.join(text.split()), 'record': dict(record)})

  # ------------------------------------------------------------------ the task interface

  @property
  def levels(self) -> tuple[int, ...]:
    return (1,)

  def answer_of(self, prompt: str) -> str | None:
    """The reference answer of one of this task's prompts (None for an unknown prompt)."""
    return self._answers.get(prompt)

  def split_size(self, split: str) -> int:
    base._check_split(split)  # pylint: disable=protected-access
    return len(self._rows[split])

  def examples(self, split: str, num: int | None = None, *, level: int | None = None,
               unique: bool = True) -> list[base.Example]:
    """`num` examples of `split` (all if None) in an order fixed by the seed.

    Raises:
      ValueError: on an unknown split or level, or if the split holds fewer than `num`.
    """
    del unique  # Records are deduplicated on load.
    base._check_split(split)  # pylint: disable=protected-access
    if level not in (None, 1):
      raise ValueError(f'level must be one of {self.levels}, got {level!r}')
    return self._seeded_subset(self._rows[split], split, None, num,
                               f'the {split} split of the prompt file')

  def _grade(self, prompt, completion):
    reference = self._answers.get(prompt) if isinstance(prompt, str) else None
    if reference is None:
      raise self._prompt_error(prompt)
    if self._grade_fn is None:
      return base.Grade(False, True, 'no_verifier')
    return self._grade_fn(completion, reference)

  def __repr__(self) -> str:
    return (f'PromptFile(verifier={self.verifier!r}, train={len(self._rows["train"])}, '
            f'test={len(self._rows["test"])}, seed={self.seed})')
