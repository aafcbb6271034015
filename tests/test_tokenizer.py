"""Tests for rljax.data.tokenizer (sentencepiece and Hugging Face tokenizer.json wrappers)."""

import json

import numpy as np
import pytest

from rljax.data import tasks
from rljax.data import tokenizer as tok_lib
from rljax.data.tokenizer import HFTokenizer
from rljax.data.tokenizer import Tokenizer

CORPUS = [f'{a}+{b}={a + b}' for a in range(0, 120, 7) for b in range(3, 90, 11)] + [
    'sort 53 7 21:7 21 53', 'reverse abcd:dcba', 'Make 16 with 3 5 2 7:(3+5)*2',
    'Question: Tom has 3 apples.\nAnswer:\nHe eats 1.\n#### 2', 'two  spaces  kept ',
]
ROUND_TRIP = ['12+34=46', 'sort 7 21:7 21', 'Question: Tom\nAnswer:\n#### 2', '  lead and trail  ',
              'Make 9 with 2 3:(2+1)*3', '']


@pytest.fixture(scope='module')
def bpe():
  return Tokenizer.train(CORPUS, vocab_size=256, model_type='bpe')


@pytest.fixture(scope='module')
def char():
  return Tokenizer.train(CORPUS, vocab_size=256, model_type='char')


@pytest.mark.parametrize('model_type', ['bpe', 'unigram', 'char'])
def test_train_round_trip_and_special_ids(model_type, tmp_path):
  tok = Tokenizer.train(CORPUS, vocab_size=256, model_type=model_type,
                        model_prefix=tmp_path / 'm')
  assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
  assert [tok.id_to_piece(i) for i in range(4)] == ['<pad>', '<unk>', '<s>', '</s>']
  assert 4 < tok.vocab_size <= 256
  for text in ROUND_TRIP:
    assert tok.decode(tok.encode(text)) == text
  # Files written by model_prefix load back to the same tokenizer.
  loaded = Tokenizer.load(tmp_path / 'm.model')
  assert loaded.vocab_size == tok.vocab_size
  assert all(loaded.encode(t) == tok.encode(t) for t in ROUND_TRIP)
  vocab_lines = (tmp_path / 'm.vocab').read_text(encoding='utf-8').rstrip('\n').split('\n')
  assert len(vocab_lines) == tok.vocab_size


def test_char_vocabulary_is_the_character_set(char):
  chars = set(''.join(CORPUS))
  assert char.vocab_size == len(chars) + 4  # one piece per character plus pad/unk/bos/eos
  assert sorted(char.id_to_piece(i) for i in range(4, char.vocab_size)) == sorted(
      c if c != ' ' else '▁' for c in chars)
  text = 'Make 16 with 3 5:'
  assert len(char.encode(text)) == len(text)


def test_split_digits_and_bpe_merges(bpe):
  assert len(bpe.encode('12345')) == 5  # digits are never merged
  assert len(bpe.encode('reverse abcd:dcba')) < len('reverse abcd:dcba')  # letters are


def test_unknown_characters_and_out_of_range_ids(bpe):
  ids = bpe.encode('é')
  assert ids == [bpe.unk_id]
  assert '⁇' in bpe.decode(ids)
  # Ids beyond the vocabulary (a model's embedding table is often larger) decode as unk.
  text = bpe.decode([bpe.encode('1')[0], bpe.vocab_size + 5, -1])
  assert text.startswith('1') and '⁇' in text


def test_encode_special_tokens(bpe):
  body = bpe.encode('1+1=2')
  assert bpe.encode('1+1=2', add_bos=True) == [2] + body
  assert bpe.encode('1+1=2', add_bos=True, add_eos=True) == [2] + body + [3]
  assert bpe.decode([2] + body + [3, 0, 0]) == '1+1=2'  # specials are dropped
  assert bpe.decode(body + [3] + body, stop_at_eos=True) == '1+1=2'
  assert bpe.decode(body + [3] + body) == '1+1=21+1=2'


def test_encode_batch_left_and_right_padding(bpe):
  texts = ['1+1=', '12+3=', '']
  enc = [bpe.encode(t) for t in texts]
  width = 8
  expected_left = np.zeros((3, width), np.int32)
  expected_right = np.zeros((3, width), np.int32)
  mask_left = np.zeros((3, width), np.int32)
  mask_right = np.zeros((3, width), np.int32)
  for b, e in enumerate(enc):
    if e:
      expected_left[b, width - len(e):] = e
      mask_left[b, width - len(e):] = 1
      expected_right[b, :len(e)] = e
      mask_right[b, :len(e)] = 1
  ids, mask = bpe.encode_batch(texts, max_len=width)
  assert ids.dtype == np.int32 and mask.dtype == np.int32
  np.testing.assert_array_equal(ids, expected_left)
  np.testing.assert_array_equal(mask, mask_left)
  ids, mask = bpe.encode_batch(texts, max_len=width, pad_left=False)
  np.testing.assert_array_equal(ids, expected_right)
  np.testing.assert_array_equal(mask, mask_right)
  ids, mask = bpe.encode_batch(texts)  # width = longest
  assert ids.shape == (3, max(len(e) for e in enc))
  assert bpe.decode_batch(ids, mask) == texts


def test_encode_batch_truncation(bpe):
  e = bpe.encode('123+456=579')
  with pytest.raises(ValueError, match='texts\\[0\\] has 11 tokens'):
    bpe.encode_batch(['123+456=579'], max_len=4)
  ids, _ = bpe.encode_batch(['123+456=579'], max_len=4, truncation='left')
  assert ids[0].tolist() == e[-4:]
  ids, _ = bpe.encode_batch(['123+456=579'], max_len=4, truncation='right')
  assert ids[0].tolist() == e[:4]
  with pytest.raises(ValueError, match='truncation'):
    bpe.encode_batch(['1'], max_len=4, truncation='middle')
  with pytest.raises(TypeError, match='single string'):
    bpe.encode_batch('1+1=', max_len=4)


def test_decode_batch_checks_shapes(bpe):
  with pytest.raises(ValueError, match='shape \\[B, L\\]'):
    bpe.decode_batch(np.zeros((3,), np.int32))
  with pytest.raises(ValueError, match='mask'):
    bpe.decode_batch(np.zeros((2, 3), np.int32), np.zeros((2, 4)))


def test_encode_sequences_layout(bpe):
  prompts, completions = ['12+34=', '1+2='], ['46', '3']
  p_len, c_len = 8, 4
  seq = bpe.encode_sequences(prompts, completions, prompt_len=p_len, completion_len=c_len,
                             add_bos=True)
  assert seq.tokens.shape == seq.prompt_mask.shape == seq.completion_mask.shape == (2, 12)
  for b in range(2):
    p = [bpe.bos_id] + bpe.encode(prompts[b])
    c = bpe.encode(completions[b]) + [bpe.eos_id]
    row = [bpe.pad_id] * (p_len - len(p)) + p + c + [bpe.pad_id] * (c_len - len(c))
    assert seq.tokens[b].tolist() == row
    assert seq.prompt_mask[b].tolist() == [0] * (p_len - len(p)) + [1] * len(p) + [0] * c_len
    assert seq.completion_mask[b].tolist() == [0] * p_len + [1] * len(c) + [0] * (c_len - len(c))
  assert not np.any(seq.prompt_mask & seq.completion_mask)
  assert bpe.decode_batch(seq.tokens, seq.completion_mask) == completions
  assert bpe.decode_batch(seq.tokens, seq.prompt_mask) == prompts
  with pytest.raises(ValueError, match='same length'):
    bpe.encode_sequences(prompts, completions[:1], prompt_len=8, completion_len=4)
  with pytest.raises(ValueError, match='more than the width'):
    bpe.encode_sequences(prompts, ['1', '12345'], prompt_len=8, completion_len=4)


def test_model_without_pad_falls_back_to_unk(tmp_path):
  tok = Tokenizer.train(CORPUS, vocab_size=64, model_type='char', pad_id=-1, unk_id=0,
                        bos_id=1, eos_id=2)
  assert tok.pad_id == tok.unk_id == 0
  tok.save(tmp_path / 'nopad.model')
  assert Tokenizer.load(tmp_path / 'nopad.model', pad_id=2).pad_id == 2


def test_train_errors():
  with pytest.raises(ValueError, match='model_type'):
    Tokenizer.train(CORPUS, model_type='wordpiece')
  with pytest.raises(ValueError, match='empty'):
    Tokenizer.train(['', ''])
  with pytest.raises(ValueError, match='sentencepiece could not train'):
    Tokenizer.train(CORPUS, vocab_size=20, model_type='bpe')  # fewer pieces than characters


def test_tokenizer_trained_on_task_corpus_round_trips_every_task():
  task_list = [tasks.get_task(n) for n in ('arithmetic', 'countdown', 'sorting', 'reversal')]
  corpus = tasks.tokenizer_corpus(task_list, num_per_task=300)
  tok = Tokenizer.train(corpus, vocab_size=300, model_type='bpe')
  for task in task_list:
    for ex in task.examples('test', 20):
      ids = tok.encode(ex.prompt)
      assert tok.unk_id not in ids
      assert tok.decode(ids) == ex.prompt
      assert tok.decode(tok.encode(ex.demonstration)) == ex.demonstration


def test_serialized_proto_round_trip(bpe):
  again = Tokenizer(bpe.serialized_model_proto)
  assert again.encode('Make 16 with 3 5 2 7:') == bpe.encode('Make 16 with 3 5 2 7:')


# ------------------------------------------------------------------------ Hugging Face


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
  tokenizers = pytest.importorskip('tokenizers')
  d = tmp_path_factory.mktemp('hf')
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=300, special_tokens=['<|endoftext|>', '<|im_end|>'],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(CORPUS, trainer=trainer)
  tok.save(str(d / 'tokenizer.json'))
  (d / 'tokenizer_config.json').write_text(json.dumps({
      'bos_token': None,
      'eos_token': {'content': '<|im_end|>', '__type': 'AddedToken'},
      'pad_token': '<|endoftext|>',
  }))
  return d


def test_hf_tokenizer_matches_backend_and_round_trips(hf_dir):
  import tokenizers  # pylint: disable=g-import-not-at-top
  backend = tokenizers.Tokenizer.from_file(str(hf_dir / 'tokenizer.json'))
  tok = HFTokenizer.load(hf_dir)
  assert tok.bos_id is None
  assert tok.eos_id == backend.token_to_id('<|im_end|>')
  assert tok.pad_id == backend.token_to_id('<|endoftext|>')
  assert tok.vocab_size == backend.get_vocab_size()
  for text in ROUND_TRIP + ['unicode é 🙂 is byte level']:
    ids = tok.encode(text)
    assert ids == backend.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text
  ids = tok.encode('1+1=2', add_eos=True)
  assert ids[-1] == tok.eos_id and tok.decode(ids) == '1+1=2'
  with pytest.raises(ValueError, match='no bos'):
    tok.encode('x', add_bos=True)
  batch, mask = tok.encode_batch(['1+1=', '12+34='], max_len=10)
  assert batch.shape == (2, 10) and batch[0, 0] == tok.pad_id
  assert tok.decode_batch(batch, mask) == ['1+1=', '12+34=']
  seq = tok.encode_sequences(['1+1='], ['2'], prompt_len=6, completion_len=3)
  assert tok.decode_batch(seq.tokens, seq.completion_mask) == ['2']


def test_hf_overrides_and_dispatch(hf_dir):
  tok = HFTokenizer.load(hf_dir / 'tokenizer.json', eos_token='<|endoftext|>', pad_token=None)
  assert tok.eos_id == tok.pad_id  # pad falls back to eos
  with pytest.raises(ValueError, match='not in the vocabulary'):
    HFTokenizer.load(hf_dir, bos_token='<s>')
  with pytest.raises(TypeError, match='Unknown arguments'):
    HFTokenizer.load(hf_dir, sep_token='x')
  assert isinstance(tok_lib.load_tokenizer(hf_dir), HFTokenizer)


def test_docstring_examples():
  import doctest  # pylint: disable=g-import-not-at-top
  assert doctest.testmod(tok_lib, raise_on_error=True).attempted > 0


@pytest.mark.parametrize('main_process, file_exists', [(True, False), (True, True),
                                                       (False, True)])
def test_every_process_passes_the_tokenizer_barrier(monkeypatch, tmp_path, main_process,
                                                    file_exists):
  # A process that finds the workdir's tokenizer (written by process 0 before this process
  # looked, or by an earlier run) still takes the barrier that process 0 waits at.
  from experiments import config as config_lib  # pylint: disable=g-import-not-at-top
  from experiments import data  # pylint: disable=g-import-not-at-top
  from experiments import distributed  # pylint: disable=g-import-not-at-top
  texts = ['1+2=3', '12+5=17', '3*4=12'] * 20
  config = config_lib.Config(tokenizer='char')
  if file_exists:
    Tokenizer.train(texts, vocab_size=64, model_type='char',
                    model_prefix=str(tmp_path / 'tokenizer'))
  barriers, trained = [], []
  monkeypatch.setattr(distributed, 'is_main_process', lambda: main_process)
  monkeypatch.setattr(distributed, 'barrier', barriers.append)
  real_train = Tokenizer.train
  monkeypatch.setattr(Tokenizer, 'train', lambda *a, **k: trained.append(1) or real_train(*a, **k))
  tok, _ = data._load_tokenizer(config, texts, str(tmp_path))  # pylint: disable=protected-access
  assert barriers == ['tokenizer']
  assert trained == ([] if file_exists else [1])
  assert tok.encode('1+2') == Tokenizer.load(str(tmp_path / 'tokenizer.model')).encode('1+2')
