"""TensorFlow Datasets builders for the verifiable tasks (array_record, no TensorFlow needed).

The builder writes each task split to ``array_record`` files with ``download_and_prepare`` and is
read back with ``as_data_source`` (random access; ``len`` and ``__getitem__``), the path that
works without TensorFlow installed. (``tfds.load``, ``as_dataset`` and the tfrecord format need
TensorFlow and are not used.)

>>> import tempfile
>>> sources = data_sources('arithmetic', tempfile.mkdtemp(), num_train=8, num_test=4,
...                        levels=(2,))
>>> len(sources['train']), len(sources['test'])
(8, 4)
>>> examples = read_examples(sources['test'])      # generation order, as `Example`s
>>> examples == get_task('arithmetic', levels=(2,)).examples('test', 4)
True

TFDS shuffles records when it writes them, so record ``i`` is not the ``i``-th generated example;
each record stores its generation position in ``'index'`` and `read_examples` restores the order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds

from rljax.data.tasks import Example
from rljax.data.tasks import get_task
from rljax.data.tasks import SPLITS

FILE_FORMAT = 'array_record'
DEFAULT_TASKS = ('arithmetic', 'countdown', 'sorting', 'reversal')


def _jsonable(value: Any) -> Any:
  if isinstance(value, (tuple, list)):
    return [_jsonable(v) for v in value]
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, os.PathLike):
    return os.fspath(value)
  if isinstance(value, np.generic):
    return value.item()
  return value


def config_name(task: str, task_kwargs: Mapping[str, Any] | None = None,
                num_train: int | None = None, num_test: int | None = None) -> str:
  """The builder config name: the task name, plus a hash of any non-default settings.

  Two configs with different generation settings never share a data directory.
  """
  settings = {'kwargs': _jsonable(dict(task_kwargs or {})), 'num_train': num_train,
              'num_test': num_test}
  if not settings['kwargs'] and num_train is None and num_test is None:
    return task
  digest = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=6)
  return f'{task}_{digest.hexdigest()}'


class TaskConfig(tfds.core.BuilderConfig):
  """Which task to write, with which constructor arguments and split sizes.

  Args:
    task: a `rljax.data.tasks` name.
    task_kwargs: keyword arguments of `get_task` (seed, levels, paths, ...).
    num_train, num_test: examples per split (None: the task's default; all rows for gsm8k).
    name: the config name; derived from the settings by `config_name` if None.
  """

  def __init__(self, *, task: str, task_kwargs: Mapping[str, Any] | None = None,
               num_train: int | None = None, num_test: int | None = None,
               name: str | None = None, **kwargs):
    name = name or config_name(task, task_kwargs, num_train, num_test)
    super().__init__(name=name, description=f'rljax task {task!r}', **kwargs)
    self.task = task
    self.task_kwargs = dict(task_kwargs or {})
    self.num = {'train': num_train, 'test': num_test}


class VerifiableTasks(tfds.core.GeneratorBasedBuilder):
  """Prompts, reference answers and demonstrations of the rljax verifiable tasks.

  Features: ``prompt``, ``answer``, ``demonstration`` (text), ``level`` (int32), ``index``
  (int64 generation position), ``key`` (the split key) and ``metadata`` (JSON text).
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [TaskConfig(task=name) for name in DEFAULT_TASKS]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'prompt': tfds.features.Text(),
            'answer': tfds.features.Text(),
            'demonstration': tfds.features.Text(),
            'level': np.int32,
            'index': np.int64,
            'key': tfds.features.Text(),
            'metadata': tfds.features.Text(),
        }),
        supervised_keys=None,
    )

  # TFDS prints these two messages to stdout; a library should log them instead.
  def _log_download_bytes(self) -> None:
    logging.info('Preparing %s to %s.', self.name, self.data_dir)

  def _log_download_done(self) -> None:
    logging.info('Prepared %s in %s.', self.name, self.data_dir)

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated locally (gsm8k reads the user's files).
    config = self.builder_config
    task = get_task(config.task, **config.task_kwargs)
    return {split: self._generate_examples(task, split, config.num[split]) for split in SPLITS}

  def _generate_examples(self, task, split, num):
    for index, ex in enumerate(task.examples(split, num)):
      meta = {k: v for k, v in ex.metadata.items() if k not in ('level', 'key')}
      yield index, {
          'prompt': ex.prompt,
          'answer': ex.answer,
          'demonstration': ex.demonstration,
          'level': int(ex.metadata['level']),
          'index': index,
          'key': str(ex.metadata['key']),
          'metadata': json.dumps(_jsonable(meta), sort_keys=True),
      }


def make_builder(task: str, data_dir: str | os.PathLike, *, num_train: int | None = None,
                 num_test: int | None = None, **task_kwargs) -> VerifiableTasks:
  """A `VerifiableTasks` builder for `task` writing array_record files under `data_dir`."""
  config = TaskConfig(task=task, task_kwargs=task_kwargs, num_train=num_train,
                      num_test=num_test)
  return VerifiableTasks(data_dir=os.fspath(data_dir), config=config, file_format=FILE_FORMAT)


def data_sources(task: str, data_dir: str | os.PathLike, *, num_train: int | None = None,
                 num_test: int | None = None, **task_kwargs) -> dict[str, Any]:
  """Prepares `task` (once; later calls reuse the files) and returns random-access sources.

  Args:
    task: a task name, e.g. ``'countdown'``.
    data_dir: where TFDS keeps the dataset (e.g. a temporary directory in tests).
    num_train, num_test: examples per split (None: the task's default).
    **task_kwargs: `rljax.data.tasks.get_task` arguments (seed, levels, path, ...).

  Returns:
    ``{'train': source, 'test': source}``; ``source[i]`` is a dict of NumPy values (text as
    ``bytes``); `decode_record` turns it into an `Example`.
  """
  builder = make_builder(task, data_dir, num_train=num_train, num_test=num_test, **task_kwargs)
  builder.download_and_prepare()
  return {split: builder.as_data_source(split) for split in SPLITS}


def _text(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def _tuples(value: Any) -> Any:
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def decode_record(record: Mapping[str, Any]) -> Example:
  """Turns one data-source record back into the `Example` that was written."""
  meta = _tuples(json.loads(_text(record['metadata'])))
  meta.update(level=int(record['level']), key=_text(record['key']))
  return Example(prompt=_text(record['prompt']), answer=_text(record['answer']),
                 demonstration=_text(record['demonstration']), metadata=meta)


def read_examples(source) -> list[Example]:
  """All records of a data source as `Example`s, in generation order."""
  records = [source[i] for i in range(len(source))]
  records.sort(key=lambda r: int(r['index']))
  return [decode_record(r) for r in records]
