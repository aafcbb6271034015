"""Verifiable-reward tasks: deterministic prompts, program verifiers, disjoint splits.

>>> from rljax.data import tasks
>>> task = tasks.get_task('arithmetic', levels=(2,), seed=0)
>>> ex = task.examples('train', 2)[0]
>>> ex.prompt.endswith('='), task.reward(ex.prompt, ex.demonstration)
(True, 1.0)
>>> task.reward(ex.prompt, 'no idea'), task.failure_counts
(0.0, {'not_an_integer': 1})

Answer conventions (each task's ``FORMAT`` attribute says it in full):

============  ===============================  ===============================
task          prompt                           completion
============  ===============================  ===============================
arithmetic    ``12+34=``                       ``46``
countdown     ``Make 16 with 3 5 2 7:``        ``(3+5)*2``
sorting       ``sort 53 7 21:``                ``7 21 53``
reversal      ``reverse abcd:``                ``dcba``
gsm8k         ``Question: ...\\nAnswer:\\n``     ``... \\n#### 72``
prompt_file   the file's prompt field          what its verifier reads
============  ===============================  ===============================
"""

from __future__ import annotations

from typing import Callable, Iterable, Union

from rljax.data.tasks.arithmetic import Arithmetic
from rljax.data.tasks.base import Example
from rljax.data.tasks.base import Grade
from rljax.data.tasks.base import split_of_key
from rljax.data.tasks.base import SPLITS
from rljax.data.tasks.base import Task
from rljax.data.tasks.countdown import Countdown
from rljax.data.tasks.countdown import evaluate_expression
from rljax.data.tasks.countdown import ExpressionError
from rljax.data.tasks.countdown import parse_expression
from rljax.data.tasks.gsm8k import GSM8K
from rljax.data.tasks.prompt_file import PromptFile
from rljax.data.tasks.sequence import Reversal
from rljax.data.tasks.sequence import Sorting

_REGISTRY: dict[str, Callable[..., Task]] = {
    'arithmetic': Arithmetic,
    'countdown': Countdown,
    'sorting': Sorting,
    'reversal': Reversal,
    'gsm8k': GSM8K,
    'prompt_file': PromptFile,
}


def register_task(name: str, factory: Callable[..., Task]) -> None:
  """Registers a task factory under `name` for `get_task` (raises if the name is taken)."""
  if name in _REGISTRY:
    raise ValueError(f'Task {name!r} is already registered.')
  _REGISTRY[name] = factory


def task_names() -> tuple[str, ...]:
  """The names `get_task` accepts."""
  return tuple(_REGISTRY)


def get_task(name: str, **kwargs) -> Task:
  """Builds the task called `name` with constructor keyword arguments `kwargs`.

  Args:
    name: one of `task_names()`: ``'arithmetic'``, ``'countdown'``, ``'sorting'``,
      ``'reversal'``, ``'gsm8k'`` (needs ``path=`` or ``train_path=``/``test_path=``),
      ``'prompt_file'`` (needs ``path=``; see `PromptFile`).
    **kwargs: e.g. ``seed``, ``levels``, ``test_fraction``, ``format_reward``, ``num_train``,
      ``num_test`` and task-specific options (see each class).

  Raises:
    ValueError: for an unknown name.
  """
  if name not in _REGISTRY:
    raise ValueError(f'Unknown task {name!r}; valid names: {task_names()}.')
  return _REGISTRY[name](**kwargs)


TaskLike = Union[str, Task]


def _as_task(task: TaskLike) -> Task:
  return get_task(task) if isinstance(task, str) else task


def load_split(task: TaskLike, split: str = 'train', num: int | None = None, *,
               level: int | None = None) -> dict[str, list]:
  """A task split as plain Python lists, without TFDS.

  Args:
    task: a `Task` or a task name (built with default arguments).
    split: ``'train'`` or ``'test'``.
    num: number of examples (the task's default if ``None``).
    level: restrict to one difficulty level.

  Returns:
    ``{'prompt': [str], 'answer': [str], 'demonstration': [str], 'level': [int]}``, aligned.
  """
  examples = _as_task(task).examples(split, num, level=level)
  return {
      'prompt': [ex.prompt for ex in examples],
      'answer': [ex.answer for ex in examples],
      'demonstration': [ex.demonstration for ex in examples],
      'level': [int(ex.metadata['level']) for ex in examples],
  }


def tokenizer_corpus(tasks: Iterable[TaskLike] | TaskLike, num_per_task: int = 2000, *,
                     split: str = 'train') -> list[str]:
  """Texts (``prompt + demonstration``) for training a tokenizer on the tasks' language.

  Args:
    tasks: tasks or task names (one or several).
    num_per_task: examples drawn from each task (capped at what the split holds for file-based
      tasks).
    split: which split to read (train by default, so test prompts never shape the vocabulary).

  Returns:
    A list of strings, task by task.
  """
  if isinstance(tasks, (str, Task)):
    tasks = [tasks]
  texts: list[str] = []
  for t in tasks:
    task = _as_task(t)
    if isinstance(task, (GSM8K, PromptFile)):
      num = min(num_per_task, len(task.examples(split)))
    else:
      num = num_per_task
    texts.extend(ex.text for ex in task.examples(split, num, unique=False))
  return texts


__all__ = [
    'Arithmetic', 'Countdown', 'Example', 'ExpressionError', 'GSM8K', 'Grade', 'PromptFile',
    'Reversal',
    'SPLITS', 'Sorting', 'Task', 'evaluate_expression', 'get_task', 'load_split',
    'parse_expression', 'register_task', 'split_of_key', 'task_names', 'tokenizer_corpus',
]
