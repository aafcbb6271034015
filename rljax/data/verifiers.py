r"""Named verifiers: pure functions ``(completion, answer) -> Grade`` for answers read from files.

================  ==========================================================================
name              correct when
================  ==========================================================================
``exact``         the stripped completion equals the stripped answer (``case_sensitive=False``
                  compares them case-folded)
``numeric``       the last number of the completion equals the answer's number within
                  ``rel_tol`` / ``abs_tol`` (``math.isclose``); a number is decimal, with an
                  optional sign and thousands commas, no exponent
``gsm8k``         the number after the completion's last ``####`` equals the answer's (the
                  number after its last ``####``, or the answer itself), exactly, after
                  removing thousands commas, a ``$`` and a trailing ``.``
``boxed``         the last ``\boxed{...}`` of the completion (braces balanced) equals the
                  answer (its last ``\boxed{...}`` if it has one) after `normalize_math`; both
                  are compared as exact rationals when both parse as numbers (``0.5``,
                  ``\frac{1}{2}`` and ``1/2`` are equal), else as normalised strings
================  ==========================================================================

A verifier never raises on a completion: an empty one, one without an answer, or one whose
answer does not parse gets ``Grade(False, False, reason)``. A reference answer that the
verifier cannot read (``numeric`` of ``'blue'``) raises `ValueError` from `reference`, which
file-based tasks call on every record when they load.

>>> gsm8k('so 3 + 4 = 7.\n#### $7.', '#### 7')
Grade(correct=True, well_formed=True, reason=None)
>>> boxed(r'\boxed{\dfrac{1}{2}}', '0.5').correct
True
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import math
import re
from typing import Any, Callable

from rljax.data.tasks import base

MAX_NUMBER_CHARS = 64

# A decimal number: thousands commas only in groups of three, no exponent (a huge exponent
# would make an exact rational of astronomical size).
_DECIMAL = r'(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+'
_SIGNED = r'(?<![\w.])-?(?:' + _DECIMAL + r')'
_NUMBER_RE = re.compile(_SIGNED)
_GSM8K_RE = re.compile(r'####\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)')
_FULL_NUMBER_RE = re.compile(r'[-+]?(?:' + _DECIMAL + r')')
_FRAC_RE = re.compile(r'(-?)\\frac\{([^{}]+)\}\{([^{}]+)\}')
_SLASH_RE = re.compile(r'(-?[0-9.]+)/([0-9.]+)')


def to_number(text: str) -> fractions.Fraction | None:
  """The exact value of a decimal number written in `text`, or None.

  Accepts a sign, thousands commas, a leading ``$`` and a trailing ``.`` (``'$1,000.'`` is
  1000); no exponent, at most `MAX_NUMBER_CHARS` characters.
  """
  text = text.strip()
  if text.startswith('$'):
    text = text[1:].strip()
  if text.endswith('.'):
    text = text[:-1]
  if not text or len(text) > MAX_NUMBER_CHARS or not _FULL_NUMBER_RE.fullmatch(text):
    return None
  return fractions.Fraction(text.replace(',', ''))


def _grade_equal(correct: bool) -> base.Grade:
  return base.Grade(True, True, None) if correct else base.Grade(False, True, 'wrong_answer')


# ------------------------------------------------------------------ exact


def exact(completion: str, answer: str, *, case_sensitive: bool = True) -> base.Grade:
  """Correct iff ``completion.strip() == answer.strip()`` (case-folded unless `case_sensitive`)."""
  got, want = completion.strip(), reference_exact(answer)
  if not got:
    return base.Grade(False, False, 'empty')
  if not case_sensitive:
    got, want = got.casefold(), want.casefold()
  return _grade_equal(got == want)


def reference_exact(answer: str) -> str:
  """The stripped answer; raises `ValueError` if it is empty."""
  if not answer.strip():
    raise ValueError('the reference answer is empty')
  return answer.strip()


# ------------------------------------------------------------------ numeric


def reference_number(answer: str) -> fractions.Fraction:
  """The answer's exact value (see `to_number`); raises `ValueError` if it is not a number."""
  value = to_number(answer)
  if value is None:
    raise ValueError(f'the reference answer {answer[:80]!r} is not a number')
  return value


def numeric(completion: str, answer: str, *, rel_tol: float = 1e-6,
            abs_tol: float = 1e-9) -> base.Grade:
  """Correct iff the last number of `completion` is within tolerance of the number `answer`."""
  want = reference_number(answer)
  if not completion.strip():
    return base.Grade(False, False, 'empty')
  matches = _NUMBER_RE.findall(completion)
  if not matches:
    return base.Grade(False, False, 'no_number')
  got = to_number(matches[-1])
  if got is None:
    return base.Grade(False, False, 'number_too_long')
  return _grade_equal(math.isclose(float(got), float(want), rel_tol=rel_tol, abs_tol=abs_tol))


# ------------------------------------------------------------------ gsm8k


def extract_gsm8k(completion: str) -> tuple[fractions.Fraction | None, str | None]:
  """The number after the last ``####`` of `completion`: ``(value, None)`` or ``(None, reason)``.

  Reasons: ``'empty'``, ``'no_answer_marker'``, ``'number_too_long'``.
  """
  if not completion.strip():
    return None, 'empty'
  matches = _GSM8K_RE.findall(completion)
  if not matches:
    return None, 'no_answer_marker'
  text = matches[-1].replace(',', '')
  if len(text) > MAX_NUMBER_CHARS:
    return None, 'number_too_long'
  return fractions.Fraction(text), None


def reference_gsm8k(answer: str) -> fractions.Fraction:
  """The number after the answer's last ``####``, or the answer itself when it is a number."""
  if '####' in answer:
    value, _ = extract_gsm8k(answer)
    if value is None:
      raise ValueError(f'the reference answer has no number after "####": {answer[-80:]!r}')
    return value
  return reference_number(answer)


def gsm8k(completion: str, answer: str) -> base.Grade:
  """Correct iff the number after the last ``####`` equals the reference exactly."""
  want = reference_gsm8k(answer)
  got, reason = extract_gsm8k(completion)
  if reason is not None:
    return base.Grade(False, False, reason)
  return _grade_equal(got == want)


# ------------------------------------------------------------------ boxed


def _braced(text: str, start: int) -> tuple[str, int] | None:
  """The contents of the brace group opening at ``text[start] == '{'`` and the index past it."""
  depth = 0
  for i in range(start, len(text)):
    if text[i] == '{':
      depth += 1
    elif text[i] == '}':
      depth -= 1
      if depth == 0:
        return text[start + 1:i], i + 1
  return None


def last_boxed(text: str) -> tuple[str | None, str | None]:
  r"""The contents of the last ``\boxed{...}`` (or ``\fbox{...}``): ``(contents, None)`` or
  ``(None, reason)`` with reason ``'no_boxed'`` or ``'unbalanced_boxed'``."""
  starts = [m.end() for m in re.finditer(r'\\(?:boxed|fbox)\s*(?=\{)', text)]
  if not starts:
    return None, 'no_boxed'
  group = _braced(text, starts[-1])
  if group is None:
    return None, 'unbalanced_boxed'
  return group[0], None


def _unwrap_text(text: str) -> str:
  r"""``\text{m}`` -> ``m`` for each text-like command, nested groups kept balanced."""
  pattern = re.compile(r'\\(?:text|textbf|textrm|mathrm|mbox)\s*(?=\{)')
  while (m := pattern.search(text)) is not None:
    group = _braced(text, m.end())
    if group is None:
      break
    text = text[:m.start()] + group[0] + text[group[1]:]
  return text


def normalize_math(text: str) -> str:
  r"""A LaTeX answer in canonical form, as common MATH graders write it.

  Unwraps ``\text{}`` (and ``\textbf``, ``\mathrm``, ``\mbox``), drops ``\left`` / ``\right``,
  spacing commands (``\!``, ``\,``, ``\;``, ``\:``, ``\ ``), ``$``, degree signs and ``\%``,
  turns ``\dfrac`` / ``\tfrac`` into ``\frac`` and ``\frac12`` into ``\frac{1}{2}``, removes
  every space and a trailing ``.``.
  """
  text = _unwrap_text(text)
  for old, new in (('\\left', ''), ('\\right', ''), ('\\dfrac', '\\frac'), ('\\tfrac', '\\frac'),
                   ('^{\\circ}', ''), ('^\\circ', ''), ('\\%', ''), ('$', '')):
    text = text.replace(old, new)
  text = re.sub(r'\\[!,;: ]', '', text)
  text = re.sub(r'\s+', '', text)
  text = re.sub(r'\\frac(\d)(\d)', r'\\frac{\1}{\2}', text)
  text = re.sub(r'\\frac\{([^{}]+)\}(\d)', r'\\frac{\1}{\2}', text)
  return text.rstrip('.')


def math_value(text: str) -> fractions.Fraction | None:
  r"""The exact value of a normalised answer: a number, ``\frac{a}{b}`` or ``a/b``; else None."""
  value = to_number(text)
  if value is not None:
    return value
  m = _FRAC_RE.fullmatch(text) or _SLASH_RE.fullmatch(text)
  if m is None:
    return None
  groups = m.groups()
  sign = -1 if groups[0] == '-' else 1
  num, den = (to_number(g) for g in groups[-2:])
  if num is None or den is None or den == 0:
    return None
  if len(groups) == 2:  # a/b: the sign is part of the numerator.
    return num / den
  return sign * num / den


def reference_boxed(answer: str) -> str:
  """The normalised reference: the answer's last ``\\boxed{}`` contents if any, else the answer."""
  contents, _ = last_boxed(answer)
  text = normalize_math(answer if contents is None else contents)
  if not text:
    raise ValueError(f'the reference answer {answer[:80]!r} is empty after normalisation')
  return text


def boxed(completion: str, answer: str) -> base.Grade:
  r"""Correct iff the last ``\boxed{}`` of `completion` matches `answer` (see the module doc)."""
  want = reference_boxed(answer)
  if not completion.strip():
    return base.Grade(False, False, 'empty')
  contents, reason = last_boxed(completion)
  if reason is not None:
    return base.Grade(False, False, reason)
  got = normalize_math(contents)
  if not got:
    return base.Grade(False, False, 'empty_boxed')
  got_value, want_value = math_value(got), math_value(want)
  if got_value is not None and want_value is not None:
    return _grade_equal(got_value == want_value)
  return _grade_equal(got == want)


# ------------------------------------------------------------------ registry


@dataclasses.dataclass(frozen=True)
class Verifier:
  """A named verifier: `grade(completion, answer, **options)` and `reference(answer)`.

  `reference` raises `ValueError` for an answer the verifier cannot read; tasks call it when
  they load their records, so a bad answer is reported then, not graded as wrong later.
  """

  name: str
  grade: Callable[..., base.Grade]
  reference: Callable[[str], Any]
  options: tuple[str, ...] = ()


VERIFIERS: dict[str, Verifier] = {
    'exact': Verifier('exact', exact, reference_exact, ('case_sensitive',)),
    'numeric': Verifier('numeric', numeric, reference_number, ('rel_tol', 'abs_tol')),
    'gsm8k': Verifier('gsm8k', gsm8k, reference_gsm8k),
    'boxed': Verifier('boxed', boxed, reference_boxed),
}


def verifier_names() -> tuple[str, ...]:
  """The names `get_verifier` accepts."""
  return tuple(VERIFIERS)


def get_verifier(name: str, **options) -> Callable[[str, str], base.Grade]:
  """The verifier `name` with its `options` bound: ``(completion, answer) -> Grade``.

  Raises:
    ValueError: for an unknown name or an option the verifier does not take.
  """
  if name not in VERIFIERS:
    raise ValueError(f'unknown verifier {name!r}; valid names: {list(VERIFIERS)}')
  spec = VERIFIERS[name]
  unknown = sorted(set(options) - set(spec.options))
  if unknown:
    raise ValueError(f'verifier {name!r} takes the options {list(spec.options)}, got {unknown}')
  return functools.partial(spec.grade, **options) if options else spec.grade
