"""Metric writers: console progress line, JSON lines in the workdir, TensorBoard event files.

Only process 0 writes (`jax.process_index() == 0`); every other process gets writers that do
nothing, so a multi-host loop can call them unconditionally. Values are converted to Python
floats once, on the host, after the step that produced them has finished.

Example:
  >>> import tempfile
  >>> workdir = tempfile.mkdtemp()
  >>> writer = create_default_writer(workdir, total_steps=10, console=False, tensorboard=False)
  >>> writer.write_scalars(1, {'reward_mean': 0.5})
  >>> writer.close()
  >>> read_jsonl(workdir)[0]['reward_mean']
  0.5
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np

JSONL_NAME = 'metrics.jsonl'


def _to_float(value: Any) -> float:
  """Converts a scalar (Python, NumPy or a fully addressable jax.Array) to a float."""
  arr = np.asarray(value)
  if arr.size != 1:
    raise ValueError(f'metric values must be scalars, got shape {arr.shape}')
  return float(arr.reshape(()))


def is_writer_process() -> bool:
  """True on process 0, the one process that writes metrics, summaries and config files."""
  try:
    import jax  # pylint: disable=g-import-not-at-top
    return jax.process_index() == 0
  except Exception:  # pragma: no cover - jax missing or not initialised.
    return True


class MetricWriter:
  """Interface of every writer: scalars keyed by step, plus free-form text lines."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    raise NotImplementedError

  def write_text(self, step: int, text: str) -> None:
    del step, text

  def flush(self) -> None:
    pass

  def close(self) -> None:
    self.flush()


class NullWriter(MetricWriter):
  """Writes nothing (used on processes other than 0)."""

  def write_scalars(self, step, scalars):
    del step, scalars


class JsonlWriter(MetricWriter):
  """Appends one JSON object per call to `<workdir>/metrics.jsonl`: `{"step": s, **scalars}`.

  On resume the file is truncated to the records with `step <= resume_step`, so a run killed
  after writing but before checkpointing does not leave duplicate steps.
  """

  def __init__(self, workdir: str, *, resume_step: int | None = None, name: str = JSONL_NAME):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, name)
    if resume_step is not None and os.path.exists(self.path):
      kept = [r for r in _read_records(self.path) if r.get('step', -1) <= resume_step]
      tmp = self.path + '.tmp'
      with open(tmp, 'w') as f:
        for r in kept:
          f.write(json.dumps(r) + '\n')
      os.replace(tmp, self.path)
    elif resume_step is None and os.path.exists(self.path):
      os.remove(self.path)
    self._file = open(self.path, 'a', buffering=1)  # Line-buffered: each record is written.

  def write_scalars(self, step, scalars):
    record = {'step': int(step)}
    for k, v in scalars.items():
      f = _to_float(v)
      record[k] = f if math.isfinite(f) else repr(f)
    self._file.write(json.dumps(record) + '\n')

  def flush(self):
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self):
    if not self._file.closed:
      self.flush()
      self._file.close()


class TensorBoardWriter(MetricWriter):
  """TensorBoard event files under `<workdir>/tensorboard` via tensorboardX (no TensorFlow)."""

  def __init__(self, workdir: str):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._writer = SummaryWriter(logdir=os.path.join(workdir, 'tensorboard'))

  def write_scalars(self, step, scalars):
    for k, v in scalars.items():
      self._writer.add_scalar(k, _to_float(v), global_step=int(step))

  def write_text(self, step, text):
    self._writer.add_text('log', text, global_step=int(step))

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


class ConsoleWriter(MetricWriter):
  """Prints one progress line per call: step/total, elapsed, ETA and a few chosen scalars.

  Args:
    total_steps: number of steps of the run, for the percentage and the ETA.
    keys: scalars to show (in this order) when present; others are written to the other writers
      only.
    stream: where to print (default stdout).
    start_step: the step the run (re)started from, so the ETA uses this session's pace only.
  """

  DEFAULT_KEYS = ('sft/nll', 'reward_mean', 'pass_rate', 'loss', 'entropy', 'kl_ref', 'response_length',
                  'eval/greedy_accuracy', 'eval/sampled_pass@1', 'step_time', 'tokens_per_sec')

  def __init__(self, total_steps: int, *, keys: Sequence[str] = DEFAULT_KEYS,
               stream: TextIO | None = None, start_step: int = 0):
    self.total_steps = int(total_steps)
    self.keys = tuple(keys)
    self.stream = stream or sys.stdout
    self._start_step = int(start_step)
    self._t0 = time.perf_counter()

  def write_scalars(self, step, scalars):
    elapsed = time.perf_counter() - self._t0
    done = max(int(step) - self._start_step, 0)
    left = max(self.total_steps - int(step), 0)
    eta = elapsed / done * left if done else float('nan')
    parts = [f'[{int(step):>5d}/{self.total_steps}]',
             f'{100.0 * int(step) / max(self.total_steps, 1):5.1f}%',
             f'elapsed {_fmt_time(elapsed)}', f'eta {_fmt_time(eta)}']
    for k in self.keys:
      if k in scalars:
        parts.append(f'{k}={_to_float(scalars[k]):.4g}')
    print(' '.join(parts), file=self.stream, flush=True)

  def write_text(self, step, text):
    print(f'[{int(step):>5d}] {text}', file=self.stream, flush=True)


class MultiWriter(MetricWriter):
  """Forwards every call to several writers."""

  def __init__(self, writers: Sequence[MetricWriter]):
    self.writers = list(writers)

  def write_scalars(self, step, scalars):
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_text(self, step, text):
    for w in self.writers:
      w.write_text(step, text)

  def flush(self):
    for w in self.writers:
      w.flush()

  def close(self):
    for w in self.writers:
      w.close()


def create_default_writer(workdir: str, *, total_steps: int, console: bool = True,
                          jsonl: bool = True, tensorboard: bool = True,
                          resume_step: int | None = None,
                          console_keys: Sequence[str] = ConsoleWriter.DEFAULT_KEYS,
                          just_logging: bool | None = None) -> MetricWriter:
  """Console + JSONL + TensorBoard writers on process 0, a `NullWriter` elsewhere.

  Args:
    workdir: directory for `metrics.jsonl` and `tensorboard/`.
    total_steps: the run's length, for the console ETA.
    console, jsonl, tensorboard: which writers to create.
    resume_step: the step restored from a checkpoint, or None for a fresh run (which starts a new
      JSONL file). JSONL records after `resume_step` are dropped.
    console_keys: scalars shown on the console line.
    just_logging: override of the process-0 test (for tests).

  Returns:
    A `MetricWriter`.
  """
  writer_process = is_writer_process() if just_logging is None else not just_logging
  if not writer_process:
    return NullWriter()
  writers: list[MetricWriter] = []
  if console:
    writers.append(ConsoleWriter(total_steps, keys=console_keys, start_step=resume_step or 0))
  if jsonl:
    writers.append(JsonlWriter(workdir, resume_step=resume_step))
  if tensorboard:
    writers.append(TensorBoardWriter(workdir))
  return MultiWriter(writers)


def _read_records(path: str) -> list[dict[str, Any]]:
  records = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break  # A line cut by a kill: everything after it is unreliable.
  return records


def read_jsonl(workdir: str, name: str = JSONL_NAME) -> list[dict[str, Any]]:
  """Reads the records written by `JsonlWriter` (a truncated last line is dropped)."""
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return []
  return _read_records(path)


def _fmt_time(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '--:--'
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}:{m:02d}:{s:02d}' if h else f'{m:02d}:{s:02d}'
