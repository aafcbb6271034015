"""A user's own reward function, ``module:function``, loaded once and called on every batch.

The function is batched::

    def my_reward(prompts: list[str], completions: list[str], answers: list[str | None],
                  **kwargs) -> Sequence[float]:
      ...

It receives, aligned, the prompts (as given to the policy), the decoded completions and each
prompt's reference answer (None where the task has none). A function that takes ``**kwargs``
(or a parameter named ``metadata``) also receives ``metadata: list[dict]``: each example's
metadata (for a prompt file, ``metadata['record']`` is the file's whole record). It returns one
finite float per completion (a list, tuple or NumPy array).

Failures never stop a run: if the batch call raises, the function is called once per item and
each item that raises gets reward 0; every failed item is counted (`RewardFunction.errors`) and
the first message is logged as a warning. A return of the wrong length, a value that is not a
number, or a NaN or infinity is a bug of the function, not of one completion: it raises
`RewardError` naming the function.

>>> fn = RewardFunction(lambda prompts, completions, answers: [len(c) for c in completions])
>>> fn(['p', 'q'], ['ab', 'abc'], [None, None]).tolist()
[2.0, 3.0]
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import logging
import os
import sys
import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np


class RewardError(ValueError):
  """A reward function that cannot be loaded or that returned something other than rewards."""


def _import_file(path: str):
  name = '_rljax_reward_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise RewardError(f'cannot import {path!r} as a Python file')
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


@functools.lru_cache(maxsize=None)
def load_reward(spec: str) -> Callable[..., Sequence[float]]:
  """The function `spec` names: ``'package.module:function'`` or ``'path/to/file.py:function'``.

  Raises:
    RewardError: for a spec without ``:``, a module or file that cannot be imported (with the
      import error's message), or a missing or non-callable attribute.
  """
  module_name, sep, attr = spec.rpartition(':')
  if not sep or not module_name or not attr:
    raise RewardError(f'{spec!r} is not of the form module:function or path/to/file.py:function')
  try:
    if module_name.endswith('.py'):
      if not os.path.isfile(module_name):
        raise RewardError(f'{module_name} does not exist')
      module = _import_file(module_name)
    else:
      module = importlib.import_module(module_name)
  except RewardError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # Any import-time error of user code.
    raise RewardError(f'cannot import {module_name!r}: {type(e).__name__}: {e}') from None
  fn = getattr(module, attr, None)
  if fn is None:
    raise RewardError(f'{module_name!r} has no attribute {attr!r}')
  if not callable(fn):
    raise RewardError(f'{module_name}:{attr} is a {type(fn).__name__}, not a function')
  return fn


def _takes_metadata(fn: Callable[..., Any]) -> bool:
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return False
  return any(p.kind is p.VAR_KEYWORD or p.name == 'metadata' for p in params)


class RewardFunction:
  """Calls a batched reward function, counting its failures instead of raising them.

  Args:
    fn: the function (see the module doc), or a ``module:function`` spec for `load_reward`.
    label: how messages name the function (default: the spec or the function's name), e.g.
      the command-line flag that set it.
    error_class: the exception raised for a return that is not rewards (a subclass of
      `ValueError`; a harness passes its own to print it as a one-line error).
  """

  def __init__(self, fn: Callable[..., Sequence[float]] | str, label: str | None = None, *,
               error_class: type[ValueError] = RewardError):
    if isinstance(fn, str):
      label = label or fn
      fn = load_reward(fn)
    self.error_class = error_class
    self.fn = fn
    self.label = label or getattr(fn, '__name__', repr(fn))
    self.errors = 0
    self.calls = 0
    self._pass_metadata = _takes_metadata(fn)
    self._warned = False
    self._lock = threading.Lock()

  def _call(self, prompts, completions, answers, metadata) -> Any:
    if self._pass_metadata:
      return self.fn(prompts, completions, answers, metadata=metadata)
    return self.fn(prompts, completions, answers)

  def _failed(self, error: BaseException, count: int) -> None:
    with self._lock:
      self.errors += count
      first = not self._warned
      self._warned = True
    if first:
      logging.warning('reward %s raised %s: %s (the failing completions get reward 0; counted in '
                      'reward/errors; reported once).', self.label, type(error).__name__, error)

  def _check(self, values: Any, n: int) -> np.ndarray:
    try:
      out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
      raise self.error_class(f'reward {self.label} returned {type(values).__name__} values '
                             f'that are not numbers ({e})') from None
    if out.shape != (n,):
      raise self.error_class(f'reward {self.label} returned shape {out.shape} for {n} '
                             f'completions; it must return one float per completion')
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
      raise self.error_class(f'reward {self.label} returned {out[bad[0]]} for completion '
                             f'{bad[0]} ({bad.size} non-finite values of {n})')
    return out.astype(np.float32)

  def __call__(self, prompts: Sequence[str], completions: Sequence[str],
               answers: Sequence[str | None],
               metadata: Sequence[Mapping[str, Any]] | None = None) -> np.ndarray:
    """Rewards ``float32[n]`` of ``n`` aligned prompts, completions and answers."""
    n = len(completions)
    if not len(prompts) == len(answers) == n:
      raise ValueError(f'prompts, completions and answers must be aligned, got {len(prompts)}, '
                       f'{n} and {len(answers)}')
    metadata = [{} for _ in range(n)] if metadata is None else list(metadata)
    self.calls += 1
    try:
      values = self._call(list(prompts), list(completions), list(answers), metadata)
    except Exception as e:  # pylint: disable=broad-except  # A user bug must not stop RL.
      if n == 1:
        self._failed(e, 1)
        return np.zeros(1, np.float32)
      return self._per_item(prompts, completions, answers, metadata)
    return self._check(values, n)

  def _per_item(self, prompts, completions, answers, metadata) -> np.ndarray:
    out = np.zeros(len(completions), np.float32)
    for i, item in enumerate(zip(prompts, completions, answers, metadata)):
      try:
        values = self._call(*([v] for v in item))
      except Exception as e:  # pylint: disable=broad-except  # Counted, reward 0.
        self._failed(e, 1)
        continue
      out[i] = self._check(values, 1)[0]
    return out


class TaskWithReward:
  """`task` with the rewards of `reward`; everything else (correctness included) is the task's.

  Args:
    task: a `rljax.data.tasks.Task`.
    reward: the `RewardFunction` that gives the rewards of `grade_batch`.
    examples: the task's examples whose prompts will be graded (their answers and metadata are
      passed to `reward`; a prompt not among them gets answer None and empty metadata).
    correct_from_reward: "correct" means reward > 0 (for a task without a verifier).
  """

  def __init__(self, task, reward: RewardFunction, examples: Sequence[Any], *,
               correct_from_reward: bool = False):
    self.task = task
    self.reward = reward
    self.correct_from_reward = correct_from_reward
    self._info = {e.prompt: (e.answer, dict(e.metadata)) for e in examples}

  def __getattr__(self, name: str) -> Any:
    if name == 'task':  # Not set yet (e.g. in copy.copy): no recursion.
      raise AttributeError(name)
    return getattr(self.task, name)

  @property
  def reward_errors(self) -> int:
    """Completions whose reward call raised, so far (they got reward 0)."""
    return self.reward.errors

  def grade_batch(self, prompts: Sequence[str],
                  completions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(rewards float32[n] of the reward function, correct bool[n])``."""
    _, correct = self.task.grade_batch(prompts, completions)
    info = [self._info.get(p, (None, {})) for p in prompts]
    rewards = self.reward(prompts, completions, [a for a, _ in info], [m for _, m in info])
    if self.correct_from_reward:
      correct = rewards > 0
    return rewards, correct

  def rewards(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
    return self.grade_batch(prompts, completions)[0]

  def __repr__(self) -> str:
    return f'TaskWithReward({self.task!r}, reward={self.reward.label})'
