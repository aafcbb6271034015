r"""The named verifiers on hand-written completions and answers, adversarial ones included."""

import pytest

from rljax.data import verifiers
from rljax.data.tasks import Grade

RIGHT = Grade(True, True, None)
WRONG = Grade(False, True, 'wrong_answer')


@pytest.mark.parametrize('completion, answer, options, expected', [
    ('Paris', 'Paris', {}, RIGHT),
    ('  Paris\n', ' Paris ', {}, RIGHT),
    ('paris', 'Paris', {}, WRONG),
    ('paris', 'Paris', {'case_sensitive': False}, RIGHT),
    ('STRASSE', 'straße', {'case_sensitive': False}, RIGHT),  # casefold, not lower
    ('Paris, France', 'Paris', {}, WRONG),
    ('   ', 'Paris', {}, Grade(False, False, 'empty')),
])
def test_exact(completion, answer, options, expected):
  assert verifiers.get_verifier('exact', **options)(completion, answer) == expected


@pytest.mark.parametrize('completion, answer, options, expected', [
    ('The answer is 42', '42', {}, RIGHT),
    ('first 3, then 4.', '4', {}, RIGHT),          # the last number, its full stop dropped
    ('1,000,000 apples', '1000000', {}, RIGHT),     # thousands commas
    ('x = -2.5', '-2.5', {}, RIGHT),
    ('10-3', '3', {}, RIGHT),                       # a minus after a digit is subtraction
    ('10-3', '-3', {}, WRONG),
    ('0.3333333', '0.3333334', {}, RIGHT),          # relative error 3e-7 <= 1e-6
    ('0.3333', '0.3334', {}, WRONG),                # relative error 3e-4
    ('3.14', '3.14159', {'rel_tol': 1e-3}, RIGHT),
    ('3.14', '3.14159', {}, WRONG),
    ('0.0000001', '0', {'abs_tol': 1e-6}, RIGHT),
    ('no digits here', '3', {}, Grade(False, False, 'no_number')),
    ('', '3', {}, Grade(False, False, 'empty')),
    ('9' * 100, '9', {}, Grade(False, False, 'number_too_long')),
])
def test_numeric(completion, answer, options, expected):
  assert verifiers.get_verifier('numeric', **options)(completion, answer) == expected


def test_numeric_rejects_a_reference_that_is_not_a_number():
  with pytest.raises(ValueError, match="'blue' is not a number"):
    verifiers.numeric('3', 'blue')


@pytest.mark.parametrize('completion, answer, expected', [
    ('2 + 3 = 5\n#### 5', '#### 5', RIGHT),
    ('#### 5', 'She has 2 + 3 = 5 apples.\n#### 5', RIGHT),  # a full GSM8K solution as answer
    ('#### $1,250.', '1250', RIGHT),                        # $, commas, trailing full stop
    ('#### 1250.0', '1,250', RIGHT),
    ('#### 4\n#### 5', '5', RIGHT),                          # the last marker counts
    ('#### 5\nand then 6', '5', RIGHT),                      # text after the marker is ignored
    ('#### -3', '3', WRONG),
    ('The answer is 5', '5', Grade(False, False, 'no_answer_marker')),
    ('#### five', '5', Grade(False, False, 'no_answer_marker')),
    ('', '5', Grade(False, False, 'empty')),
    ('#### ' + '1' * 70, '1', Grade(False, False, 'number_too_long')),
])
def test_gsm8k(completion, answer, expected):
  assert verifiers.gsm8k(completion, answer) == expected


def test_gsm8k_rejects_an_unreadable_reference():
  with pytest.raises(ValueError, match='no number after'):
    verifiers.gsm8k('#### 5', 'so\n#### many')


@pytest.mark.parametrize('completion, answer, expected', [
    (r'so $\boxed{5}$.', '5', RIGHT),
    (r'\boxed{\frac{1}{2}}', '0.5', RIGHT),                        # numeric when both parse
    (r'\boxed{\dfrac{1}{2}}', r'\frac{1}{2}', RIGHT),
    (r'\boxed{\tfrac12}', '1/2', RIGHT),                            # \frac12 shorthand
    (r'\boxed{-\frac{3}{4}}', '-0.75', RIGHT),
    (r'\boxed{\frac{2}{4}}', r'\frac{1}{2}', RIGHT),                # equal values
    (r'\boxed{1,000}', '1000', RIGHT),
    (r'\boxed{10\%}', '10', RIGHT),
    (r'\boxed{90^\circ}', '90', RIGHT),
    (r'\boxed{5 \text{ cm}}', '5cm', RIGHT),                         # \text unwrapped, spaces go
    (r'\boxed{\left( 1, 2 \right)}', '(1,2)', RIGHT),
    (r'\boxed{\frac{\sqrt{3}}{2}}', r'\frac{\sqrt{3}}{2}', RIGHT),  # nested braces, as strings
    (r'\boxed{\frac{\sqrt{3}}{2}}', r'\frac{\sqrt{2}}{2}', WRONG),
    (r'\boxed{x^{2} + \{1\}}', r'x^{2}+\{1\}', RIGHT),             # nested groups kept whole
    (r'first \boxed{3}, finally \boxed{4}', '4', RIGHT),           # the last box counts
    (r'first \boxed{4}, finally \boxed{3}', '4', WRONG),
    (r'\fbox{7}', '7', RIGHT),
    (r'\boxed{7}', r'the answer is \boxed{7}.', RIGHT),           # the answer's own box
    (r'\boxed{0.5}', '1/3', WRONG),
    ('The answer is 5', '5', Grade(False, False, 'no_boxed')),
    (r'\boxed{\frac{1}{2}', '0.5', Grade(False, False, 'unbalanced_boxed')),
    (r'\boxed{ }', '5', Grade(False, False, 'empty_boxed')),
    (r'\boxed{\frac{1}{0}}', r'\frac{1}{0}', RIGHT),               # no value: compared as text
    ('', '5', Grade(False, False, 'empty')),
])
def test_boxed(completion, answer, expected):
  assert verifiers.boxed(completion, answer) == expected


@pytest.mark.parametrize('text, expected', [
    (r'\left( \dfrac{1}{2} \right).', r'(\frac{1}{2})'),
    (r'\text{apple}\,s', 'apples'),
    (r'\textbf{\mathrm{x}}', 'x'),
    ('$3$', '3'),
])
def test_normalize_math(text, expected):
  assert verifiers.normalize_math(text) == expected


def test_get_verifier_rejects_unknown_names_and_options():
  assert set(verifiers.verifier_names()) == {'exact', 'numeric', 'gsm8k', 'boxed'}
  with pytest.raises(ValueError, match=r"unknown verifier 'regex'.*'exact'"):
    verifiers.get_verifier('regex')
  with pytest.raises(ValueError, match=r"'gsm8k' takes the options \[\], got \['rel_tol'\]"):
    verifiers.get_verifier('gsm8k', rel_tol=0.1)


@pytest.mark.parametrize('name', ['exact', 'numeric', 'gsm8k', 'boxed'])
@pytest.mark.parametrize('completion', ['', '}' * 50 + '{' * 50, '\\boxed{' * 1000, '####' * 500,
                                        '\x00\uffff\U0001f600', '-' * 10000])
def test_verifiers_never_raise_on_a_completion(name, completion):
  grade = verifiers.get_verifier(name)(completion, '5')
  assert not grade.correct and grade.reason is not None


def test_docstring_examples():
  import doctest  # pylint: disable=g-import-not-at-top
  results = doctest.testmod(verifiers)
  assert results.attempted and not results.failed
