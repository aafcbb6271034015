"""Multi-digit integer arithmetic: addition, subtraction, multiplication."""

from __future__ import annotations

import random
import re

from rljax.data.tasks import base

_PROMPT_RE = re.compile(r'([0-9]+)([-+*])([0-9]+)=')
_INT_RE = re.compile(r'-?[0-9]+')
_MAX_ANSWER_CHARS = 200

_OPS = {
    '+': lambda a, b: a + b,
    '-': lambda a, b: a - b,
    '*': lambda a, b: a * b,
}


def parse_integer_answer(completion: str, max_chars: int = _MAX_ANSWER_CHARS
                         ) -> tuple[int | None, str | None]:
  """Parses a completion that must be a bare decimal integer.

  Returns:
    ``(value, None)`` on success, ``(None, reason)`` otherwise, with reason one of ``'empty'``,
    ``'too_long'`` (more than `max_chars` characters after stripping), ``'not_an_integer'``.
  """
  text = completion.strip()
  if not text:
    return None, 'empty'
  if len(text) > max_chars:
    return None, 'too_long'
  if not _INT_RE.fullmatch(text):
    return None, 'not_an_integer'
  return int(text), None


class Arithmetic(base.Task):
  """``a <op> b`` with ``op`` in ``+ - *``; the level is the number of digits of each operand.

  Prompt ``'{a}{op}{b}='``, e.g. ``'12+34='``; answer and demonstration ``'46'``.

  At level ``d`` both operands are drawn uniformly from the ``d``-digit integers (``0..9`` for
  ``d = 1``, ``10**(d-1)..10**d - 1`` otherwise) and the operator uniformly from `ops`. With
  ``allow_negative=False`` the operands of ``-`` are ordered so that the result is >= 0. Use the
  levels to demonstrate short operands and train with RL on longer ones, e.g.
  ``task.examples('train', 2000, level=2)`` then ``task.examples('train', level=4)``.

  Split key: ``'{a}{op}{b}'`` with the operands of ``+`` and ``*`` sorted, so that ``12+34`` and
  ``34+12`` fall into the same split.

  Args:
    levels: operand digit counts to generate (each >= 1).
    ops: a non-empty subset of ``('+', '-', '*')``.
    allow_negative: allow negative differences.
    **kwargs: `base.Task` arguments (seed, test_fraction, format_reward, num_train, num_test).
  """

  name = 'arithmetic'
  FORMAT = ('The completion is the result as a bare decimal integer (e.g. "46" or "-7"); '
            'whitespace around it is ignored; anything else is malformed.')

  def __init__(self, *, levels: tuple[int, ...] = (1, 2, 3),
               ops: tuple[str, ...] = ('+', '-', '*'), allow_negative: bool = False, **kwargs):
    super().__init__(**kwargs)
    levels = tuple(int(d) for d in levels)
    if not levels or any(d < 1 or d > 64 for d in levels):
      raise ValueError(f'levels must be a non-empty tuple of digit counts in [1, 64], got {levels}.')
    ops = tuple(ops)
    if not ops or any(op not in _OPS for op in ops):
      raise ValueError(f'ops must be a non-empty subset of {tuple(_OPS)}, got {ops}.')
    self._levels = tuple(sorted(set(levels)))
    self.ops = ops
    self.allow_negative = bool(allow_negative)

  @property
  def levels(self) -> tuple[int, ...]:
    return self._levels

  @staticmethod
  def _operand(rng: random.Random, digits: int) -> int:
    lo = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randrange(lo, 10 ** digits)

  @staticmethod
  def key(a: int, op: str, b: int) -> str:
    if op in '+*':
      a, b = min(a, b), max(a, b)
    return f'{a}{op}{b}'

  def _generate(self, rng, level):
    op = self.ops[rng.randrange(len(self.ops))]
    a = self._operand(rng, level)
    b = self._operand(rng, level)
    if op == '-' and not self.allow_negative and a < b:
      a, b = b, a
    answer = str(_OPS[op](a, b))
    prompt = f'{a}{op}{b}='
    ex = base.Example(prompt=prompt, answer=answer, demonstration=answer,
                      metadata={'a': a, 'b': b, 'op': op})
    return self.key(a, op, b), ex

  def systematic_error(self, example: base.Example) -> str | None:
    """The answer with the carry out of the top digit dropped: ``'999+999='`` -> ``'998'``.

    Applies to ``+`` problems whose sum has more digits than the longer operand (the teacher
    writes only as many digits as the operands have); None for the others.
    """
    meta = example.metadata
    if meta.get('op') != '+':
      return None
    a, b = meta['a'], meta['b']
    width = max(len(str(a)), len(str(b)))
    total = str(a + b)
    return total[-width:] if len(total) > width else None

  def _parse_prompt(self, prompt: str) -> int:
    m = _PROMPT_RE.fullmatch(prompt) if isinstance(prompt, str) else None
    if m is None:
      raise self._prompt_error(prompt)
    return _OPS[m.group(2)](int(m.group(1)), int(m.group(3)))

  def _grade(self, prompt, completion):
    expected = self._parse_prompt(prompt)
    value, reason = parse_integer_answer(completion)
    if reason is not None:
      return base.Grade(False, False, reason)
    if value == expected:
      return base.Grade(True, True, None)
    return base.Grade(False, True, 'wrong_answer')
