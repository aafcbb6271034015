"""Tests for rljax.data.tfds_builders: array_record files read back with as_data_source."""

import os
import sys

import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from rljax.data import tasks  # pylint: disable=g-import-not-at-top,wrong-import-position
from rljax.data import tfds_builders  # pylint: disable=g-import-not-at-top,wrong-import-position

GSM8K_SAMPLE = os.path.join(os.path.dirname(__file__), 'data', 'gsm8k_sample.jsonl')

tfds.disable_progress_bar()


def _record_files(data_dir):
  return sorted(os.path.join(root, f) for root, _, files in os.walk(data_dir) for f in files
                if '.array_record' in f)


@pytest.mark.parametrize('name,kwargs', [
    ('arithmetic', {'levels': (2, 3)}),
    ('countdown', {'levels': (3,), 'seed': 7}),
    ('sorting', {}),
    ('reversal', {'alphabet': 'abc', 'levels': (4,)}),
])
def test_round_trip_equals_the_task(name, kwargs, tmp_path):
  sources = tfds_builders.data_sources(name, tmp_path, num_train=12, num_test=5, **kwargs)
  assert len(sources['train']) == 12 and len(sources['test']) == 5
  task = tasks.get_task(name, **kwargs)
  for split, num in (('train', 12), ('test', 5)):
    source = sources[split]
    record = source[len(source) - 1]  # random access
    assert {'prompt', 'answer', 'demonstration', 'level', 'index', 'key', 'metadata'} <= set(record)
    assert sorted(int(source[i]['index']) for i in range(len(source))) == list(range(num))
    assert tfds_builders.read_examples(source) == task.examples(split, num)
  files = _record_files(tmp_path)
  assert len(files) == 2 and all('array_record' in f for f in files)
  assert 'tensorflow' not in sys.modules  # the array_record path needs no TensorFlow


def test_prepared_files_are_reused(tmp_path):
  tfds_builders.data_sources('sorting', tmp_path, num_train=4, num_test=2)
  files = _record_files(tmp_path)
  mtimes = [os.path.getmtime(f) for f in files]
  builder = tfds_builders.make_builder('sorting', tmp_path, num_train=4, num_test=2)
  builder.download_and_prepare()  # no-op: the data exist
  assert _record_files(tmp_path) == files
  assert [os.path.getmtime(f) for f in files] == mtimes


def test_config_names_separate_settings():
  assert tfds_builders.config_name('arithmetic') == 'arithmetic'
  a = tfds_builders.config_name('arithmetic', {'levels': (2,)}, 10, 5)
  b = tfds_builders.config_name('arithmetic', {'levels': (3,)}, 10, 5)
  c = tfds_builders.config_name('arithmetic', {'levels': [2]}, 10, 5)
  assert a != b and a == c and a.startswith('arithmetic_')


def test_gsm8k_builder_reads_local_files(tmp_path):
  sources = tfds_builders.data_sources('gsm8k', tmp_path / 'tfds', path=GSM8K_SAMPLE,
                                       test_fraction=0.3)
  task = tasks.get_task('gsm8k', path=GSM8K_SAMPLE, test_fraction=0.3)
  for split in ('train', 'test'):
    assert tfds_builders.read_examples(sources[split]) == task.examples(split)
  ex = tfds_builders.read_examples(sources['test'])[0]
  assert task.reward(ex.prompt, ex.demonstration) == 1.0
