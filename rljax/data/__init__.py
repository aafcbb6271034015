"""rljax.data: tokenizers, verifiable-reward tasks, TFDS builders and prompt curricula.

* `rljax.data.tokenizer`: `Tokenizer` (sentencepiece: load a ``.model`` or train one in-process)
  and `HFTokenizer` (a Hugging Face ``tokenizer.json``), one interface.
* `rljax.data.tasks`: `get_task(name, **kwargs)` for ``'arithmetic'``, ``'countdown'``,
  ``'sorting'``, ``'reversal'`` and ``'gsm8k'`` (local files); `load_split` gives plain lists and
  `tokenizer_corpus` the texts to train a tokenizer on.
* `rljax.data.tfds_builders`: the tasks as TFDS array_record datasets read with
  ``as_data_source`` (imported on first use: it loads tensorflow-datasets).
* `rljax.data.curricula`: prompt curricula (imported on first use): `make_sampler(name, ...)`
  over the `CURRICULA` registry, each with `init` / `sample` / `update` and a `collect` that
  gathers one RL batch (`Collected`); the DAPO filter and distinct-n.
"""

import importlib as _importlib

from rljax.data import tasks
from rljax.data import tokenizer
from rljax.data.tasks import Example
from rljax.data.tasks import get_task
from rljax.data.tasks import Grade
from rljax.data.tasks import load_split
from rljax.data.tasks import Task
from rljax.data.tasks import task_names
from rljax.data.tasks import tokenizer_corpus
from rljax.data.tokenizer import BaseTokenizer
from rljax.data.tokenizer import EncodedSequences
from rljax.data.tokenizer import HFTokenizer
from rljax.data.tokenizer import load_tokenizer
from rljax.data.tokenizer import Tokenizer

_LAZY_SUBMODULES = ('tfds_builders', 'curricula')


def __getattr__(name):
  if name in _LAZY_SUBMODULES:
    return _importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    'BaseTokenizer', 'EncodedSequences', 'Example', 'Grade', 'HFTokenizer', 'Task', 'Tokenizer',
    'get_task', 'load_split', 'load_tokenizer', 'task_names', 'tasks', 'tokenizer',
    'tokenizer_corpus',
]
