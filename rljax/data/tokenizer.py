"""Tokenizers: a sentencepiece wrapper (load or train in-process) and a Hugging Face wrapper.

Both classes share one interface (`BaseTokenizer`): ``encode``/``decode`` on single texts, and
batch methods that return NumPy ``int32`` arrays laid out as the rest of rljax expects:

* ``encode_batch(texts, max_len=P)`` -> ``ids[B, P]``, ``mask[B, P]``, left padded by default
  (prompts end at the same column, so generation starts at column ``P`` for every row);
* ``encode_sequences(prompts, completions, prompt_len=P, completion_len=N)`` -> full sequences
  ``tokens[B, P + N]`` = left-padded prompt followed by the right-padded completion and its
  end-of-sequence token, with ``prompt_mask`` and ``completion_mask`` (the `rljax.sampling`
  convention; use it for supervised warm start on task demonstrations).

Special tokens are explicit: ``bos_id``, ``eos_id``, ``pad_id`` (and ``unk_id``), and nothing is
added unless asked (``add_bos=``/``add_eos=``). Decoding drops bos/eos/pad and maps ids outside
the vocabulary (a model's embedding table is often larger than its tokenizer) to ``unk_id``.

Example:

>>> tok = Tokenizer.train(['12+34=46', '7*8=56', '90-9=81'] * 10, vocab_size=64,
...                       model_type='char')
>>> tok.decode(tok.encode('43+21=64'))
'43+21=64'
>>> ids, mask = tok.encode_batch(['1+1=', '12+3='], max_len=6)
>>> mask.tolist()
[[0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]]
"""

from __future__ import annotations

import abc
import io
import json
import os
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

TRUNCATIONS = ('error', 'left', 'right')
MODEL_TYPES = ('bpe', 'unigram', 'char', 'word')

_VOCAB_ESCAPES = str.maketrans({'\\': '\\\\', '\n': '\\n', '\t': '\\t', '\r': '\\r'})

# Ids of the special pieces in tokenizers trained by `Tokenizer.train`.
TRAINED_PAD_ID, TRAINED_UNK_ID, TRAINED_BOS_ID, TRAINED_EOS_ID = 0, 1, 2, 3


class EncodedSequences(NamedTuple):
  """Full prompt + completion sequences (all ``int32[B, P + N]``).

  Attributes:
    tokens: left-padded prompt (width ``P``) followed by the completion (width ``N``), padded on
      the right with ``pad_id``.
    prompt_mask: 1 on real prompt tokens.
    completion_mask: 1 on completion tokens, including the end-of-sequence token.
  """

  tokens: np.ndarray
  prompt_mask: np.ndarray
  completion_mask: np.ndarray


def _fit(ids: list[int], width: int, truncation: str, what: str) -> list[int]:
  if len(ids) <= width:
    return ids
  if truncation == 'left':
    return ids[len(ids) - width:]
  if truncation == 'right':
    return ids[:width]
  raise ValueError(f'{what} has {len(ids)} tokens, more than the width {width}; raise the '
                   "width or pass truncation='left' or 'right'.")


def _check_truncation(truncation: str) -> None:
  if truncation not in TRUNCATIONS:
    raise ValueError(f'truncation must be one of {TRUNCATIONS}, got {truncation!r}.')


def _check_texts(texts: Any, name: str) -> list[str]:
  if isinstance(texts, str):
    raise TypeError(f'{name} must be a sequence of strings, not a single string.')
  texts = list(texts)
  for i, t in enumerate(texts):
    if not isinstance(t, str):
      raise TypeError(f'{name}[{i}] must be a str, got {type(t).__name__}.')
  return texts


class BaseTokenizer(abc.ABC):
  """The interface shared by `Tokenizer` (sentencepiece) and `HFTokenizer`.

  Attributes:
    chat_template: the checkpoint's `rljax.data.chat_template.ChatTemplate` when the tokenizer
      was loaded from a Hugging Face directory that has one, else None.
  """

  chat_template = None

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids, special tokens included."""

  @property
  @abc.abstractmethod
  def bos_id(self) -> int | None:
    """Beginning-of-sequence id, or None if the vocabulary has none."""

  @property
  @abc.abstractmethod
  def eos_id(self) -> int | None:
    """End-of-sequence id (the stop token for sampling), or None if the vocabulary has none."""

  @property
  def stop_ids(self) -> tuple[int, ...]:
    """Ids that end a sampled completion: `eos_id`, and any other end token the model uses."""
    return () if self.eos_id is None else (self.eos_id,)

  @property
  @abc.abstractmethod
  def pad_id(self) -> int:
    """Padding id (always an int; see the subclass for its fallback)."""

  @property
  @abc.abstractmethod
  def unk_id(self) -> int | None:
    """Unknown-piece id, or None."""

  @abc.abstractmethod
  def _encode(self, text: str) -> list[int]:
    """Ids of `text`, no special tokens added."""

  @abc.abstractmethod
  def _decode(self, ids: list[int]) -> str:
    """Text of in-vocabulary `ids`, special tokens dropped."""

  @abc.abstractmethod
  def id_to_piece(self, token_id: int) -> str:
    """The vocabulary entry of one id."""

  # ---------------------------------------------------------------- single texts

  def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    """Encodes one text.

    Args:
      text: the text.
      add_bos: prepend `bos_id`.
      add_eos: append `eos_id`.

    Returns:
      A list of ids.

    Raises:
      ValueError: if a requested special token does not exist in this vocabulary.
    """
    if not isinstance(text, str):
      raise TypeError(f'text must be a str, got {type(text).__name__}.')
    ids = self._encode(text)
    if add_bos:
      if self.bos_id is None:
        raise ValueError('add_bos=True but this tokenizer has no bos token.')
      ids = [self.bos_id] + ids
    if add_eos:
      if self.eos_id is None:
        raise ValueError('add_eos=True but this tokenizer has no eos token.')
      ids = ids + [self.eos_id]
    return ids

  def decode(self, ids: Iterable[int], *, stop_at_eos: bool = False) -> str:
    """Decodes ids to text, dropping bos/eos/pad; ids outside the vocabulary decode as `unk_id`.

    When the pad id aliases another piece (a sentencepiece model without pad piece pads with
    unk), that piece is dropped too: read padded arrays through their masks.

    Args:
      ids: token ids (a list or a 1-D array).
      stop_at_eos: ignore everything from the first `eos_id` on.
    """
    ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
    if stop_at_eos and self.eos_id is not None and self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    n, unk = self.vocab_size, self.unk_id
    specials = {i for i in (self.bos_id, self.eos_id, self.pad_id) if i is not None}
    cleaned = []
    for i in ids:
      if not 0 <= i < n:
        if unk is None:
          continue
        i = unk
      if i not in specials:
        cleaned.append(i)
    return self._decode(cleaned)

  # ---------------------------------------------------------------- batches

  def encode_batch(self, texts: Sequence[str], *, max_len: int | None = None,
                   pad_left: bool = True, add_bos: bool = False, add_eos: bool = False,
                   truncation: str = 'error') -> tuple[np.ndarray, np.ndarray]:
    """Encodes texts into one padded array.

    Args:
      texts: ``B`` strings.
      max_len: the width ``L``; the longest encoding if None.
      pad_left: pad on the left (prompts, the default) or on the right.
      add_bos, add_eos: add special tokens to every text (they count towards `max_len`).
      truncation: what to do with a text longer than `max_len`: ``'error'`` raises,
        ``'left'`` drops its first tokens, ``'right'`` its last ones.

    Returns:
      ``(ids, mask)``: ``ids int32[B, L]`` (`pad_id` on padding) and ``mask int32[B, L]`` (1 on
      real tokens).
    """
    texts = _check_texts(texts, 'texts')
    _check_truncation(truncation)
    encoded = [self.encode(t, add_bos=add_bos, add_eos=add_eos) for t in texts]
    if max_len is None:
      max_len = max((len(e) for e in encoded), default=0)
    if max_len < 0:
      raise ValueError(f'max_len must be >= 0, got {max_len}.')
    ids = np.full((len(texts), max_len), self.pad_id, np.int32)
    mask = np.zeros((len(texts), max_len), np.int32)
    for b, e in enumerate(encoded):
      e = _fit(e, max_len, truncation, f'texts[{b}]')
      if not e:
        continue
      cols = slice(max_len - len(e), max_len) if pad_left else slice(0, len(e))
      ids[b, cols] = e
      mask[b, cols] = 1
    return ids, mask

  def decode_batch(self, ids: np.ndarray, mask: np.ndarray | None = None, *,
                   stop_at_eos: bool = False) -> list[str]:
    """Decodes each row of ``ids[B, L]``, keeping only the positions where ``mask[B, L]`` is set.

    Args:
      ids: ``int[B, L]`` token ids.
      mask: optional ``[B, L]`` mask (e.g. a completion mask); all positions if None.
      stop_at_eos: stop each row at its first `eos_id`.

    Returns:
      ``B`` strings.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
      raise ValueError(f'ids must have shape [B, L], got {ids.shape}.')
    if mask is not None:
      mask = np.asarray(mask)
      if mask.shape != ids.shape:
        raise ValueError(f'mask must have the shape of ids {ids.shape}, got {mask.shape}.')
    out = []
    for b in range(ids.shape[0]):
      row = ids[b] if mask is None else ids[b][mask[b].astype(bool)]
      out.append(self.decode(row, stop_at_eos=stop_at_eos))
    return out

  def encode_sequences(self, prompts: Sequence[str], completions: Sequence[str], *,
                       prompt_len: int, completion_len: int, add_bos: bool = False,
                       add_eos: bool = True, truncation: str = 'error') -> EncodedSequences:
    """Encodes prompt/completion pairs as full sequences for teacher forcing.

    Prompts and completions are tokenized separately (as in RL, where the policy continues the
    tokenized prompt), so the token boundary between them is the one the sampler sees.

    Args:
      prompts: ``B`` prompt strings (left padded to `prompt_len` ``= P``).
      completions: ``B`` completion strings (right padded to `completion_len` ``= N``).
      prompt_len: ``P``.
      completion_len: ``N`` (the end-of-sequence token counts towards it).
      add_bos: prepend `bos_id` to each prompt.
      add_eos: append `eos_id` to each completion (teaches the policy to stop).
      truncation: ``'error'`` raises on overflow; otherwise prompts lose their first tokens and
        completions their last ones (the end-of-sequence token may then be cut off).

    Returns:
      `EncodedSequences` with ``int32[B, P + N]`` arrays.
    """
    prompts = _check_texts(prompts, 'prompts')
    completions = _check_texts(completions, 'completions')
    if len(prompts) != len(completions):
      raise ValueError(f'prompts and completions must have the same length, got '
                       f'{len(prompts)} and {len(completions)}.')
    if prompt_len < 1 or completion_len < 1:
      raise ValueError(f'prompt_len and completion_len must be >= 1, got {prompt_len}, '
                       f'{completion_len}.')
    _check_truncation(truncation)
    prompt_ids, prompt_mask = self.encode_batch(
        prompts, max_len=prompt_len, pad_left=True, add_bos=add_bos,
        truncation='error' if truncation == 'error' else 'left')
    comp_ids, comp_mask = self.encode_batch(
        completions, max_len=completion_len, pad_left=False, add_eos=add_eos,
        truncation='error' if truncation == 'error' else 'right')
    zeros_p, zeros_c = np.zeros_like(prompt_mask), np.zeros_like(comp_mask)
    return EncodedSequences(
        tokens=np.concatenate([prompt_ids, comp_ids], axis=1),
        prompt_mask=np.concatenate([prompt_mask, zeros_c], axis=1),
        completion_mask=np.concatenate([zeros_p, comp_mask], axis=1))

  def __repr__(self) -> str:
    return (f'{type(self).__name__}(vocab_size={self.vocab_size}, bos_id={self.bos_id}, '
            f'eos_id={self.eos_id}, pad_id={self.pad_id}, unk_id={self.unk_id})')


def _optional_id(i: int) -> int | None:
  return None if i is None or i < 0 else int(i)


class Tokenizer(BaseTokenizer):
  """A sentencepiece model (any ``.model`` file, e.g. Llama-2's or Gemma's, or one trained here).

  Special ids come from the model. When it has no pad piece (Llama-2), `pad_id` is the `pad_id`
  argument if given, else `unk_id`, else `eos_id`; padding is only ever read through masks.

  Args:
    model_proto: the serialized ``ModelProto`` (the bytes of a ``.model`` file).
    pad_id: the pad id to use when the model has no pad piece.
  """

  def __init__(self, model_proto: bytes, *, pad_id: int | None = None):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self._proto = bytes(model_proto)
    self._bos = _optional_id(self._sp.bos_id())
    self._eos = _optional_id(self._sp.eos_id())
    self._unk = _optional_id(self._sp.unk_id())
    pad = _optional_id(self._sp.pad_id())
    if pad is None:
      pad = pad_id if pad_id is not None else (self._unk if self._unk is not None else self._eos)
    if pad is None:
      raise ValueError('The model has no pad, unk or eos piece: pass pad_id=.')
    if not 0 <= pad < self._sp.get_piece_size():
      raise ValueError(f'pad_id must be in [0, {self._sp.get_piece_size()}), got {pad}.')
    self._pad = int(pad)

  @classmethod
  def load(cls, path: str | os.PathLike, *, pad_id: int | None = None) -> 'Tokenizer':
    """Loads a sentencepiece ``.model`` file."""
    with open(path, 'rb') as f:
      return cls(f.read(), pad_id=pad_id)

  @classmethod
  def train(cls, texts: Iterable[str], *, vocab_size: int = 512, model_type: str = 'bpe',
            model_prefix: str | os.PathLike | None = None, split_digits: bool = True,
            byte_fallback: bool = False, character_coverage: float = 1.0,
            user_defined_symbols: Sequence[str] = (), hard_vocab_limit: bool = False,
            **trainer_kwargs) -> 'Tokenizer':
    """Trains a sentencepiece model in-process on `texts`.

    The model keeps text exactly (identity normalisation, no dummy prefix, whitespace kept), so
    ``decode(encode(s)) == s`` for any `s` made of characters seen in training, and prompt and
    completion tokens decode to texts that concatenate correctly. Ids: pad 0, unk 1, bos 2,
    eos 3.

    Args:
      texts: training sentences (e.g. ``rljax.data.tasks.tokenizer_corpus(...)``); newlines
        inside a text are kept as characters.
      vocab_size: requested vocabulary size (special tokens included), typically 256-4096.
        With ``hard_vocab_limit=False`` (the default) a small corpus may give fewer pieces
        (always for ``'char'``, which has one piece per character); read `vocab_size`.
      model_type: ``'bpe'``, ``'unigram'``, ``'char'`` or ``'word'``.
      model_prefix: if given, also write ``{model_prefix}.model`` and ``{model_prefix}.vocab``.
      split_digits: split numbers into single digits (as Llama does; helps arithmetic).
      byte_fallback: represent unseen characters as UTF-8 bytes (needs ``vocab_size >= ~300``).
      character_coverage: fraction of characters covered by the vocabulary.
      user_defined_symbols: pieces that are always kept whole.
      hard_vocab_limit: fail unless exactly `vocab_size` pieces can be made.
      **trainer_kwargs: any other ``sentencepiece.SentencePieceTrainer`` option.

    Returns:
      The trained `Tokenizer`.

    Raises:
      ValueError: on an empty corpus, an unknown `model_type`, or a vocabulary sentencepiece
        cannot build (the message includes sentencepiece's).
    """
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    if model_type not in MODEL_TYPES:
      raise ValueError(f'model_type must be one of {MODEL_TYPES}, got {model_type!r}.')
    if vocab_size < 8:
      raise ValueError(f'vocab_size must be >= 8, got {vocab_size}.')
    texts = _check_texts(texts, 'texts')
    texts = [t for t in texts if t]
    if not texts:
      raise ValueError('texts is empty: nothing to train a tokenizer on.')
    options = dict(
        vocab_size=int(vocab_size), model_type=model_type,
        pad_id=TRAINED_PAD_ID, unk_id=TRAINED_UNK_ID, bos_id=TRAINED_BOS_ID,
        eos_id=TRAINED_EOS_ID, character_coverage=character_coverage,
        split_digits=split_digits, byte_fallback=byte_fallback,
        normalization_rule_name='identity', remove_extra_whitespaces=False,
        add_dummy_prefix=False, allow_whitespace_only_pieces=True,
        hard_vocab_limit=hard_vocab_limit, max_sentence_length=1 << 16,
        num_threads=min(2, os.cpu_count() or 1), minloglevel=2)
    if user_defined_symbols:
      options['user_defined_symbols'] = list(user_defined_symbols)
    options.update(trainer_kwargs)
    buffer = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buffer,
                                     **options)
    except RuntimeError as e:
      raise ValueError(f'sentencepiece could not train a {model_type} model with '
                       f'vocab_size={vocab_size} on {len(texts)} texts: {e}') from e
    tok = cls(buffer.getvalue())
    if model_prefix is not None:
      tok.save(os.fspath(model_prefix) + '.model')
    return tok

  def save(self, path: str | os.PathLike) -> None:
    """Writes the ``.model`` file to `path` and a readable ``.vocab`` next to it.

    The ``.vocab`` file has one ``piece<TAB>score`` line per id; backslashes, newlines, tabs
    and carriage returns inside pieces are escaped as in Python string literals.
    """
    path = os.fspath(path)
    with open(path, 'wb') as f:
      f.write(self._proto)
    vocab_path = (path[:-len('.model')] if path.endswith('.model') else path) + '.vocab'
    with open(vocab_path, 'w', encoding='utf-8') as f:
      for i in range(self.vocab_size):
        piece = self._sp.id_to_piece(i).translate(_VOCAB_ESCAPES)
        f.write(f'{piece}\t{self._sp.get_score(i)}\n')

  @property
  def serialized_model_proto(self) -> bytes:
    """The ``.model`` file's bytes (store them in a checkpoint to keep the tokenizer with it)."""
    return self._proto

  @property
  def processor(self):
    """The underlying ``sentencepiece.SentencePieceProcessor``."""
    return self._sp

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def bos_id(self) -> int | None:
    return self._bos

  @property
  def eos_id(self) -> int | None:
    return self._eos

  @property
  def stop_ids(self) -> tuple[int, ...]:
    extra = getattr(self, 'generation_eos_ids', ())
    first = () if self._eos is None else (self._eos,)
    return first + tuple(i for i in extra if i != self._eos)

  @property
  def pad_id(self) -> int:
    return self._pad

  @property
  def unk_id(self) -> int | None:
    return self._unk

  def id_to_piece(self, token_id: int) -> str:
    return self._sp.id_to_piece(int(token_id))

  def _encode(self, text: str) -> list[int]:
    return list(self._sp.encode(text))

  def _decode(self, ids: list[int]) -> str:
    return self._sp.decode(ids)


def _read_json_if_exists(path: str) -> dict[str, Any]:
  if not os.path.exists(path):
    return {}
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _generation_eos_ids(directory: str) -> tuple[int, ...]:
  """The ``eos_token_id``s of ``generation_config.json`` (an int or a list; may be empty)."""
  eos = _read_json_if_exists(os.path.join(directory, 'generation_config.json')).get(
      'eos_token_id')
  eos = eos if isinstance(eos, list) else [eos]
  return tuple(int(e) for e in eos if isinstance(e, int))


def _special_from_config(config: dict[str, Any], key: str) -> str | None:
  value = config.get(key)
  if isinstance(value, dict):
    value = value.get('content')
  return value if isinstance(value, str) else None


class HFTokenizer(BaseTokenizer):
  """A Hugging Face ``tokenizer.json`` (fast tokenizer) via the `tokenizers` package.

  Use it with checkpoints imported from Hugging Face (Qwen, Llama) so that ids match their
  embeddings. Special tokens are taken from, in order: the arguments of `load`, the
  ``tokenizer_config.json`` and then ``special_tokens_map.json`` next to the ``tokenizer.json``,
  and for the end-of-sequence token last the first ``eos_token_id`` of
  ``generation_config.json``. `load` also reads the directory's chat template
  (`load_chat_template`) into `chat_template`. Without a pad token, `pad_id` falls back to
  `eos_id` (the Hugging Face convention), then `unk_id`, then 0.

  Args:
    tokenizer: a ``tokenizers.Tokenizer``.
    bos_token, eos_token, pad_token, unk_token: special token strings (or None).
  """

  def __init__(self, tokenizer, *, bos_token: str | None = None, eos_token: str | None = None,
               pad_token: str | None = None, unk_token: str | None = None):
    self._tok = tokenizer
    # The configured strings (no fallbacks), which a chat template sees as variables.
    self.special_tokens = {'bos_token': bos_token, 'eos_token': eos_token,
                           'pad_token': pad_token, 'unk_token': unk_token}

    def lookup(token, name):
      if token is None:
        return None
      i = tokenizer.token_to_id(token)
      if i is None:
        raise ValueError(f'{name}={token!r} is not in the vocabulary.')
      return int(i)

    self._bos = lookup(bos_token, 'bos_token')
    self._eos = lookup(eos_token, 'eos_token')
    self._unk = lookup(unk_token, 'unk_token')
    pad = lookup(pad_token, 'pad_token')
    for fallback in (self._eos, self._unk, 0):
      if pad is None:
        pad = fallback
    self._pad = int(pad)

  @classmethod
  def load(cls, path: str | os.PathLike, **special_tokens: str | None) -> 'HFTokenizer':
    """Loads ``tokenizer.json`` (a file, or a directory containing it).

    Args:
      path: the ``tokenizer.json`` file or its directory.
      **special_tokens: ``bos_token``, ``eos_token``, ``pad_token``, ``unk_token`` overrides.

    Raises:
      ImportError: if `tokenizers` is not installed (``pip install tokenizers``).
    """
    try:
      import tokenizers  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError('HFTokenizer needs the tokenizers package: pip install tokenizers '
                        "(or pip install 'rljax[hf]').") from e
    path = os.fspath(path)
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    file = os.path.join(path, 'tokenizer.json') if os.path.isdir(path) else path
    if not os.path.isfile(file):
      # The tokenizers library's own error names no path.
      raise FileNotFoundError(f'no tokenizer file at {file!r}')
    tok = tokenizers.Tokenizer.from_file(file)
    names = ('bos_token', 'eos_token', 'pad_token', 'unk_token')
    unknown = set(special_tokens) - set(names)
    if unknown:
      raise TypeError(f'Unknown arguments {sorted(unknown)}; special tokens are {names}.')
    resolved = {}
    for config_name in ('tokenizer_config.json', 'special_tokens_map.json'):
      config = _read_json_if_exists(os.path.join(directory, config_name))
      for name in names:
        if resolved.get(name) is None:
          resolved[name] = _special_from_config(config, name)
    generation_eos = _generation_eos_ids(directory)
    if resolved.get('eos_token') is None and generation_eos:
      resolved['eos_token'] = tok.id_to_token(generation_eos[0])
    for name in names:
      if name in special_tokens:
        resolved[name] = special_tokens[name]
    out = cls(tok, **{n: resolved.get(n) for n in names})
    out.chat_template = load_chat_template(directory, out)
    # generate() stops at every end token of generation_config.json (an instruct model's
    # end-of-turn and end-of-text), and so does the sampler.
    out.generation_eos_ids = generation_eos
    return out

  @property
  def backend(self):
    """The underlying ``tokenizers.Tokenizer``."""
    return self._tok

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  @property
  def bos_id(self) -> int | None:
    return self._bos

  @property
  def eos_id(self) -> int | None:
    return self._eos

  @property
  def stop_ids(self) -> tuple[int, ...]:
    extra = getattr(self, 'generation_eos_ids', ())
    first = () if self._eos is None else (self._eos,)
    return first + tuple(i for i in extra if i != self._eos)

  @property
  def pad_id(self) -> int:
    return self._pad

  @property
  def unk_id(self) -> int | None:
    return self._unk

  def id_to_piece(self, token_id: int) -> str:
    return self._tok.id_to_token(int(token_id))

  def _encode(self, text: str) -> list[int]:
    return list(self._tok.encode(text, add_special_tokens=False).ids)

  def _decode(self, ids: list[int]) -> str:
    return self._tok.decode(ids, skip_special_tokens=True)


def _piece(tok: BaseTokenizer, token_id: int | None) -> str | None:
  return None if token_id is None else tok.id_to_piece(token_id)


def load_chat_template(directory: str | os.PathLike, tok: BaseTokenizer):
  """The chat template of a Hugging Face tokenizer directory, or None if it has none.

  Read from ``chat_template.jinja`` (what transformers writes now), else from the
  ``"chat_template"`` of ``tokenizer_config.json`` (a string, or a list of named templates of
  which the one named ``default`` is used); rendered with `tok`'s special tokens.
  """
  from rljax.data import chat_template as ct_lib  # pylint: disable=g-import-not-at-top
  directory = os.fspath(directory)
  jinja_path = os.path.join(directory, 'chat_template.jinja')
  if os.path.exists(jinja_path):
    with open(jinja_path, encoding='utf-8') as f:
      source = f.read()
  else:
    source = _read_json_if_exists(os.path.join(directory, 'tokenizer_config.json')).get(
        'chat_template')
    if isinstance(source, list):
      named = {t.get('name'): t.get('template') for t in source if isinstance(t, dict)}
      source = named.get('default')
  if not source:
    return None
  # As transformers passes them: the configured tokens only (not the pad fallback to eos).
  specials = getattr(tok, 'special_tokens', None) or dict(
      bos_token=_piece(tok, tok.bos_id), eos_token=_piece(tok, tok.eos_id),
      unk_token=_piece(tok, tok.unk_id))
  return ct_lib.ChatTemplate(source, **specials)


def load_checkpoint_tokenizer(directory: str | os.PathLike) -> BaseTokenizer:
  """The tokenizer of a Hugging Face checkpoint directory, with its chat template.

  ``tokenizer.json`` (as `HFTokenizer`, special tokens from the directory's configs), else a
  sentencepiece ``tokenizer.model`` (special tokens from the model).

  Raises:
    FileNotFoundError: if the directory has neither file (the message gives both paths).
  """
  directory = os.fspath(directory)
  json_path = os.path.join(directory, 'tokenizer.json')
  sp_path = os.path.join(directory, 'tokenizer.model')
  if os.path.isfile(json_path):
    return HFTokenizer.load(json_path)
  if os.path.isfile(sp_path):
    tok = Tokenizer.load(sp_path)
    tok.chat_template = load_chat_template(directory, tok)
    return tok
  raise FileNotFoundError(f'no tokenizer in {directory!r}: neither {json_path!r} nor '
                          f'{sp_path!r} exists')


def load_tokenizer(path: str | os.PathLike, **kwargs) -> BaseTokenizer:
  """Loads a sentencepiece ``.model`` as `Tokenizer`, else a ``tokenizer.json`` (or its
  directory) as `HFTokenizer`; `kwargs` go to the class's ``load``."""
  path = os.fspath(path)
  if path.endswith('.model'):
    return Tokenizer.load(path, **kwargs)
  return HFTokenizer.load(path, **kwargs)
