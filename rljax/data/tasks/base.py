"""Base classes for verifiable-reward tasks.

A task generates prompts deterministically from a seed, grades completions with a program (no
model, no `eval`), and keeps its train and test splits disjoint by construction.

Split assignment. Every problem instance has a canonical *key* (for example ``"12+34"`` with the
operands of a commutative operator sorted, or the sorted numbers and target of a countdown
puzzle). The instance belongs to the test split iff

    u(key) = int(blake2b(task_name + ":" + key)[:8]) / 2**64 < test_fraction,

and to the train split otherwise. The split is thus a function of the instance, not of the seed,
the level or the number of examples asked for: train examples drawn with any seed never appear in
any test set of the same task and `test_fraction`.

Reward. ``reward(prompt, completion) = 1[correct] + format_reward * 1[well formed]`` where
"well formed" means the completion follows the task's answer convention (documented in each
task's ``FORMAT``). With the default ``format_reward=0`` the reward is binary (a pass/fail
outcome, as the bandit curricula assume). Malformed completions (empty, unicode, 10k characters,
unbalanced brackets, absurd numbers) never raise: they get 0 and increment
``failure_counts[reason]``.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import hashlib
import logging
import random
import threading
from typing import Any, Mapping, Sequence

import numpy as np

SPLITS = ('train', 'test')

_HASH_DENOMINATOR = float(2**64)


@dataclasses.dataclass(frozen=True)
class Example:
  """One problem instance.

  Attributes:
    prompt: the text given to the policy (already in the task's prompt template).
    answer: the reference answer as a string (what a correct completion must be or evaluate to;
      for countdown the target number, for gsm8k the number after ``####``).
    demonstration: one correct completion, for supervised warm start (the completion only, not
      the prompt; append the tokenizer's end-of-sequence token when training).
    metadata: task-specific fields, always including ``'level'`` (int difficulty bucket),
      ``'key'`` (canonical instance key that decides the split) and ``'split'``.
  """

  prompt: str
  answer: str
  demonstration: str
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def text(self) -> str:
    """``prompt + demonstration``: the full supervised text of this example."""
    return self.prompt + self.demonstration


@dataclasses.dataclass(frozen=True)
class Grade:
  """The verdict on one completion.

  Attributes:
    correct: the completion's answer is right.
    well_formed: the completion follows the task's answer format.
    reason: ``None`` when correct; otherwise a short reason (``'empty'``, ``'parse_error'``,
      ``'wrong_answer'``, ...). Reasons of malformed completions are counted in
      `Task.failure_counts`.
  """

  correct: bool
  well_formed: bool
  reason: str | None = None


def split_of_key(task_name: str, key: str, test_fraction: float) -> str:
  """Returns ``'test'`` or ``'train'`` for an instance key (see the module docstring)."""
  digest = hashlib.blake2b(f'{task_name}:{key}'.encode('utf-8'), digest_size=8).digest()
  u = int.from_bytes(digest, 'big') / _HASH_DENOMINATOR
  return 'test' if u < test_fraction else 'train'


def _check_split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  return split


class Task(abc.ABC):
  """A verifiable-reward task: deterministic prompts, a program verifier, disjoint splits.

  Subclasses set `name` and `FORMAT`, and implement `levels`, `_grade` and (for generated
  tasks) `_generate`; a task read from files overrides `examples` instead.

  Args:
    seed: seed of the example generator; `examples` is a deterministic function of
      ``(seed, split, level, num)`` and ``examples(s, n)`` is a prefix of ``examples(s, n + k)``.
    test_fraction: fraction of the instance space assigned to the test split, in (0, 1).
    format_reward: weight of the format part of the reward (0 gives a binary reward).
    num_train: default number of examples returned by ``examples('train')``.
    num_test: default number of examples returned by ``examples('test')``.
  """

  name: str = ''
  FORMAT: str = ''

  def __init__(self, *, seed: int = 0, test_fraction: float = 0.1, format_reward: float = 0.0,
               num_train: int = 10_000, num_test: int = 500):
    if not 0.0 < test_fraction < 1.0:
      raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction}.')
    if int(seed) < 0:
      raise ValueError(f'seed must be >= 0, got {seed}.')
    if not np.isfinite(format_reward) or format_reward < 0:
      raise ValueError(f'format_reward must be a finite number >= 0, got {format_reward}.')
    for arg, value in (('num_train', num_train), ('num_test', num_test)):
      if int(value) < 0:
        raise ValueError(f'{arg} must be >= 0, got {value}.')
    self.seed = int(seed)
    self.test_fraction = float(test_fraction)
    self.format_reward = float(format_reward)
    self.default_num = {'train': int(num_train), 'test': int(num_test)}
    self._failures: collections.Counter[str] = collections.Counter()
    self._lock = threading.Lock()
    self._warned_internal = False

  # ------------------------------------------------------------------ generation

  @property
  @abc.abstractmethod
  def levels(self) -> tuple[int, ...]:
    """The difficulty levels this task generates (for curricula over difficulty buckets)."""

  def split_of(self, key: str) -> str:
    """The split (``'train'`` or ``'test'``) that the instance with canonical `key` belongs to."""
    return split_of_key(self.name, key, self.test_fraction)

  def _generate(self, rng: random.Random, level: int) -> tuple[str, Example]:
    """Draws one instance of `level`: returns ``(key, example)`` (metadata filled by caller)."""
    raise NotImplementedError

  def systematic_error(self, example: Example) -> str | None:
    """The demonstration a teacher with this task's typical systematic mistake writes.

    None where the mistake does not apply to `example` (and for a task that defines none, the
    default). Harnesses use it to build an imperfect teacher whose errors follow a rule, which
    supervised learning picks up and a verifier's reward does not.
    """
    del example
    return None

  def _rng(self, split: str, level: int | None) -> random.Random:
    """A generator seeded from ``(seed, split, level)``.

    Python's Mersenne Twister is used rather than NumPy's because the generators draw one small
    integer at a time, where NumPy's per-call overhead dominates (about 5x slower).
    """
    entropy = [self.seed, SPLITS.index(split), -1 if level is None else int(level)]
    # SeedSequence mixes the words; it needs them non-negative.
    state = np.random.SeedSequence([e + 1 for e in entropy]).generate_state(2, np.uint64)
    return random.Random(int(state[0]) << 64 | int(state[1]))

  def examples(self, split: str, num: int | None = None, *, level: int | None = None,
               unique: bool = True) -> list[Example]:
    """Returns `num` examples of `split`, deterministic given the seed.

    Args:
      split: ``'train'`` or ``'test'``.
      num: how many; defaults to ``num_train`` / ``num_test`` of the constructor.
      level: draw only this difficulty level; ``None`` draws a level uniformly from `levels`
        for each example (with `unique`, once a small level has no new instances left in the
        split, the remaining examples come from the other levels).
      unique: no two returned examples share a prompt.

    Returns:
      A list of `num` `Example`s, all from `split`.

    Raises:
      ValueError: on an unknown split or level, or when `unique` and the split holds fewer than
        `num` distinct instances of the requested level(s).
    """
    _check_split(split)
    num = self.default_num[split] if num is None else int(num)
    if num < 0:
      raise ValueError(f'num must be >= 0, got {num}.')
    levels = self.levels
    if level is not None and level not in levels:
      raise ValueError(f'level must be one of {levels} for task {self.name!r}, got {level!r}.')
    rng = self._rng(split, level)
    out: list[Example] = []
    seen: set[str] = set()
    # Give up after this many draws in a row without a new example of the split (about 100
    # times the expected number of draws per example when nothing is exhausted).
    split_fraction = self.test_fraction if split == 'test' else 1.0 - self.test_fraction
    patience = int(100 / split_fraction) + 1000
    stale = 0
    while len(out) < num:
      if stale > patience:
        raise ValueError(
            f'Task {self.name!r}: found only {len(out)} distinct {split} examples '
            f'(level={level}); {patience} draws in a row gave nothing new. Ask for fewer '
            f'(num={num}), allow larger levels, or pass unique=False.')
      stale += 1
      lvl = levels[rng.randrange(len(levels))] if level is None else int(level)
      key, ex = self._generate(rng, lvl)
      if self.split_of(key) != split:
        continue
      if unique:
        if ex.prompt in seen:
          continue
        seen.add(ex.prompt)
      stale = 0
      meta = dict(ex.metadata)
      meta.update(level=lvl, key=key, split=split)
      out.append(dataclasses.replace(ex, metadata=meta))
    return out

  def split_size(self, split: str) -> int | None:
    """How many distinct examples `split` holds when it is a fixed set (a file), else None.

    Generated tasks return None: their splits are as large as their levels allow.
    """
    _check_split(split)
    return None

  def _seeded_subset(self, rows: list[Example], split: str, level: int | None,
                     num: int | None, what: str) -> list[Example]:
    """`num` of a fixed split's `rows` (all if None) in an order fixed by the seed.

    Raises:
      ValueError: naming `what` (the split's description) if it holds fewer than `num`.
    """
    num = len(rows) if num is None else int(num)
    if not 0 <= num <= len(rows):
      raise ValueError(f'{what} has {len(rows)} examples; asked for num={num}.')
    order = list(range(len(rows)))
    self._rng(split, level).shuffle(order)
    return [rows[i] for i in order[:num]]

  def prompts(self, split: str, num: int | None = None, *, level: int | None = None) -> list[str]:
    """The prompts of ``examples(split, num, level=level)``."""
    return [ex.prompt for ex in self.examples(split, num, level=level)]

  def demonstrations(self, split: str, num: int | None = None, *,
                     level: int | None = None) -> list[str]:
    """The demonstrations (completions only) of ``examples(split, num, level=level)``."""
    return [ex.demonstration for ex in self.examples(split, num, level=level)]

  # ------------------------------------------------------------------ grading

  @abc.abstractmethod
  def _grade(self, prompt: str, completion: str) -> Grade:
    """Grades a completion; may raise `ValueError` for a prompt not made by this task."""

  def grade(self, prompt: str, completion: str) -> Grade:
    """Grades `completion` for `prompt` without raising on any completion.

    Malformed completions are counted in `failure_counts` under their reason.

    Raises:
      ValueError: only if `prompt` is not a prompt of this task (a caller error).
    """
    if not isinstance(completion, str):
      grade = Grade(False, False, 'not_a_string')
    else:
      try:
        grade = self._grade(prompt, completion)
      except _PromptError:
        raise
      except (RecursionError, MemoryError, OverflowError, ValueError, ArithmeticError,
              IndexError, KeyError, TypeError) as e:  # Defensive: a verifier bug must not crash RL.
        grade = Grade(False, False, 'internal_error')
        if not self._warned_internal:
          self._warned_internal = True
          logging.warning('Task %r: verifier error %r on completion %r (reported once).',
                          self.name, e, completion[:200])
    if not grade.well_formed:
      with self._lock:
        self._failures[grade.reason or 'malformed'] += 1
    return grade

  def reward(self, prompt: str, completion: str) -> float:
    """``1[correct] + format_reward * 1[well formed]``; 0.0 on any malformed completion."""
    return self._reward_of(self.grade(prompt, completion))

  def is_correct(self, prompt: str, completion: str) -> bool:
    """Whether `completion` answers `prompt` correctly (never raises on the completion)."""
    return self.grade(prompt, completion).correct

  def grade_batch(self, prompts: Sequence[str],
                  completions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rewards and correctness of ``n`` prompt/completion pairs, one `grade` call per pair.

    One call per pair means `failure_counts` counts each malformed completion once, where
    calling `reward` and `is_correct` on the same pair would count it twice.

    Returns:
      ``(rewards float32[n], correct bool[n])``, rewards as in `reward`.
    """
    if len(prompts) != len(completions):
      raise ValueError(f'prompts and completions must have the same length, got '
                       f'{len(prompts)} and {len(completions)}.')
    grades = [self.grade(p, c) for p, c in zip(prompts, completions)]
    return (np.asarray([self._reward_of(g) for g in grades], np.float32),
            np.asarray([g.correct for g in grades], bool))

  def rewards(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
    """Vectorised `reward`: returns ``float32[n]`` for ``n`` prompt/completion pairs."""
    return self.grade_batch(prompts, completions)[0]

  def _reward_of(self, grade: Grade) -> float:
    return float(grade.correct) + self.format_reward * float(grade.well_formed)

  @property
  def failure_counts(self) -> dict[str, int]:
    """How many malformed completions were seen, by reason (a copy)."""
    with self._lock:
      return dict(self._failures)

  def reset_failure_counts(self) -> None:
    with self._lock:
      self._failures.clear()

  def _prompt_error(self, prompt: Any) -> '_PromptError':
    text = repr(prompt)[:120]
    return _PromptError(f'Task {self.name!r}: {text} is not a prompt of this task.')

  def __repr__(self) -> str:
    return (f'{type(self).__name__}(seed={self.seed}, levels={self.levels}, '
            f'test_fraction={self.test_fraction}, format_reward={self.format_reward})')


class _PromptError(ValueError):
  """A prompt that this task did not produce (a caller error, so it propagates)."""
