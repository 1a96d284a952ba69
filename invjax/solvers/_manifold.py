"""The active manifold of a solution: which coordinates are pinned, the projection onto the
tangent space, and a diagonal preconditioner for the reduced Hessian.

Used by :mod:`invjax.solvers.implicit`. Near a solution ``x*`` of
``min_x sum_i g_i(K_i x)``, every non-smooth ``g_i`` is smooth on its active manifold (the
points with the same zero pattern of ``K_i x``, the same clipped coordinates), and the pinned
coordinates of every term together confine ``x`` to the subspace

.. math:: S = \\{ v : (K_i v)_j = 0 \\text{ for every pinned coordinate } j \\text{ of every } i \\}.

For the operators a non-smooth term can use here this subspace is explicit: ``K_i`` is a
diagonal weighting of the identity (``L1``, ``L21``, boxes on the image) or of forward finite
differences (TV). A pinned coordinate of the identity fixes a pixel; a pinned difference ties
two neighbouring pixels. ``S`` is then the set of images that are constant on each connected
component of the graph of ties and zero on any component holding a fixed pixel, and the
orthogonal projection onto it averages over components (found here by label propagation with
pointer jumping).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from ..operators import Composed, FiniteDifference, Identity, LinearOperator, Mask
from ..operators.base import ChannelScaled, Scaled


class Base(eqx.Module):
    """``K = diag(weight) B`` with ``B`` the identity or finite differences (``weight=None``: 1)."""

    weight: jax.Array | None
    op: LinearOperator


def decompose(K: LinearOperator) -> Base | None:
    """``K`` as a diagonal weighting of an identity or finite-difference operator, or ``None``."""
    if isinstance(K, (Identity, FiniteDifference)):
        return Base(None, K)
    if isinstance(K, Mask):
        return Base(K.mask, Identity(K.in_shape, K.dtype))
    if isinstance(K, Scaled):
        inner = decompose(K.op)
        if inner is None or jnp.issubdtype(jnp.asarray(K.scale).dtype, jnp.complexfloating):
            return None
        return Base(_times(inner.weight, K.scale), inner.op)
    if isinstance(K, ChannelScaled):
        inner = decompose(K.op)
        if inner is None:
            return None
        out = tuple(K.out_shape)
        return Base(_times(inner.weight, K.scale.reshape((-1,) + (1,) * (len(out) - 1))), inner.op)
    if isinstance(K, Composed):
        left, right = decompose(K.left), decompose(K.right)
        if left is None or right is None or not isinstance(left.op, Identity):
            return None
        return Base(_times(right.weight, left.weight), right.op)
    return None


def _times(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a * b


def labels(ties: list[tuple[int, jax.Array]], shape) -> jax.Array:
    """Component labels (int32, ``shape``) of the graph whose edges tie pixel ``j`` to
    ``j + e_axis`` (with wrap-around) wherever ``mask[j]``, for each ``(axis, mask)``.

    Min-label propagation with pointer jumping, until nothing changes; each component gets the
    flat index of one of its pixels."""
    n = math.prod(shape)
    start = jnp.arange(n, dtype=jnp.int32).reshape(shape)

    def body(carry):
        lab, _ = carry
        new = lab
        for axis, tie in ties:
            new = jnp.where(tie, jnp.minimum(new, jnp.roll(new, -1, axis)), new)
            new = jnp.minimum(new, jnp.roll(jnp.where(tie, new, n), 1, axis))
        flat = new.ravel()
        flat = flat[flat]
        flat = flat[flat]
        new = flat.reshape(shape)
        return new, jnp.any(new != lab)

    lab, _ = jax.lax.while_loop(lambda c: c[1], body, (start, jnp.asarray(True)))
    return lab


class Projector(eqx.Module):
    """Orthogonal projection onto the tangent space ``S`` (see the module docstring)."""

    flat_labels: jax.Array | None  # (n,) int32, or None without ties
    inv_counts: jax.Array | None  # (n,) 1/|C| per component root, 0 on fixed components
    free: jax.Array | None  # pixel mask without ties (None: nothing fixed)

    def __call__(self, v):
        if self.flat_labels is not None:
            n = self.flat_labels.shape[0]
            sums = jax.ops.segment_sum(v.ravel(), self.flat_labels, num_segments=n)
            return (sums * self.inv_counts.astype(sums.dtype))[self.flat_labels].reshape(v.shape)
        if self.free is not None:
            return jnp.where(self.free, v, 0)
        return v

    def component_mean(self, d):
        """Per-pixel mean of ``d`` over its component (``d`` real, in_shape)."""
        if self.flat_labels is None:
            return d
        return self(d)


def tie_masks(base: Base, pinned: jax.Array, out_shape) -> tuple[jax.Array | None, list[tuple[int, jax.Array]]]:
    """``(fixed, ties)`` of one term ``g(diag(w) B x)`` with ``pinned`` coordinates of its
    output: fixed pixels (identity ``B``) or tied neighbours (finite differences ``B``). A zero
    weight pins nothing."""
    pinned = jnp.broadcast_to(pinned, out_shape)
    if base.weight is not None:
        pinned = pinned & (jnp.broadcast_to(base.weight, out_shape) != 0)
    B = base.op
    if isinstance(B, Identity):
        return pinned, []
    ties = []
    for k, axis in enumerate(B.axes):
        tie = pinned[k]
        if B.boundary == "neumann":
            idx = jnp.arange(B.shape[axis]).reshape([-1 if a == axis else 1 for a in range(len(B.shape))])
            tie = tie & (idx < B.shape[axis] - 1)
        ties.append((axis, tie))
    return None, ties


def projector(shape, fixed: jax.Array | None, ties: list[tuple[int, jax.Array]], real) -> tuple[Projector, jax.Array | None]:
    """The projector onto ``S`` from the union of every term's fixed pixels and ties, and the
    component labels (``None`` without ties)."""
    if not ties:
        return Projector(None, None, None if fixed is None else ~fixed), None
    lab = labels(ties, shape)
    flat = lab.ravel()
    n = flat.shape[0]
    counts = jax.ops.segment_sum(jnp.ones(n, real), flat, num_segments=n)
    keep = counts > 0
    if fixed is not None:
        keep = keep & ~(jax.ops.segment_max(fixed.ravel().astype(jnp.int32), flat, num_segments=n) > 0)
    inv = jnp.where(keep, 1 / jnp.where(keep, counts, 1), 0)
    return Projector(flat, inv, None), lab


def quadratic(dm, E):
    """``Re <E, dm(E)>`` per pixel group, summed over the leading (direction) axis when ``E`` has
    one more axis than the image; for complex ``dm`` averaged with the imaginary direction."""
    out = jnp.real(jnp.conj(E) * dm(E))
    if jnp.issubdtype(E.dtype, jnp.complexfloating) or jnp.issubdtype(jax.eval_shape(dm, E).dtype, jnp.complexfloating):
        Ei = 1j * E.astype(jnp.result_type(E.dtype, jnp.complex64))
        out = (out + jnp.real(jnp.conj(Ei) * dm(Ei))) / 2
    return out


def curvature_diagonal_fd(base: Base, dm, lab: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """For ``K = diag(w) D`` (finite differences) and the Hessian ``dm`` of the term at its prox
    point: ``1_C^T K^H dm K 1_C`` for every component ``C`` (indexed by root), as ``(values,
    roots)`` pairs to be summed per component. ``D 1_C`` is non-zero only on the differences that
    leave ``C``; per pixel ``j`` the components involved are its own and those of its forward
    neighbours, so a handful of passes over the image gives every component's value."""
    D = base.op
    roles = [lab] + [jnp.roll(lab, -1, axis) for axis in D.axes]
    valid = []
    for axis in D.axes:
        if D.boundary == "neumann":
            idx = jnp.arange(D.shape[axis]).reshape([-1 if a == axis else 1 for a in range(len(D.shape))])
            valid.append(idx < D.shape[axis] - 1)
        else:
            valid.append(jnp.ones((), bool))
    real = jnp.finfo(dtype).dtype
    w = None if base.weight is None else jnp.broadcast_to(base.weight, (len(D.axes),) + tuple(D.shape)).astype(real)
    values, roots = [], []
    for r in range(len(roles)):
        if r == 0:
            E = -jnp.stack([(roles[k + 1] != roles[0]) & valid[k] for k in range(len(D.axes))]).astype(dtype)
        else:
            E = jnp.stack([(roles[k + 1] == roles[r]) & (roles[r] != roles[0]) & valid[k] for k in range(len(D.axes))])
            E = E.astype(dtype)
        if w is not None:
            E = E * w
        q = jnp.sum(quadratic(dm, E), axis=0)
        if r > 1:  # a component reached through two forward neighbours counts once
            dup = jnp.zeros(lab.shape, bool)
            for s in range(1, r):
                dup = dup | (roles[s] == roles[r])
            q = jnp.where(dup, 0, q)
        values.append(q)
        roots.append(roles[r])
    return values, roots


def curvature_diagonal_identity(base: Base, dm, group_axis, out_shape, dtype) -> jax.Array:
    """For ``K = diag(w) I``: the diagonal of ``K^H dm K`` (exact for block-diagonal ``dm``
    with blocks along ``group_axis``, or elementwise ``dm``)."""
    real = jnp.finfo(dtype).dtype
    w = jnp.ones((), real) if base.weight is None else jnp.broadcast_to(base.weight, out_shape).astype(real)
    if group_axis is None or out_shape[group_axis] > 16:
        E = (jnp.ones(out_shape, real) * w).astype(dtype)
        return quadratic(dm, E)
    total = jnp.zeros(out_shape, real)
    axis = group_axis % len(out_shape)
    idx = jnp.arange(out_shape[axis]).reshape([-1 if a == axis else 1 for a in range(len(out_shape))])
    for c in range(out_shape[axis]):
        E = ((idx == c) * w).astype(dtype)
        total = total + jnp.where(idx == c, quadratic(dm, jnp.broadcast_to(E, out_shape)), 0)
    return total


def smooth_diagonal(term, x, key) -> jax.Array:
    """The diagonal of ``K^H Hess g K`` at ``x`` for a differentiable term: exact for a squared
    distance on an operator with a known ``gram_diagonal``, else its mean (a scalar, from two
    Rademacher probes)."""
    K, g = term.op, term.func
    scale, inner = 1.0, g
    from ..functionals import Scaled as ScaledF
    from ..functionals import SquaredL2

    while isinstance(inner, ScaledF):
        scale = scale * inner.scale
        inner = inner.functional
    real = jnp.finfo(x.dtype).dtype
    if isinstance(inner, SquaredL2):
        d = K.gram_diagonal()
        if d is not None:
            level = 1.0 if inner.weights is None else jnp.mean(inner.weights)
            return (jnp.asarray(scale, real) * jnp.asarray(level, real) * d.astype(real)).astype(real)
    _, hvp = jax.linearize(lambda v: K.rmv(g.grad(K.mv(v))), x)
    probes = jax.random.rademacher(key, (2,) + tuple(x.shape), dtype=real).astype(x.dtype)
    return jnp.mean(jax.vmap(lambda v: jnp.mean(jnp.real(jnp.conj(v) * hvp(v))))(probes)).astype(real)


def operator_norm2_bound(base: Base, real) -> jax.Array:
    """An upper bound of ``||K||^2`` for ``K = diag(w) B`` (``||B||^2 <= 4 d`` for differences)."""
    B = base.op
    nb = 1.0 if isinstance(B, Identity) else 4.0 * len(B.axes)
    if base.weight is None:
        return jnp.asarray(nb, real)
    return (nb * jnp.max(jnp.abs(base.weight)) ** 2).astype(real)


def segment_total(values, roots, n):
    return sum(jax.ops.segment_sum(v.ravel(), r.ravel(), num_segments=n) for v, r in zip(values, roots))


