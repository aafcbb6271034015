"""Sharding constraints on activations, by logical axis, for jit over a named mesh.

The model and its decoder place their activations with `constrain(x, spec)` where `spec` names
one logical axis per dimension:

* ``BATCH`` (the mesh axes ``('data', 'fsdp')``): rows of the batch.
* ``HEADS`` (the mesh axis ``'tensor'``): attention heads, key/value heads, MLP hidden units.
* ``None``: not sharded.

Under `jax.set_mesh(mesh)` (an Auto-axis mesh such as `rljax.train.mesh.make_mesh` builds) the
constraint is `jax.lax.with_sharding_constraint`; without a mesh it is the identity. Mesh axes
that the mesh lacks, or whose size does not divide the dimension, are left out, so the same model
code runs on every mesh (a dimension that does not divide is replicated on that axis, and XLA
inserts the collectives the layout needs). The constraints fix the layout the partition rules
of `rljax.train.mesh` are written for: a batch-sharded residual stream, heads and MLP units on
``tensor``, weights gathered over ``fsdp`` where they are used.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import jax
from jax.sharding import PartitionSpec as P

AXES = ('data', 'fsdp', 'tensor')
BATCH = ('data', 'fsdp')
HEADS = ('tensor',)

Axes = Optional[Union[str, Sequence[str]]]


def _mesh():
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return None
  return mesh


def fitted_spec(shape: Sequence[int], spec: Sequence[Axes], mesh_shape) -> P:
  """`spec` restricted to the mesh axes present in `mesh_shape` that divide each dimension.

  Axes are kept in order while the product of their sizes divides the dimension; axes of size 1
  are dropped (so a one-device spec is plainly replicated).

  Args:
    shape: the array's shape.
    spec: one entry per leading dimension: None, a mesh axis name, or a tuple of names.
    mesh_shape: mapping of mesh axis name to size.

  Returns:
    A `PartitionSpec` valid for an array of `shape` on that mesh.
  """
  out = []
  for dim, axes in zip(shape, spec):
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    kept, size = [], 1
    for a in axes:
      n = int(mesh_shape.get(a, 1))
      if n > 1 and dim % (size * n) == 0:
        kept.append(a)
        size *= n
    out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  while out and out[-1] is None:
    out.pop()
  return P(*out)


def constrain(x: jax.Array, spec: Sequence[Axes]) -> jax.Array:
  """Inside jit under a mesh: `with_sharding_constraint(x, fitted_spec(x.shape, spec))`.

  The identity without a mesh. Dimensions no axis of `spec` applies to are replicated.
  """
  mesh = _mesh()
  if mesh is None:
    return x
  fitted = fitted_spec(x.shape, spec, dict(mesh.shape))
  return jax.lax.with_sharding_constraint(x, fitted)
