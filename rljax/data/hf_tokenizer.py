"""A trained rljax `Tokenizer` (sentencepiece) as Hugging Face tokenizer files.

rljax trains its task tokenizers with sentencepiece in a form the `tokenizers` library can
express exactly (`Tokenizer.train`: identity normalisation, no dummy prefix, whitespace kept,
no byte fallback): the same pieces with the same ids, a `Unigram` model for sentencepiece's
unigram and char models (a char model is a unigram model whose pieces are single characters),
and a `BPE` model for its BPE models, with the merges that sentencepiece's piece order implies
(each piece that splits into two pieces is a merge, ranked by the piece's id, then by the ids of
its two halves). Spaces become U+2581 before the model and again after decoding, as in
sentencepiece. `write_hf_tokenizer` writes `tokenizer.json` and a `tokenizer_config.json` that
`transformers.AutoTokenizer` and `rljax.data.tokenizer.HFTokenizer` read; with `add_bos` the
tokenizer prepends BOS, as the launcher does to every prompt.

The control pieces (pad, BOS, EOS) are special tokens. Unlike sentencepiece, which never reads
them from text, `tokenizers` matches their literal strings (`</s>`) in text, as every converted
Hugging Face tokenizer does; no task text contains them.
"""

from __future__ import annotations

import json
import os
from typing import Any

# sentencepiece's ModelProto enums.
_UNIGRAM, _BPE, _CHAR = 1, 2, 4
_CONTROL, _USER_DEFINED = 3, 4


def _proto(model_proto: bytes):
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(model_proto)
  return proto


def _check_expressible(proto) -> None:
  norm, trainer = proto.normalizer_spec, proto.trainer_spec
  reasons = []
  if trainer.model_type not in (_UNIGRAM, _BPE, _CHAR):
    reasons.append(f'model type {trainer.model_type} (only unigram, bpe and char convert)')
  if norm.name != 'identity' or norm.add_dummy_prefix or not norm.escape_whitespaces:
    reasons.append(f'normalisation {norm.name!r} with add_dummy_prefix={norm.add_dummy_prefix}')
  if trainer.byte_fallback:
    reasons.append('byte fallback')
  if reasons:
    raise ValueError('this sentencepiece model has no exact tokenizers equivalent: '
                     + '; '.join(reasons))


def bpe_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
  """Merges `(left, right)` of every piece that splits into two pieces, by rank of the piece."""
  ranked = []
  for piece, rank in vocab.items():
    for i in range(1, len(piece)):
      left, right = piece[:i], piece[i:]
      if left in vocab and right in vocab:
        ranked.append((rank, vocab[left], vocab[right], left, right))
  return [(left, right) for *_, left, right in sorted(ranked)]


def to_tokenizers(model_proto: bytes, *, add_bos: bool = False):
  """The `tokenizers.Tokenizer` of a serialized sentencepiece model (see the module docstring).

  Args:
    model_proto: `rljax.data.tokenizer.Tokenizer.serialized_model_proto`.
    add_bos: prepend the BOS piece to every encoded text (`add_special_tokens=True`).

  Raises:
    ValueError: for a model that has no exact equivalent (word models, other normalisations,
      byte fallback).
  """
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, normalizers, processors  # pylint: disable=g-import-not-at-top
  proto = _proto(model_proto)
  _check_expressible(proto)
  trainer = proto.trainer_spec
  pieces = [(p.piece, p.score) for p in proto.pieces]
  if trainer.model_type == _BPE:
    vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
    model = models.BPE(vocab, bpe_merges(vocab), unk_token=pieces[trainer.unk_id][0],
                       fuse_unk=True)
  else:
    model = models.Unigram(pieces, unk_id=trainer.unk_id)
  tok = tokenizers.Tokenizer(model)
  tok.normalizer = normalizers.Replace(' ', '\u2581')
  tok.decoder = decoders.Replace('\u2581', ' ')
  tok.add_special_tokens([p.piece for p in proto.pieces if p.type == _CONTROL])
  user = [p.piece for p in proto.pieces if p.type == _USER_DEFINED]
  if user:
    tok.add_tokens(user)
  if add_bos and trainer.bos_id >= 0:
    bos = pieces[trainer.bos_id][0]
    tok.post_processor = processors.TemplateProcessing(
        single=f'{bos} $A', pair=f'{bos} $A {bos} $B', special_tokens=[(bos, trainer.bos_id)])
  return tok


def write_hf_tokenizer(tok: Any, path: str, *, add_bos: bool) -> list[str]:
  """Writes `tokenizer.json` and `tokenizer_config.json` of an rljax `Tokenizer` into `path`.

  Returns:
    The names of the files written.

  Raises:
    ValueError: as `to_tokenizers`.
  """
  converted = to_tokenizers(tok.serialized_model_proto, add_bos=add_bos)
  converted.save(os.path.join(path, 'tokenizer.json'))
  piece = lambda i: None if i is None else tok.id_to_piece(i)
  config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'bos_token': piece(tok.bos_id),
            'eos_token': piece(tok.eos_id), 'pad_token': piece(tok.pad_id),
            'unk_token': piece(tok.unk_id), 'add_bos_token': bool(add_bos),
            'clean_up_tokenization_spaces': False}
  with open(os.path.join(path, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
    json.dump({k: v for k, v in config.items() if v is not None}, f, indent=2)
  return ['tokenizer.json', 'tokenizer_config.json']
