"""Sequence tasks: sorting a list of integers and reversing a string."""

from __future__ import annotations

import re
import string

from rljax.data.tasks import base

_SORT_PROMPT_RE = re.compile(r'sort ([0-9]+(?: [0-9]+)*):')
_ITEM_RE = re.compile(r'[0-9]{1,12}')
MAX_COMPLETION_CHARS = 4096


class Sorting(base.Task):
  """Sort integers in ascending order; the level is the list length.

  Prompt ``'sort {x_1} ... {x_k}:'``, e.g. ``'sort 53 7 21:'``; answer and demonstration
  ``'7 21 53'``. Items are drawn uniformly (with repetition) from ``[min_value, max_value]``.

  Split key: the sorted items (the multiset), so every ordering of one multiset -- all with the
  same answer -- falls into the same split.

  Args:
    levels: list lengths to generate (each in [1, 64]).
    min_value, max_value: range of the items (inclusive, >= 0).
    **kwargs: `base.Task` arguments.
  """

  name = 'sorting'
  FORMAT = ('The completion is the sorted integers separated by single spaces, e.g. "7 21 53"; '
            'whitespace around and between items is not significant; any non-integer item is '
            'malformed.')

  def __init__(self, *, levels: tuple[int, ...] = (3, 4, 5), min_value: int = 0,
               max_value: int = 99, **kwargs):
    super().__init__(**kwargs)
    levels = tuple(sorted(set(int(k) for k in levels)))
    if not levels or any(k < 1 or k > 64 for k in levels):
      raise ValueError(f'levels must be list lengths in [1, 64], got {levels}.')
    if not 0 <= min_value <= max_value:
      raise ValueError(f'need 0 <= min_value <= max_value, got {min_value}, {max_value}.')
    self._levels = levels
    self.min_value, self.max_value = int(min_value), int(max_value)

  @property
  def levels(self) -> tuple[int, ...]:
    return self._levels

  def _generate(self, rng, level):
    items = [rng.randint(self.min_value, self.max_value) for _ in range(level)]
    answer = ' '.join(str(x) for x in sorted(items))
    prompt = f'sort {" ".join(str(x) for x in items)}:'
    key = ','.join(str(x) for x in sorted(items))
    return key, base.Example(prompt=prompt, answer=answer, demonstration=answer,
                             metadata={'items': tuple(items)})

  def _grade(self, prompt, completion):
    m = _SORT_PROMPT_RE.fullmatch(prompt) if isinstance(prompt, str) else None
    if m is None:
      raise self._prompt_error(prompt)
    expected = sorted(int(x) for x in m.group(1).split(' '))
    text = completion.strip()
    if not text:
      return base.Grade(False, False, 'empty')
    if len(text) > MAX_COMPLETION_CHARS:
      return base.Grade(False, False, 'too_long')
    parts = text.split()
    if not all(_ITEM_RE.fullmatch(p) for p in parts):
      return base.Grade(False, False, 'not_integers')
    if [int(p) for p in parts] == expected:
      return base.Grade(True, True, None)
    return base.Grade(False, True, 'wrong_answer')


class Reversal(base.Task):
  """Reverse a string of characters; the level is the string length.

  Prompt ``'reverse {s}:'``, e.g. ``'reverse abcd:'``; answer and demonstration ``'dcba'``.
  Characters are drawn uniformly (with repetition) from `alphabet`.

  Split key: the string itself.

  Args:
    levels: string lengths to generate (each in [1, 256]).
    alphabet: the characters to draw from (no whitespace, no ``':'``, no duplicates).
    **kwargs: `base.Task` arguments.
  """

  name = 'reversal'
  FORMAT = ('The completion is the reversed string, e.g. "dcba", with no separators; whitespace '
            'around it is ignored; characters outside the alphabet are malformed.')

  def __init__(self, *, levels: tuple[int, ...] = (3, 4, 5, 6),
               alphabet: str = string.ascii_lowercase, **kwargs):
    super().__init__(**kwargs)
    levels = tuple(sorted(set(int(k) for k in levels)))
    if not levels or any(k < 1 or k > 256 for k in levels):
      raise ValueError(f'levels must be string lengths in [1, 256], got {levels}.')
    if (not alphabet or len(set(alphabet)) != len(alphabet) or ':' in alphabet
        or any(c.isspace() for c in alphabet)):
      raise ValueError('alphabet must be non-empty, without duplicates, whitespace or ":", '
                       f'got {alphabet!r}.')
    self._levels = levels
    self.alphabet = alphabet
    self._alphabet_set = frozenset(alphabet)
    self._prompt_re = re.compile(f'reverse ([{re.escape(alphabet)}]+):')

  @property
  def levels(self) -> tuple[int, ...]:
    return self._levels

  def _generate(self, rng, level):
    s = ''.join(rng.choice(self.alphabet) for _ in range(level))
    answer = s[::-1]
    return s, base.Example(prompt=f'reverse {s}:', answer=answer, demonstration=answer,
                           metadata={'string': s})

  def _grade(self, prompt, completion):
    m = self._prompt_re.fullmatch(prompt) if isinstance(prompt, str) else None
    if m is None:
      raise self._prompt_error(prompt)
    expected = m.group(1)[::-1]
    text = completion.strip()
    if not text:
      return base.Grade(False, False, 'empty')
    if len(text) > MAX_COMPLETION_CHARS:
      return base.Grade(False, False, 'too_long')
    if not set(text) <= self._alphabet_set:
      return base.Grade(False, False, 'invalid_character')
    if text == expected:
      return base.Grade(True, True, None)
    return base.Grade(False, True, 'wrong_answer')
