"""A Hugging Face chat template (`tokenizer_config.json` "chat_template"), rendered with jinja2.

The environment follows what `transformers` does in `apply_chat_template`, so a prompt renders
to the same text: a `jinja2.sandbox.ImmutableSandboxedEnvironment` (templates from the Hub are
untrusted code) with ``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, a
``tojson`` filter that does not escape HTML, the ``raise_exception`` and ``strftime_now``
helpers, and the tokenizer's special tokens (``bos_token``, ``eos_token``, ...) as variables.

Example:

>>> t = ChatTemplate("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}"
...                  "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
...                  bos_token='<s>')
>>> t.render_prompt('1+1=')
'<s><user>1+1=<assistant>'
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Mapping, Sequence


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  # jinja2's own tojson escapes HTML characters, which would change the prompt's text.
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


def _compile(source: str):
  import jinja2  # pylint: disable=g-import-not-at-top
  import jinja2.ext  # pylint: disable=g-import-not-at-top
  from jinja2 import sandbox  # pylint: disable=g-import-not-at-top

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)

  env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                              extensions=[jinja2.ext.loopcontrols])
  env.filters['tojson'] = _tojson
  env.globals['raise_exception'] = raise_exception
  env.globals['strftime_now'] = strftime_now
  return env.from_string(source)


class ChatTemplate:
  """A compiled chat template and the special-token variables it is rendered with.

  Args:
    source: the jinja2 template text.
    **special_tokens: ``bos_token``, ``eos_token``, ``pad_token``, ``unk_token`` strings (None
      values are left out, as transformers leaves unset tokens out).

  Raises:
    ValueError: if the template does not compile (the message includes jinja2's).
  """

  def __init__(self, source: str, **special_tokens: str | None):
    import jinja2  # pylint: disable=g-import-not-at-top
    if not isinstance(source, str):
      raise TypeError(f'the chat template must be a string, got {type(source).__name__}.')
    self.source = source
    self.variables = {k: v for k, v in special_tokens.items() if v is not None}
    try:
      self._template = _compile(source)
    except jinja2.exceptions.TemplateError as e:
      raise ValueError(f'the chat template does not compile: {e}') from e

  def render(self, messages: Sequence[Mapping[str, Any]], *,
             add_generation_prompt: bool = True) -> str:
    """The text of a conversation (a list of ``{'role': ..., 'content': ...}`` dicts)."""
    return self._template.render(messages=[dict(m) for m in messages], tools=None,
                                 documents=None, add_generation_prompt=add_generation_prompt,
                                 **self.variables)

  def render_prompt(self, prompt: str) -> str:
    """One user turn followed by the assistant's generation prompt."""
    return self.render([{'role': 'user', 'content': prompt}], add_generation_prompt=True)

  def __repr__(self) -> str:
    return f'ChatTemplate({len(self.source)} characters, variables={sorted(self.variables)})'
