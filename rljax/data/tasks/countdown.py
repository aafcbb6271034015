"""Countdown: reach a target number with + - * / and parentheses over given numbers.

The verifier parses the completion with a small recursive-descent parser and evaluates it with
exact rational arithmetic (`fractions.Fraction`); nothing is passed to `eval`.

Grammar (whitespace between tokens is ignored)::

    expr   := term   (('+' | '-') term)*
    term   := factor (('*' | '/') factor)*
    factor := NUMBER | '(' expr ')'
    NUMBER := [0-9]+

There is no unary minus and no exponentiation, so ``10**10000`` and ``-3`` are parse errors.
"""

from __future__ import annotations

import collections
import fractions
import random
import re
from typing import Union

from rljax.data.tasks import base

_PROMPT_RE = re.compile(r'Make ([0-9]+) with ([0-9]+(?: [0-9]+)*):')
MAX_EXPRESSION_CHARS = 256
MAX_DEPTH = 32
MAX_NUMBER_DIGITS = 12

# An expression tree: an int leaf, or (op, left, right).
Node = Union[int, tuple]


class ExpressionError(ValueError):
  """A completion that is not a valid expression; ``reason`` says why."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


def tokenize_expression(text: str) -> list[str]:
  """Splits `text` into number, operator and parenthesis tokens.

  Raises:
    ExpressionError: with reason ``'empty'``, ``'too_long'``, ``'invalid_character'`` or
      ``'number_too_long'``.
  """
  if not text.strip():
    raise ExpressionError('empty')
  if len(text) > MAX_EXPRESSION_CHARS:
    raise ExpressionError('too_long')
  tokens: list[str] = []
  i, n = 0, len(text)
  while i < n:
    c = text[i]
    if c in ' \t\n\r':
      i += 1
    elif c in '+-*/()':
      tokens.append(c)
      i += 1
    elif '0' <= c <= '9':
      j = i
      while j < n and '0' <= text[j] <= '9':
        j += 1
      if j - i > MAX_NUMBER_DIGITS:
        raise ExpressionError('number_too_long')
      tokens.append(text[i:j])
      i = j
    else:
      raise ExpressionError('invalid_character')
  return tokens


class _Parser:
  """Recursive-descent parser over the tokens of `tokenize_expression`."""

  def __init__(self, tokens: list[str]):
    self.tokens = tokens
    self.pos = 0

  def peek(self) -> str | None:
    return self.tokens[self.pos] if self.pos < len(self.tokens) else None

  def take(self) -> str:
    tok = self.tokens[self.pos]
    self.pos += 1
    return tok

  def parse(self) -> Node:
    node = self.expr(0)
    if self.pos != len(self.tokens):
      raise ExpressionError('parse_error')
    return node

  def expr(self, depth: int) -> Node:
    node = self.term(depth)
    while self.peek() in ('+', '-'):
      op = self.take()
      node = (op, node, self.term(depth))
    return node

  def term(self, depth: int) -> Node:
    node = self.factor(depth)
    while self.peek() in ('*', '/'):
      op = self.take()
      node = (op, node, self.factor(depth))
    return node

  def factor(self, depth: int) -> Node:
    tok = self.peek()
    if tok is None:
      raise ExpressionError('parse_error')
    if tok == '(':
      if depth >= MAX_DEPTH:
        raise ExpressionError('too_deep')
      self.take()
      node = self.expr(depth + 1)
      if self.peek() != ')':
        raise ExpressionError('parse_error')
      self.take()
      return node
    if tok.isdigit():
      self.take()
      return int(tok)
    raise ExpressionError('parse_error')


def parse_expression(text: str) -> Node:
  """Parses `text` into an expression tree (int leaves, ``(op, left, right)`` nodes).

  Raises:
    ExpressionError: if `text` is not an expression of the grammar above.
  """
  return _Parser(tokenize_expression(text)).parse()


def expression_numbers(node: Node) -> list[int]:
  """The numbers (leaves) of an expression tree, left to right."""
  if isinstance(node, int):
    return [node]
  return expression_numbers(node[1]) + expression_numbers(node[2])


def evaluate_expression(node: Node) -> fractions.Fraction:
  """Evaluates an expression tree exactly.

  Raises:
    ZeroDivisionError: on division by zero.
  """
  if isinstance(node, int):
    return fractions.Fraction(node)
  op, left, right = node
  a, b = evaluate_expression(left), evaluate_expression(right)
  if op == '+':
    return a + b
  if op == '-':
    return a - b
  if op == '*':
    return a * b
  return a / b  # Raises ZeroDivisionError on b == 0.


_PRECEDENCE = {'+': 1, '-': 1, '*': 2, '/': 2}
_ATOM = 3


def _combine(op: str, left: tuple[int, str, int], right: tuple[int, str, int]
             ) -> tuple[str, int]:
  """Writes ``left op right`` with the fewest parentheses; returns (text, precedence)."""
  p = _PRECEDENCE[op]
  ltext = f'({left[1]})' if left[2] < p else left[1]
  # The right operand of a non-associative operator needs parentheses at equal precedence.
  needs = right[2] < p or (right[2] == p and op in '-/')
  rtext = f'({right[1]})' if needs else right[1]
  return f'{ltext}{op}{rtext}', p


class Countdown(base.Task):
  """Combine the given numbers with ``+ - * /`` to reach the target; each number at most once.

  Prompt ``'Make {target} with {n_1} ... {n_k}:'``, e.g. ``'Make 16 with 3 5 2 7:'``; answer
  ``'16'``; demonstration a solution such as ``'(3+5)*2'``. The level is the count ``k`` of given
  numbers.

  Generation (solvable by construction): draw ``k`` numbers uniformly in
  ``[min_number, max_number]``, then repeatedly replace two random entries by a random valid
  combination (``a+b``, ``a*b``, ``a-b`` if ``a > b``, ``a/b`` if ``b > 1`` divides ``a``) until one
  value is left; keep it as the target if it lies in ``[min_target, max_target]`` (otherwise
  retry). The demonstration therefore uses every number once and keeps all intermediate values
  positive integers, as in the game; the verifier accepts any expression that uses each given
  number at most once (exactly once with ``use_all_numbers=True``) and equals the target in exact
  rational arithmetic.

  Split key: the sorted numbers and the target, so permutations of one puzzle share a split.

  Args:
    levels: counts of given numbers to generate (each in [2, 8]).
    min_number, max_number: range of the given numbers (inclusive, >= 1).
    min_target, max_target: range of the targets (inclusive).
    use_all_numbers: the verifier requires each number to be used exactly once.
    **kwargs: `base.Task` arguments.
  """

  name = 'countdown'
  FORMAT = ('The completion is one arithmetic expression over the given numbers with + - * / and '
            'parentheses, e.g. "(3+5)*2", nothing else (no "=", no unary minus). Each given '
            'number may be used at most once; the value must equal the target exactly.')

  def __init__(self, *, levels: tuple[int, ...] = (3, 4), min_number: int = 1,
               max_number: int = 20, min_target: int = 1, max_target: int = 100,
               use_all_numbers: bool = False, **kwargs):
    super().__init__(**kwargs)
    levels = tuple(sorted(set(int(k) for k in levels)))
    if not levels or any(k < 2 or k > 8 for k in levels):
      raise ValueError(f'levels must be counts of numbers in [2, 8], got {levels}.')
    if not 1 <= min_number <= max_number:
      raise ValueError(f'need 1 <= min_number <= max_number, got {min_number}, {max_number}.')
    if not 1 <= min_target <= max_target:
      raise ValueError(f'need 1 <= min_target <= max_target, got {min_target}, {max_target}.')
    self._levels = levels
    self.min_number, self.max_number = int(min_number), int(max_number)
    self.min_target, self.max_target = int(min_target), int(max_target)
    self.use_all_numbers = bool(use_all_numbers)

  @property
  def levels(self) -> tuple[int, ...]:
    return self._levels

  @staticmethod
  def key(numbers, target: int) -> str:
    return ','.join(str(x) for x in sorted(numbers)) + f'->{target}'

  @staticmethod
  def prompt_for(numbers, target: int) -> str:
    return f'Make {target} with {" ".join(str(x) for x in numbers)}:'

  def _solve_randomly(self, rng: random.Random, numbers: list[int]
                      ) -> tuple[int, str]:
    items = [(x, str(x), _ATOM) for x in numbers]
    while len(items) > 1:
      n = len(items)
      i = rng.randrange(n)
      j = rng.randrange(n - 1)
      j += j >= i  # Two distinct indices, uniformly.
      a, b = items[i], items[j]
      ops = ['+', '*']
      if a[0] > b[0]:
        ops.append('-')
      if b[0] > 1 and a[0] % b[0] == 0:
        ops.append('/')
      op = ops[rng.randrange(len(ops))]
      if op == '+':
        value = a[0] + b[0]
      elif op == '*':
        value = a[0] * b[0]
      elif op == '-':
        value = a[0] - b[0]
      else:
        value = a[0] // b[0]
      text, prec = _combine(op, a, b)
      items = [it for t, it in enumerate(items) if t not in (i, j)] + [(value, text, prec)]
    return items[0][0], items[0][1]

  def _generate(self, rng, level):
    for _ in range(10_000):
      numbers = [rng.randint(self.min_number, self.max_number) for _ in range(level)]
      for _ in range(20):
        target, solution = self._solve_randomly(rng, numbers)
        if self.min_target <= target <= self.max_target:
          ex = base.Example(prompt=self.prompt_for(numbers, target), answer=str(target),
                            demonstration=solution,
                            metadata={'numbers': tuple(numbers), 'target': target})
          return self.key(numbers, target), ex
    raise ValueError(  # Only reachable with an (almost) empty target range.
        f'Countdown: could not reach a target in [{self.min_target}, {self.max_target}] with '
        f'numbers in [{self.min_number}, {self.max_number}] at level {level}.')

  def _parse_prompt(self, prompt: str) -> tuple[list[int], int]:
    m = _PROMPT_RE.fullmatch(prompt) if isinstance(prompt, str) else None
    if m is None:
      raise self._prompt_error(prompt)
    return [int(x) for x in m.group(2).split(' ')], int(m.group(1))

  def _grade(self, prompt, completion):
    numbers, target = self._parse_prompt(prompt)
    try:
      tree = parse_expression(completion)
    except ExpressionError as e:
      return base.Grade(False, False, e.reason)
    used = collections.Counter(expression_numbers(tree))
    given = collections.Counter(numbers)
    if any(used[x] > given[x] for x in used):
      return base.Grade(False, True, 'invalid_numbers')
    if self.use_all_numbers and used != given:
      return base.Grade(False, True, 'unused_numbers')
    try:
      value = evaluate_expression(tree)
    except ZeroDivisionError:
      return base.Grade(False, True, 'division_by_zero')
    if value == target:
      return base.Grade(True, True, None)
    return base.Grade(False, True, 'wrong_value')
