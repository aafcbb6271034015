"""Device mesh, partition rules and sharding helpers.

The train step and the sampler are jitted over a `jax.sharding.Mesh` with three named axes:

* ``data``: batch parallelism; parameters replicated.
* ``fsdp``: batch parallelism with parameters (and optimizer state) sharded along one dimension.
* ``tensor``: model parallelism inside a layer (column/row-parallel matmuls).

The batch dimension of every batch array is sharded over ``('data', 'fsdp')``. Parameters follow
*partition rules*: an ordered list of ``(regex, PartitionSpec)`` matched against the parameter's
path (``'layers/0/self_attn/q_proj/weight'``); the first match wins, and an unmatched parameter falls
back to `fsdp_spec` (its largest dimension divisible by the ``fsdp`` axis size, else replicated).
A mesh axis of a rule that does not divide its dimension is dropped from that dimension (the
others stay), so a rule never fails on an odd shape: e.g. with ``tensor=8`` a ``[12, D]``
projection keeps its ``fsdp`` sharding and is replicated over ``tensor``.
With the default one-device mesh every array is replicated and nothing changes; adding axes and
rules is all a larger run needs. The optimizer state follows the same rules (its leaves' paths
end with the parameters' paths), so parameters and moments are split over ``fsdp x tensor``;
the activations' layout is fixed inside the model (`rljax.models.sharding`).

The axes use `jax.sharding.AxisType.Auto`, so XLA propagates shardings through the step and
`jax.lax.with_sharding_constraint` works (``jax.make_mesh`` defaults to Explicit axes where it
does not).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rljax.models import sharding as sharding_lib

AXES = sharding_lib.AXES
BATCH_AXES = sharding_lib.BATCH

PartitionRules = Sequence[tuple[str, P]]

# Rules for the tensor axis on the rljax / Hugging Face Llama layout, matched against '/'-joined
# parameter paths. Linear weights are stored [out, in]: column-parallel projections (q, k, v,
# gate, up, lm_head) shard their output dimension over `tensor`, row-parallel ones (o, down) their
# input dimension; the fsdp axis takes the other dimension.
DEFAULT_RULES: PartitionRules = (
    (r'(q_proj|k_proj|v_proj|gate_proj|up_proj)/weight$', P('tensor', 'fsdp')),
    (r'(q_proj|k_proj|v_proj|gate_proj|up_proj)/bias$', P('tensor')),
    (r'(o_proj|down_proj)/weight$', P('fsdp', 'tensor')),
    (r'lm_head/weight$', P('tensor', 'fsdp')),
    (r'embed_tokens/weight$', P(None, ('tensor', 'fsdp'))),
)


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, *,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a mesh with axes ``('data', 'fsdp', 'tensor')`` of Auto axis type.

  Args:
    data: size of the data-parallel axis.
    fsdp: size of the fully-sharded data-parallel axis.
    tensor: size of the tensor-parallel axis.
    devices: devices to use (default: the first ``data * fsdp * tensor`` of `jax.devices()`).

  Returns:
    A `jax.sharding.Mesh` of shape ``(data, fsdp, tensor)``.

  Raises:
    ValueError: if a size is < 1 or there are not enough devices.
  """
  for name, size in (('data', data), ('fsdp', fsdp), ('tensor', tensor)):
    if not isinstance(size, (int, np.integer)) or size < 1:
      raise ValueError(f'mesh axis {name!r} must be a positive integer, got {size!r}')
  n = data * fsdp * tensor
  devices = list(jax.devices() if devices is None else devices)
  if len(devices) < n:
    raise ValueError(
        f'mesh data={data} x fsdp={fsdp} x tensor={tensor} needs {n} devices, '
        f'only {len(devices)} available (on CPU set '
        f'XLA_FLAGS=--xla_force_host_platform_device_count={n} before importing jax)')
  device_array = np.asarray(devices[:n], dtype=object).reshape(data, fsdp, tensor)
  return Mesh(device_array, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def batch_spec(ndim: int) -> P:
  """`PartitionSpec` sharding the leading (batch) dimension over ``('data', 'fsdp')``."""
  return P(BATCH_AXES, *([None] * (ndim - 1)))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  return NamedSharding(mesh, batch_spec(ndim))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_size_multiple(mesh: Mesh) -> int:
  """The global batch must be a multiple of this (the product of the batch axes)."""
  return int(mesh.shape['data'] * mesh.shape['fsdp'])


def _path_str(path) -> str:
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.GetAttrKey):
      if k.name != 'value':  # the array inside an nnx.Variable
        parts.append(str(k.name))
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    else:
      parts.append(str(getattr(k, 'key', k)))
  return '/'.join(parts)


def fsdp_spec(shape: Sequence[int], fsdp_size: int) -> P:
  """Shards the largest dimension divisible by `fsdp_size` over ``fsdp``; else replicates."""
  if fsdp_size <= 1 or not shape:
    return P()
  order = sorted(range(len(shape)), key=lambda i: -shape[i])
  for i in order:
    if shape[i] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[i] = 'fsdp'
      return P(*spec)
  return P()


def _drop_trivial(spec: P, mesh: Mesh) -> P:
  """Replaces axes of size 1 by None (so one-device specs are plainly replicated)."""
  out = []
  for axes in spec:
    if axes is None:
      out.append(None)
      continue
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    kept = tuple(a for a in axes if mesh.shape[a] > 1)
    out.append(None if not kept else kept[0] if len(kept) == 1 else kept)
  while out and out[-1] is None:
    out.pop()
  return P(*out)


def param_specs(params: Any, mesh: Mesh, rules: PartitionRules = DEFAULT_RULES) -> Any:
  """PartitionSpecs for a parameter pytree from ordered ``(regex, spec)`` rules.

  A rule applies when its spec has no more entries than the array has dimensions; each of its
  mesh axes that does not divide the dimension it names is dropped (`sharding.fitted_spec`).
  A parameter no rule applies to gets the fsdp fallback. Scalars are replicated.

  Args:
    params: pytree of arrays (or `jax.ShapeDtypeStruct`s), e.g. an `nnx.State`.
    mesh: the mesh (axis sizes decide divisibility).
    rules: ordered ``(regex, PartitionSpec)`` pairs matched with `re.search` on the path.

  Returns:
    A pytree of `PartitionSpec` with the structure of `params`.
  """
  compiled = [(re.compile(pattern), spec) for pattern, spec in rules]

  def spec_for(path, leaf):
    shape = tuple(getattr(leaf, 'shape', ()))
    if not shape:
      return P()
    name = _path_str(path)
    for pattern, spec in compiled:
      if pattern.search(name) and len(spec) <= len(shape):
        return sharding_lib.fitted_spec(shape, spec, dict(mesh.shape))
    return _drop_trivial(fsdp_spec(shape, mesh.shape['fsdp']), mesh)

  return jax.tree_util.tree_map_with_path(spec_for, params)


def param_shardings(params: Any, mesh: Mesh, rules: PartitionRules = DEFAULT_RULES) -> Any:
  """`NamedSharding`s for `params` (see `param_specs`)."""
  return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(params, mesh, rules),
                      is_leaf=lambda x: isinstance(x, P))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places host arrays of a batch pytree on the mesh, leading dimension over the batch axes.

  Every process passes the same global host arrays (the data is deterministic from the seed);
  each one transfers only the rows of its own devices (`jax.make_array_from_callback` with the
  global shape), so the global array equals the one-process run's. Scalars (0-d leaves) are
  replicated. Raises ValueError naming the field whose batch dimension does not divide the batch
  axes.
  """
  multiple = batch_size_multiple(mesh)

  def put(path, x):
    if isinstance(x, jax.Array):
      return jax.device_put(x, replicated(mesh) if x.ndim == 0 else batch_sharding(mesh, x.ndim))
    x = np.asarray(x)
    if x.ndim and x.shape[0] % multiple:
      raise ValueError(
          f'batch field {_path_str(path)!r} has leading dimension {x.shape[0]}, which is not a '
          f'multiple of the batch mesh axes data x fsdp = {multiple}')
    sharding = replicated(mesh) if x.ndim == 0 else batch_sharding(mesh, x.ndim)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree_util.tree_map_with_path(put, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Host values (the same on every process) as arrays replicated over the whole mesh.

  Small loop state such as a curriculum's lives on one device of each process; orbax saves
  only arrays that span the mesh once several processes share it, and jit under the mesh
  context accepts them on every mesh.
  """
  def put(x):
    x = np.asarray(fetch(x))
    return jax.make_array_from_callback(x.shape, replicated(mesh), lambda index: x[index])

  return jax.tree.map(put, tree)


def fetch(tree: Any) -> Any:
  """`jax.device_get` that also works on arrays spanning other processes' devices.

  An array that is not fully addressable is gathered from every process
  (`multihost_utils.process_allgather`, a collective every process must call); the others are
  copied to the host as they are. Every process gets the same global NumPy arrays.
  """
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      return multihost_utils.process_allgather(x, tiled=True)
    return jax.device_get(x)

  return jax.tree.map(get, tree)


def constrain_batch(x: jax.Array) -> jax.Array:
  """Inside jit: `with_sharding_constraint` of the leading dimension to the batch axes.

  Works under a mesh context (`jax.sharding.use_mesh`/`jax.set_mesh`) or is a no-op without one.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, batch_spec(x.ndim))
