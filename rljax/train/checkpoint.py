"""Orbax checkpoints of everything a run needs to resume exactly.

One checkpoint per saved step, under ``<workdir>/checkpoints/<step>/``, with two items:

* ``state``: a pytree of arrays: parameters, optimizer state, step, RNG key data, curriculum
  state and anything else the loop holds as arrays (restored with the shardings of a template,
  so parameters land on the mesh of the restoring run, whatever mesh saved them).
* ``meta``: a JSON dict: data-iterator position, wall time so far, config fingerprint.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save leaves no step that looks finished. Moving between meshes: orbax stores each array whole (not per device), and `restore` reads it
into the template's shardings, so a state saved on one mesh (8x1x1, say) restores on another
(2x2x2, or one device) with that mesh's layout; `tests/test_checkpoint_mesh.py` resumes a run
on another mesh and checks it continues with the uninterrupted run's metrics. A template leaf
that is an uncommitted array (created by `jnp` without a device, e.g. a curriculum's fresh
state) is restored uncommitted too, so a jitted function under any mesh may take it.

A step that *does* look finished but cannot be
read (a truncated or deleted file, say) is skipped with a warning, renamed to
``unreadable_<step>_<n>`` (kept for inspection, out of the way of the next save of that step),
and the previous step is restored instead.

Example:
  >>> import tempfile, jax.numpy as jnp
  >>> ckpt = Checkpointer(tempfile.mkdtemp(), max_to_keep=2)
  >>> ckpt.save(3, {'w': jnp.ones(2)}, {'position': 7})
  >>> step, state, meta = ckpt.restore({'w': jnp.zeros(2)})
  >>> step, float(state['w'][0]), meta['position']
  (3, 1.0, 7)
  >>> ckpt.close()
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)


class CheckpointFallbackWarning(UserWarning):
  """Issued when the latest checkpoint cannot be read and an older one is restored."""


class Checkpointer:
  """Saves and restores (state pytree, JSON metadata) by step with fallback on corruption.

  Args:
    directory: where the step directories go (created if missing).
    max_to_keep: how many finished checkpoints to keep (>= 2 so there is something to fall back
      to).
    async_save: write in a background thread (the next save, `wait` or `close` waits for it).
  """

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = False):
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f'max_to_keep must be >= 1, got {max_to_keep}')
    self.directory = os.path.abspath(directory)
    os.makedirs(self.directory, exist_ok=True)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=('state', 'meta'))

  def all_steps(self) -> list[int]:
    """Finished steps on disk, ascending."""
    self._manager.reload()
    return sorted(int(s) for s in self._manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any, meta: dict[str, Any] | None = None, *,
           force: bool = True) -> None:
    """Saves `state` (pytree of arrays) and `meta` (JSON-serialisable dict) as `step`."""
    meta = dict(meta or {})
    self._manager.save(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=force)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def restore(self, template: Any, *, step: int | None = None
              ) -> tuple[int, Any, dict[str, Any]] | None:
    """Restores the newest readable checkpoint (or `step`), or returns None if there is none.

    Args:
      template: a pytree with the structure, shapes, dtypes and shardings of the saved state
        (concrete arrays or `jax.ShapeDtypeStruct`s with `.sharding`); restored arrays get the
        template's shardings (uncommitted template arrays give uncommitted arrays). Or a function `meta -> template`, for states whose structure
        depends on what the checkpoint's metadata says (e.g. the training phase). Or None: the
        saved tree as nested dicts/lists of arrays on the default device (to pick parts of
        another run's state).
      step: restore exactly this step (no fallback).

    Returns:
      `(step, state, meta)` or None when no checkpoint exists.

    Raises:
      RuntimeError: if checkpoints exist but none can be read.
    """
    steps = [step] if step is not None else self.all_steps()[::-1]
    if not steps:
      return None
    errors = []
    for s in steps:
      try:
        if callable(template):
          meta = self._manager.restore(s, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
          step_template = template(dict(meta['meta'] or {}))
        else:
          step_template = template
        abstract = None if step_template is None else jax.tree.map(_abstract, step_template)
        restored = self._manager.restore(
            s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                       meta=ocp.args.JsonRestore()))
        state = restored['state']
        if step_template is not None:
          state = jax.tree.map(_like, step_template, state)
        _check_finite(state)
        if errors:
          moved = [self._set_aside(e[0]) for e in errors]
          warnings.warn(
              f'checkpoint(s) {[e[0] for e in errors]} in {self.directory} could not be read '
              f'({errors[0][1]}); restored the previous checkpoint, step {s} (the unreadable '
              f'ones were moved to {moved})', CheckpointFallbackWarning, stacklevel=2)
        return s, state, dict(restored['meta'] or {})
      except Exception as e:  # pylint: disable=broad-except
        if step is not None:
          raise
        logger.warning('checkpoint step %d unreadable: %s: %s', s, type(e).__name__, e)
        errors.append((s, f'{type(e).__name__}: {str(e)[:200]}'))
    raise RuntimeError(f'no readable checkpoint in {self.directory}: {errors}')

  def _set_aside(self, step: int) -> str:
    """Renames an unreadable step directory out of the way (so the step can be saved again)."""
    src = os.path.join(self.directory, str(step))
    n = 0
    while os.path.exists(dst := os.path.join(self.directory, f'unreadable_{step}_{n}')):
      n += 1
    if os.path.exists(src):
      os.rename(src, dst)
    self._manager.reload()
    return os.path.basename(dst)

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _abstract(x):
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  x = np.asarray(x)
  return jax.ShapeDtypeStruct(x.shape, x.dtype)


def _like(template, restored):
  """`restored`, uncommitted (on the default device) where the template leaf is uncommitted."""
  if isinstance(template, jax.Array) and not template.committed:
    return jax.numpy.asarray(np.asarray(restored))
  return restored


def _check_finite(state: Any) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      # Spans other processes' devices: reduce on the devices, read the replicated answer.
      if jnp.issubdtype(leaf.dtype, jnp.floating) and not bool(jnp.all(jnp.isfinite(leaf))):
        raise ValueError(f'non-finite values in restored {jax.tree_util.keystr(path)}')
      continue
    arr = np.asarray(leaf)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
      raise ValueError(f'non-finite values in restored {jax.tree_util.keystr(path)}')
