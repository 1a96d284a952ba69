"""ADMM with over-relaxation, residual-balanced penalty and an FFT (or FFT-preconditioned) x-step."""

from __future__ import annotations

import dataclasses
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp

from ..functionals import SquaredL2
from ..operators import Composed, FiniteDifference, Identity, LinearOperator, Mask
from ..operators.base import ChannelScaled, Scaled
from . import linear
from ._common import ratio
from .adjoint import UnrollAdjoint
from .driver import IterativeSolver
from .implicit import Dual


class _State(eqx.Module):
    x: jax.Array
    z: tuple
    u: tuple
    rho: jax.Array
    k: jax.Array
    inner: jax.Array  # conjugate-gradient iterations of the x-steps so far
    consts: tuple  # loop invariants: (A^H y or None, |A^|² or None, sum |K^|² or None)


def _norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.abs(a) ** 2) for a in jax.tree_util.tree_leaves(tree)))


def circulant_approximation(K: LinearOperator):
    """A Fourier symbol (``(c, N, M // 2 + 1)``) close to ``K``'s, for preconditioning: the exact
    one for circulant operators, the periodic one for Neumann differences, a mask's root mean
    square for a weighting; ``None`` when there is none."""
    exact = K.fourier_symbol()
    if exact is not None:
        return exact
    if isinstance(K, FiniteDifference) and len(K.shape) == 2:
        return FiniteDifference(K.shape, "periodic", K.axes).fourier_symbol()
    if isinstance(K, Scaled):
        inner = circulant_approximation(K.op)
        return None if inner is None else inner * K.scale
    if isinstance(K, ChannelScaled):
        inner = circulant_approximation(K.op)
        return None if inner is None or inner.shape[0] != K.scale.shape[0] else inner * K.scale.reshape(-1, 1, 1)
    if isinstance(K, Composed) and isinstance(K.left, Mask):
        inner = circulant_approximation(K.right)
        return None if inner is None else inner * jnp.sqrt(jnp.mean(K.left.mask**2))
    if isinstance(K, Mask) and len(K.in_shape) == 2:
        n, m = K.in_shape
        return jnp.full((1, n, m // 2 + 1), jnp.sqrt(jnp.mean(K.mask**2)))
    if isinstance(K, Identity):
        return Identity(K.shape).fourier_symbol()
    return None


class ADMM(IterativeSolver):
    r"""Alternating direction method of multipliers (Gabay & Mercier 1976; Boyd et al. 2011).

    The problem ``½||A x - y||² + sum_i g_i(K_i x)`` (regulariser ``g(K x)``, constraint
    ``iota_C(x)``, and a non-quadratic fidelity ``F(A x)`` each become a term ``z_i = K_i x``)
    is solved with scaled duals ``u_i``, over-relaxation ``alpha``:

    .. math::
        x &= \arg\min_x \tfrac12\|A x - y\|^2 + \tfrac\rho2 \sum_i \|K_i x - z_i + u_i\|^2 \\
        v_i &= \alpha K_i x + (1 - \alpha) z_i, \quad
        z_i \leftarrow \operatorname{prox}_{g_i / \rho}(v_i + u_i), \quad
        u_i \leftarrow u_i + v_i - z_i .

    **The x-step** solves ``(A^H A + rho sum K_i^H K_i) x = A^H y + rho sum K_i^H (z_i - u_i)``:
    exactly by FFT when every operator is circulant (``Convolution``, periodic
    ``FiniteDifference``, ``Identity``, a TV weighted per direction); otherwise by conjugate
    gradients (:func:`invjax.solvers.linear.cg`) warm-started from the previous ``x``, until the
    residual has fallen by ``cg_tol`` (at most ``cg_iters`` iterations; with ``diff="unroll"``
    exactly ``cg_iters``, which stop moving once the residual is at rounding level), preconditioned by the
    FFT solve of the nearest circulant system (the periodic differences for a Neumann TV, a
    mask's mean for a weighting) where one exists. ``Stats.inner_iterations`` counts the CG
    iterations; a problem with no FFT preconditioner (a CT projector) warns once at trace time.

    The penalty adapts by residual balancing (He, Yang & Wang 2000; Wohlberg 2017, relative
    residuals) at each residual check (every ``check_every`` iterations) during the first
    ``adapt_iters`` iterations: ``rho`` is multiplied (divided) by ``adapt_factor`` when the
    relative primal residual exceeds (falls below) 10x the relative dual residual. Stops when
    both relative residuals ``||K x - z|| / max(||K x||, ||z||)`` and
    ``||z - z^-|| / ||u||`` are below ``tol``.

    Arguments:
        rho: initial penalty (``None``: ``10 weight / s``, ``s = max|A^H y| / ||A||²`` the image
            amplitude, so that the shrinkage threshold ``weight / rho`` is a tenth of it).
        relaxation: ``alpha`` in (0, 2) (default 1.7).
        adapt_iters: iterations during which ``rho`` adapts (``0`` keeps it fixed).
        adapt_factor: the factor of each adaptation, ``> 1`` (default 2).
        cg_iters: conjugate-gradient iterations per x-step at most (default 20).
        cg_tol: the factor by which an x-step reduces its warm-started residual (default 1e-2).

    Raises:
        ValueError: at construction, a ``relaxation`` outside (0, 2), a non-positive ``rho``,
            ``cg_iters < 1``, a ``cg_tol`` outside (0, 1), ``adapt_iters < 0`` or ``adapt_factor <= 1``.
        TypeError: at trace time, a problem with no term to split (use ``CG``).

    Example:
        >>> x = jnp.zeros((16, 16)).at[4:12, 4:12].set(1.0)
        >>> A = ij.operators.Convolution(jnp.ones((3, 3)) / 9, shape=(16, 16))
        >>> problem = ij.Problem(op=A, data=A(x), regularizer=ij.functionals.L1(), weight=1e-3)
        >>> sol = ij.solve(problem, ij.solvers.ADMM())
        >>> bool(sol.stats.converged), sol.x.shape
        (True, (16, 16))
    """

    rho: float | None = eqx.field(static=True, default=None)
    relaxation: float = eqx.field(static=True, default=1.7)
    adapt_iters: int = eqx.field(static=True, default=100)
    adapt_factor: float = eqx.field(static=True, default=2.0)
    cg_iters: int = eqx.field(static=True, default=20)
    cg_tol: float = eqx.field(static=True, default=1e-2)

    def __check_init__(self):
        if not 0 < self.relaxation < 2:
            raise ValueError(f"ADMM: `relaxation` must be in (0, 2), got {self.relaxation}")
        if self.rho is not None and not self.rho > 0:
            raise ValueError(f"ADMM: `rho` must be None or > 0, got {self.rho}")
        if not (isinstance(self.cg_iters, int) and self.cg_iters >= 1):
            raise ValueError(f"ADMM: `cg_iters` must be an int >= 1, got {self.cg_iters!r}")
        if not 0 < self.cg_tol < 1:
            raise ValueError(f"ADMM: `cg_tol` must be in (0, 1), got {self.cg_tol}")
        if not (isinstance(self.adapt_iters, int) and self.adapt_iters >= 0):
            raise ValueError(f"ADMM: `adapt_iters` must be an int >= 0, got {self.adapt_iters!r}")
        if not self.adapt_factor > 1:
            raise ValueError(f"ADMM: `adapt_factor` must be > 1, got {self.adapt_factor}")

    def validate(self, problem):
        quadratic, terms = self._split(problem)
        if not terms:
            raise TypeError("ADMM needs at least one term to split (a regulariser, constraint or non-quadratic fidelity); use CG")
        if self._symbols(problem) is None and self._preconditioner_symbols(problem) is None:
            warnings.warn(
                f"ADMM: the x-step of this problem ({type(problem.op).__name__} with "
                f"{', '.join(type(t.op).__name__ for _, t in terms)}) has neither an FFT solve nor an FFT "
                "preconditioner: each x-step runs up to cg_iters conjugate-gradient iterations "
                "(Stats.inner_iterations counts them); PDHG and FISTA need no inner solve",
                stacklevel=4,
            )

    def _split(self, problem):
        """``(quadratic, [(index, term), ...])``: whether the fidelity is a plain squared distance
        kept in the x-step, and the terms split off (indices into ``problem.terms()``)."""
        terms = problem.terms()
        fid = terms[0].func
        quadratic = isinstance(fid, SquaredL2) and fid.weights is None
        return quadratic, [(i, t) for i, t in enumerate(terms) if not (i == 0 and quadratic)]

    def _grid_ok(self, problem):
        return len(problem.op.in_shape) == 2 and not jnp.issubdtype(problem.op.dtype, jnp.complexfloating)

    def _symbols(self, problem):
        """``(|A^|², sum_i |K_i^|²)`` on the rfft2 grid, or ``None`` if not all circulant."""
        return self._sum_symbols(problem, lambda K: K.fourier_symbol())

    def _preconditioner_symbols(self, problem):
        return self._sum_symbols(problem, circulant_approximation)

    def _sum_symbols(self, problem, symbol_of):
        if not self._grid_ok(problem):
            return None
        quadratic, terms = self._split(problem)
        syms = [symbol_of(t.op) for _, t in terms]
        a_sym = symbol_of(problem.op) if quadratic else None
        if any(s is None for s in syms) or (quadratic and a_sym is None):
            return None
        kk = sum(jnp.sum(jnp.abs(s) ** 2, axis=0) for s in syms)
        aa = jnp.sum(jnp.abs(a_sym) ** 2, axis=0) if quadratic else jnp.zeros_like(kk)
        return aa, kk

    def _constants(self, problem):
        """Loop invariants of the x-step: ``A^H y`` on the rfft2 grid (exact FFT solves of a
        squared-distance fidelity; else ``None``) and the (exact or preconditioning) symbols.

        ``A^H y`` stays in the Fourier domain: formed in image space, its rounding (``eps
        ||A^H y||``, spread over every frequency) would be divided by the x-step's smallest
        eigenvalues ``rho |K^|²`` where the blur's ``|A^|²`` vanishes; measured on 256² natural
        images (float32, TV deblurring), that noise held both ADMM residuals near 1.5e-4: the
        default ``tol`` 1e-4 was never reached."""
        quadratic, _ = self._split(problem)
        symbols = self._symbols(problem)
        if symbols is not None:
            aty = None
            if quadratic:
                a_sym = problem.op.fourier_symbol()
                real = jnp.finfo(jnp.result_type(problem.data.dtype, a_sym.real.dtype)).dtype
                data = problem.data.reshape((a_sym.shape[0],) + tuple(problem.op.in_shape)).astype(real)
                aty = jnp.sum(jnp.conj(a_sym) * jnp.fft.rfft2(data), axis=0)
            return (aty,) + symbols
        symbols = self._preconditioner_symbols(problem)
        return (None,) + (symbols if symbols is not None else (None, None))

    def _x_step(self, problem, z, u, rho, x_warm, consts):
        """``(x, cg iterations)`` of the x-step (see the class docstring)."""
        quadratic, terms = self._split(problem)
        A = problem.op
        aty_hat, aa, kk = consts
        real = jnp.finfo(x_warm.dtype).dtype

        def fft_solve(v, extra=None):
            denom = (aa + rho * kk).astype(real)
            safe = jnp.where(denom > 0, denom, 1)
            vh = jnp.fft.rfft2(v.astype(real))
            if extra is not None:
                vh = vh + extra.astype(vh.dtype)
            return jnp.fft.irfft2(jnp.where(denom > 0, vh / safe, 0), s=A.in_shape).astype(real)

        if self._symbols(problem) is not None:
            rhs = sum(t.op.rmv(zi - ui) for (_, t), zi, ui in zip(terms, z, u)) * rho
            return fft_solve(rhs, aty_hat if quadratic else None), jnp.zeros((), jnp.int32)

        def matvec(v):
            out = rho * sum(t.op.gram(v) for _, t in terms)
            return out + A.gram(v) if quadratic else out

        precondition = fft_solve if kk is not None else None
        if precondition is None:
            diags = [t.op.gram_diagonal() for _, t in terms] + ([A.gram_diagonal()] if quadratic else [])
            if all(d is not None for d in diags):
                d = rho * sum(diags[: len(terms)]) + (diags[-1] if quadratic else 0)
                inv = jnp.where(d > 0, 1 / jnp.where(d > 0, d, 1), 0).astype(real)
                precondition = lambda r: r * inv  # noqa: E731
        # the correction from the previous x, for the residual of the warm start formed as
        # A^H (y - A x) + rho sum K^H (z - u - K x): A^H applied last to a small vector, so the
        # rounding of A x and y at frequencies the blur removes does not reach the solve (see
        # _constants; b - H x with b = A^H y + ... formed first stalled ADMM at ~1.5e-4 the same way)
        # each x-step reduces the warm-started residual by cg_tol (an inexact x-step must keep
        # improving as ADMM converges), down to rounding level; unrolled, exactly cg_iters guarded
        # steps from the warm start itself (they stop moving at rounding level, so their
        # derivative stays finite; a correction solve differentiated through a residual that
        # vanishes exactly would not be)
        floor = 10 * float(jnp.finfo(real).eps)
        unroll = isinstance(self.adjoint, UnrollAdjoint)
        if unroll:
            rhs = sum(t.op.rmv(zi - ui) for (_, t), zi, ui in zip(terms, z, u)) * rho
            if quadratic:
                rhs = rhs + A.rmv(problem.data)
            x, stats = linear.cg(matvec, rhs, tol=floor, max_iters=self.cg_iters, x0=x_warm, precondition=precondition,
                                 reduction=self.cg_tol, unroll=True, check=False)
            return x, stats.iterations
        res = sum(t.op.rmv(zi - ui - t.op.mv(x_warm)) for (_, t), zi, ui in zip(terms, z, u)) * rho
        if quadratic:
            res = res + A.rmv(problem.data - A.mv(x_warm))
        dx, stats = linear.cg(matvec, res, tol=floor, max_iters=self.cg_iters, precondition=precondition,
                              reduction=self.cg_tol, check=False)
        return x_warm + dx, stats.iterations

    def init(self, problem, x0):
        _, terms = self._split(problem)
        real = jnp.finfo(x0.dtype).dtype
        if self.rho is not None:
            rho = jnp.asarray(self.rho, real)
        else:
            rho = self._default_rho(problem).astype(real)
        z = tuple(t.op.mv(x0) for _, t in terms)
        u = tuple(jnp.zeros_like(zi) for zi in z)
        zero = jnp.zeros((), jnp.int32)
        return _State(x0, z, u, rho, zero, zero, self._constants(problem))

    def _default_rho(self, problem):
        """``10 * weight / s`` with ``s = max|A^H y| / ||A||²`` the image amplitude; ``||A||²``
        without a regulariser. Residual balancing then refines it.

        An array weight sits inside the split operator (``z = weight * K x``, ``g`` unweighted),
        which rescales ``z``: ADMM with ``z' = c z`` and penalty ``rho / c²`` takes the same steps,
        so a constant array ``c`` must get ``10 / (c s)`` to match the scalar weight ``c``; for a
        varying array ``c`` is its root mean square."""
        A = problem.op
        norm2 = A.norm() ** 2
        if problem.regularizer is None:
            return norm2
        amplitude = jnp.max(jnp.abs(A.rmv(problem.data))) / norm2
        amplitude = jnp.where(amplitude > 0, amplitude, 1.0)
        if problem.scalar_weight:
            weight = problem.weight
            return jnp.where(weight > 0, 10 * weight / amplitude, norm2)
        rms = jnp.sqrt(jnp.mean(problem.weight**2))
        return jnp.where(rms > 0, 10 / (jnp.where(rms > 0, rms, 1) * amplitude), norm2)

    def step(self, problem, state):
        _, terms = self._split(problem)
        a = self.relaxation
        rho = state.rho
        x, k = self._x_step(problem, state.z, state.u, rho, state.x, state.consts)
        kx = tuple(t.op.mv(x) for _, t in terms)
        v = tuple(a * kxi + (1 - a) * zi for kxi, zi in zip(kx, state.z))
        z = tuple(t.func.prox(vi + ui, 1 / rho) for (_, t), vi, ui in zip(terms, v, state.u))
        u = tuple(ui + vi - zi for ui, vi, zi in zip(state.u, v, z))
        return dataclasses.replace(state, x=x, z=z, u=u, k=state.k + 1, inner=state.inner + k)

    def checked_step(self, problem, state):
        _, terms = self._split(problem)
        new = self.step(problem, state)
        kx = tuple(t.op.mv(new.x) for _, t in terms)
        r = ratio(_norm(tuple(a - b for a, b in zip(kx, new.z))), jnp.maximum(_norm(kx), _norm(new.z)))
        # dual residual measured in the split variables: ||z - z^-|| / ||u|| (scaled duals), which
        # bounds rho ||K^H (z - z^-)|| / ||rho K^H u|| up to ||K|| without two more K^H products
        s = ratio(_norm(tuple(a - b for a, b in zip(new.z, state.z))), _norm(new.u))
        if self.adapt_iters > 0:
            adapt = new.k <= self.adapt_iters
            f = self.adapt_factor
            factor = jnp.where(adapt & (r > 10 * s), f, jnp.where(adapt & (s > 10 * r), 1 / f, 1.0)).astype(new.rho.dtype)
            new = dataclasses.replace(new, rho=new.rho * factor, u=tuple(ui / factor for ui in new.u))
        return new, jnp.maximum(r, s)

    def duals(self, problem, state):
        out = [None] * len(problem.terms())
        for (i, _), ui in zip(self._split(problem)[1], state.u):
            out[i] = Dual(state.rho * ui, 1 / state.rho)
        return tuple(out)

    def refresh(self, problem, state):
        # the loop constants hold A^H y and the Fourier symbols, which include a per-direction weight
        return dataclasses.replace(state, consts=self._constants(problem), k=jnp.zeros((), jnp.int32))

    def inner_iterations(self, state):
        return state.inner

    def get_x(self, problem, state):
        # the x-step iterate is feasible only in the limit: project it onto the constraint
        return state.x if problem.constraint is None else problem.constraint.prox(state.x, 1.0)
