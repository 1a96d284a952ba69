r"""Implicit derivatives of a solution from the problem's optimality conditions.

One layer for every solver: the derivative of ``x*(theta)`` is that of the problem, not of the
algorithm that found it (as optimistix's ``ImplicitAdjoint`` and jaxopt's
``custom_root(optimality_fun)``; Blondel, Berthet, Cuturi, Frostig, Hoyer, Llinares-López,
Pedregosa & Vert, "Efficient and modular implicit differentiation", NeurIPS 2022).

**The system.** Write the problem as ``sum_i g_i(K_i x)`` (:meth:`Problem.terms`). Smooth terms
(squared distances, Huber, the Poisson likelihood) contribute their gradient. A non-smooth
``g_i`` (``L1``, ``L21`` and with it TV, boxes) is smooth on its *active manifold* near the
solution (Vaiter, Deledalle, Peyré, Dossal & Fadili, "Local behavior of sparse analysis
regularization", ACHA 2013): the coordinates of ``K_i x`` that are zero (clipped) stay zero
(clipped) under small perturbations, and on the remaining ones ``g_i`` is differentiable.
Which coordinates are pinned is read from the solver's dual ``p_i`` of the term through the
prox: with ``w_i = K_i x* + gamma_i p_i``, ``z_i = prox_{gamma_i g_i}(w_i)`` equals ``K_i x*`` at
a solution and its zero (clipped) pattern is the manifold's
(:meth:`~invjax.functionals.Functional.manifold`). With ``P`` the orthogonal projection onto the
tangent space ``S`` of the manifold (pixels fixed, or tied into flat regions: see
:mod:`invjax.solvers._manifold`) and

.. math:: G(x, \theta) = \sum_{i\ \text{smooth}} K_i^H \nabla g_i(K_i x)
          + \sum_{i\ \text{non-smooth}} K_i^H \nabla_{\mathcal M} g_i(K_i x),

the solution satisfies ``P G(x*, theta) = 0`` with ``x*`` on the manifold, so

.. math:: \dot x = -(P\, \partial_x G\, P)^{+}\, P\, \partial_\theta G\, [\dot\theta],

a symmetric positive semi-definite system on ``S``, solved by conjugate gradients with a
diagonal (Jacobi) preconditioner in the basis of the flat regions (:mod:`invjax.solvers.linear`). Hessian-vector products are
JVPs of the gradients; the right-hand side is a JVP in the problem (data, weight, operator
parameters), so derivatives reach everything the problem holds. Where the TV dual is not
unique (flat regions) the dual never enters the system: only ``x`` does, whose derivative is
unique. Forward mode (``jax.jvp``: one solve per tangent) and reverse mode (the transposed
solve, the same symmetric system) both work, and memory does not grow with the iterations.

**Near-flat coordinates.** At the accuracy of an iterative solve, a group norm whose point
``z_j`` is tiny cannot be told from an exact zero, and its curvature ``1 / |z_j|`` would make
the system needlessly stiff. Entries below ``ImplicitAdjoint.flat`` times the solve's final (relative)
stopping residual (at least ``eps^(3/4)``) times the term's largest ``|K x|`` are pinned as well, and the curvature of
the free ones is capped at ``ImplicitAdjoint.curvature_cap`` times the smooth part's mean curvature
(their point is moved away from 0 along its own direction, which leaves the gradient as it is).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..functionals import Functional, Scaled, SquaredL2
from ..operators import Identity
from . import _manifold as mf
from . import linear
from .problem import Problem


class Dual(NamedTuple):
    """A solver's dual for one non-smooth term ``g(K x)`` of :meth:`Problem.terms`, as its
    ``duals(problem, state)`` returns it (one ``Dual`` or ``None`` per term) for implicit
    derivatives.

    Arguments:
        p: the dual variable, shape ``K.out_shape``: at a solution ``sum_i K_i^H p_i`` plus the
            smooth gradients is 0 and ``p`` is a subgradient of ``g`` at ``K x``.
        scale: ``gamma > 0`` with ``K x = prox_{gamma g}(K x + gamma p)`` at a solution; the
            solver's own step where it has one (ADMM: ``1 / rho``; PDHG: ``1 / sigma_i``), or
            ``None`` for a default.

    Example:
        For ``||x - y||^2 / 2 + w ||x||_1`` the optimality condition is ``x - y + p = 0`` with
        ``p`` a subgradient of ``w ||.||_1`` at ``x`` (``|p| <= w``, ``w sign(x)`` where
        ``x != 0``):

        >>> y = jnp.array([[2.0, -0.05], [0.5, -3.0]])
        >>> problem = ij.Problem(ij.operators.Identity((2, 2)), y, ij.functionals.L1(), weight=0.1)
        >>> solver = ij.solvers.ADMM(rho=1.0, tol=1e-6)
        >>> sol = ij.solve(problem, solver)
        >>> duals = solver.duals(problem, sol.state)
        >>> [t.role for t in problem.terms()], [type(d).__name__ for d in duals]
        (['fidelity', 'regularizer'], ['NoneType', 'Dual'])
        >>> p = duals[1].p
        >>> bool(jnp.allclose(sol.x - y + p, 0, atol=1e-4)), bool(jnp.all(jnp.abs(p) <= 0.1 + 1e-4))
        (True, True)
    """

    p: jax.Array
    scale: jax.Array | float | None = None


class Settings(NamedTuple):
    """The settings of the derivative solve (from the solver's :class:`~invjax.solvers.ImplicitAdjoint`)."""

    tol: float
    max_iters: int
    failure: str
    flat: float
    curvature_cap: float
    who: str


def _unscaled(g: Functional):
    scale = 1.0
    while isinstance(g, Scaled):
        scale = scale * g.scale
        g = g.functional
    return scale, g


class _Piece(eqx.Module):
    index: int = eqx.field(static=True)
    base: mf.Base
    pinned: jax.Array
    z: jax.Array
    shift: jax.Array


class Structure(eqx.Module):
    """Everything the derivative needs about the manifold at ``x*`` (no derivatives through it)."""

    pieces: tuple
    project: mf.Projector
    inverse_diagonal: jax.Array


def structure(problem: Problem, x, duals, settings: Settings, accuracy=0.0) -> Structure:
    """The active manifold at ``x`` from the solver's ``duals`` (one entry per term of
    ``problem.terms()``: a :class:`Dual` or ``None``); ``accuracy`` is the relative accuracy of
    the solve (its final stopping residual): entries below ``settings.flat * accuracy`` times a
    term's largest count as zeros."""
    problem = jax.lax.stop_gradient(problem)
    x = jax.lax.stop_gradient(x)
    duals = jax.lax.stop_gradient(duals)
    terms = problem.terms()
    real = jnp.finfo(x.dtype).dtype
    if len(duals) != len(terms):
        raise ValueError(f"{settings.who}: `duals` must have one entry per problem term ({len(terms)}), got {len(duals)}")
    key = jax.random.PRNGKey(0)
    smooth = [i for i, t in enumerate(terms) if t.func.differentiable]
    nonsmooth = [i for i, t in enumerate(terms) if not t.func.differentiable]
    diag = jnp.zeros(x.shape, real)
    for i in smooth:
        diag = diag + mf.smooth_diagonal(terms[i], x, jax.random.fold_in(key, i))
    hbar = jnp.mean(diag)
    hbar = jnp.where(hbar > 0, hbar, 1)
    duals = list(duals)
    missing = [i for i in nonsmooth if duals[i] is None]
    if len(missing) > 1 or (missing and not isinstance(terms[missing[0]].op, Identity)):
        names = ", ".join(f"{terms[i].role} {type(_unscaled(terms[i].func)[1]).__name__}" for i in missing)
        raise TypeError(
            f"{settings.who}: implicit derivatives need the dual of every non-smooth term but one on the image; "
            f"the solver gives none for: {names} (use diff='unroll')"
        )
    if missing:
        # the one missing dual follows from stationarity: sum of the others plus its own is 0
        i = missing[0]
        rest = sum((terms[j].op.rmv(terms[j].func.grad(terms[j].op.mv(x))) for j in smooth), jnp.zeros_like(x))
        rest = rest + sum((terms[j].op.rmv(duals[j].p) for j in nonsmooth if j != i), jnp.zeros_like(x))
        duals[i] = Dual(-rest, 1 / hbar)
    pieces, fixed, ties = [], None, []
    for i in nonsmooth:
        K, g = terms[i].op, terms[i].func
        base = mf.decompose(K)
        if base is None:
            raise TypeError(
                f"{settings.who}: implicit derivatives through the non-smooth {terms[i].role} "
                f"{type(_unscaled(g)[1]).__name__}(K x) need K to be the identity, a mask or finite differences "
                f"(optionally weighted), got {type(K).__name__} (use diff='unroll')"
            )
        p, gamma = duals[i]
        gamma = jnp.asarray(1 / hbar if gamma is None else gamma, real)
        u = K.mv(x)
        # an iterate is accurate to its stopping residual at best, and never below rounding of a
        # moderately conditioned solve (eps^(3/4): 1.8e-12 in double, 6.4e-6 in single precision)
        rel = settings.flat * jnp.maximum(jnp.asarray(accuracy, real), float(jnp.finfo(real).eps) ** 0.75)
        floor = rel * jnp.max(jnp.abs(u))
        cap = settings.curvature_cap * hbar / mf.operator_norm2_bound(base, real)
        try:
            z, pinned = g.manifold(u + gamma * p.astype(u.dtype), gamma, floor, cap)
        except NotImplementedError as err:
            raise TypeError(f"{settings.who}: {err}") from None
        f, t = mf.tie_masks(base, pinned, tuple(K.out_shape))
        fixed = f if fixed is None else (fixed if f is None else fixed | f)
        ties.extend(t)
        pieces.append(_Piece(i, base, pinned, z, z - u))
    project, lab = mf.projector(tuple(x.shape), fixed, ties, real)

    # Jacobi preconditioner in the basis of the flat regions: 1_C^T H 1_C / |C| per component
    n = x.size
    if lab is None:
        d = diag
        for piece in pieces:
            dm = _manifold_hessian(terms[piece.index].func, piece)
            gaxis = getattr(_unscaled(terms[piece.index].func)[1], "axis", None)
            d = d + mf.curvature_diagonal_identity(piece.base, dm, gaxis, tuple(piece.z.shape), x.dtype)
        inverse = jnp.where(d > 0, 1 / jnp.where(d > 0, d, 1), 0)
        if project.free is not None:
            inverse = jnp.where(project.free, inverse, 0)
    else:
        flat = project.flat_labels
        total = jax.ops.segment_sum(diag.ravel(), flat, num_segments=n)
        for piece in pieces:
            dm = _manifold_hessian(terms[piece.index].func, piece)
            if isinstance(piece.base.op, Identity):
                gaxis = getattr(_unscaled(terms[piece.index].func)[1], "axis", None)
                c = mf.curvature_diagonal_identity(piece.base, dm, gaxis, tuple(piece.z.shape), x.dtype)
                total = total + jax.ops.segment_sum(c.ravel(), flat, num_segments=n)
            else:
                values, roots = mf.curvature_diagonal_fd(piece.base, dm, lab, x.dtype)
                total = total + mf.segment_total(values, roots, n)
        d = total * project.inv_counts
        inverse_c = jnp.where(d > 0, 1 / jnp.where(d > 0, d, 1), 0)
        inverse = inverse_c[flat].reshape(x.shape)
    return Structure(tuple(pieces), project, inverse.astype(real))


def _manifold_hessian(g, piece):
    _, dm = jax.linearize(lambda u: g.manifold_grad(u, piece.pinned), piece.z)
    return dm


def reduced_gradient(problem: Problem, x, st: Structure):
    """``G(x, theta)``: the smooth gradients plus each non-smooth term's gradient on its
    manifold, evaluated at the prox point (``K x + shift``, ``shift`` fixed)."""
    terms = problem.terms()
    by_index = {piece.index: piece for piece in st.pieces}
    out = jnp.zeros_like(x)
    for i, t in enumerate(terms):
        u = t.op.mv(x)
        if i in by_index:
            piece = by_index[i]
            out = out + t.op.rmv(t.func.manifold_grad(u + piece.shift, piece.pinned))
        else:
            out = out + t.op.rmv(t.func.grad(u))
    return out


def hessian(problem: Problem, x, st: Structure):
    """``v -> P (d G / d x) P v`` at ``x`` (for ``v`` in the tangent space), as a linear function."""
    terms = problem.terms()
    by_index = {piece.index: piece for piece in st.pieces}
    parts = []
    for i, t in enumerate(terms):
        K = t.op
        if i in by_index:
            dm = _manifold_hessian(t.func, by_index[i])
            parts.append(lambda v, K=K, dm=dm: K.rmv(dm(K.mv(v))))
            continue
        scale, g = _unscaled(t.func)
        if isinstance(g, SquaredL2) and g.weights is None:
            parts.append(lambda v, K=K, c=scale: _scale(K.gram(v), c))
        elif isinstance(g, SquaredL2):
            parts.append(lambda v, K=K, c=scale, w=g.weights: _scale(K.rmv(w.astype(jnp.finfo(v.dtype).dtype) * K.mv(v)), c))
        else:
            _, lin = jax.linearize(lambda v, K=K, f=t.func: K.rmv(f.grad(K.mv(v))), x)
            parts.append(lin)

    def matvec(v):
        return st.project(sum(part(v) for part in parts))

    return matvec


def _scale(v, c):
    if isinstance(c, float) and c == 1.0:
        return v
    return v * jnp.asarray(c).astype(jnp.finfo(v.dtype).dtype)


def _message(settings: Settings, k: int) -> str:
    return (
        f"{settings.who}, diff='implicit': the conjugate-gradient solve of the implicit derivative stopped at a "
        f"relative residual of about 1e{k} (at least 1e{k}, below 1e{k + 1}; NaN: 1e2), above 10 * adjoint_tol = "
        f"{10 * settings.tol:.2g}, after at most adjoint_iters={settings.max_iters} iterations: raise "
        "ImplicitAdjoint(max_iters=...), loosen ImplicitAdjoint(tol=...) or solve the problem to a tighter tol "
        "(or use diff='unroll')"
    )


def tangent(problem: Problem, problem_dot, x, duals, settings: Settings, accuracy=0.0):
    """``dx`` for the tangent ``problem_dot`` of the problem at the solution ``x``."""
    st = structure(problem, x, duals, settings, accuracy)
    _, rhs = jax.jvp(lambda p: reduced_gradient(p, x, st), (problem,), (problem_dot,))
    # the linear solve's derivative rules transpose the right-hand side as a linear function of
    # the input tangents: tie parts that do not depend on them (zeros) to them by 0 * t
    rhs = rhs + _anchor(problem_dot).astype(rhs.dtype)
    # (P H P)^+ P b, by the one linear-solve layer: self-adjoint, and each solve (the tangent's
    # and, in reverse mode, the cotangent's, which is not in the tangent space) projects its
    # right-hand side; a solve above 10 * tol follows the adjoint's failure policy
    prec = st.inverse_diagonal.astype(jnp.finfo(rhs.dtype).dtype)
    dx, _ = linear.cg(
        hessian(problem, x, st), -rhs, tol=settings.tol, max_iters=settings.max_iters,
        precondition=lambda r: r * prec, project=st.project, check=False,
        failure=settings.failure, messages=partial(_message, settings),
    )
    return dx


def _anchor(tree):
    return sum(
        (0 * jnp.sum(jnp.real(t)) for t in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(jnp.asarray(t).dtype, jnp.inexact)),
        jnp.zeros(()),
    )


def nan_tangent(tree, anchor):
    """Tangents that are NaN wherever they are used (linear in the input tangents through
    ``anchor = 0 * t``): what ``Solution.state`` carries in implicit mode, which has no derivative."""

    def leaf(a):
        a = jnp.asarray(a)
        if jnp.issubdtype(a.dtype, jnp.inexact):
            return (jnp.full(a.shape, jnp.nan, a.dtype) * anchor.astype(a.dtype)).astype(a.dtype)
        return np.zeros(a.shape, dtype=jax.dtypes.float0)

    return jax.tree_util.tree_map(leaf, tree)


def zero_tangent(tree):
    def leaf(a):
        a = jnp.asarray(a)
        if jnp.issubdtype(a.dtype, jnp.inexact):
            return jnp.zeros_like(a)
        return np.zeros(a.shape, dtype=jax.dtypes.float0)

    return jax.tree_util.tree_map(leaf, tree)
