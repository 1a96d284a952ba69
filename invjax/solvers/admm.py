"""ADMM with over-relaxation, residual-balanced penalty and an exact FFT x-step when possible."""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp

from ._common import cg_fixed, ratio, split_terms
from .driver import IterativeSolver


class _State(eqx.Module):
    x: jax.Array
    z: tuple
    u: tuple
    rho: jax.Array
    res: jax.Array
    k: jax.Array
    consts: tuple  # loop invariants: (A^H y or None, |A^|² or None, sum |K^|² or None)


def _norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.abs(a) ** 2) for a in jax.tree_util.tree_leaves(tree)))


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

    The x-step solves ``(A^H A + rho sum K_i^H K_i) x = A^H y + rho sum K_i^H (z_i - u_i)``
    exactly by FFT when every operator is circulant (``Convolution``, periodic
    ``FiniteDifference``, ``Identity``, and a TV weighted per direction, weight shape
    ``(2, 1, 1)``: ``op.fourier_symbol()``), and otherwise (e.g. a weight image) by ``cg_iters``
    warm-started CG steps.

    The penalty adapts by residual balancing (He, Yang & Wang 2000; Wohlberg 2017, relative
    residuals): every iteration for the first ``adapt_iters``, ``rho`` is multiplied (divided)
    by ``2`` when the relative primal residual exceeds (falls below) 10x the relative dual
    residual. Stops when both relative residuals
    ``||K x - z|| / max(||K x||, ||z||)`` and ``rho ||sum K_i^H (z_i - z_i^-)|| / ||rho sum K_i^H u_i||``
    are below ``tol``.

    Args:
        rho: initial penalty (``None``: ``10 weight / s``, ``s = max|A^H y| / ||A||²`` the image
            amplitude, so that the shrinkage threshold ``weight / rho`` is a tenth of it).
        relaxation: ``alpha`` in (0, 2) (default 1.7).
        adapt_iters: iterations during which ``rho`` adapts (``0`` keeps it fixed).
        cg_iters: CG steps per x-step when no FFT solve applies.
        adjoint_iters, adjoint_restart: as in the driver, with longer defaults (1000, 50).
    """

    # the ADMM map contracts slowly too (1600 iterations leave a 6e-5 residual on the 256² TV
    # deconvolution benchmark): there GMRES with the driver's 200 iterations, restart 20 stopped at
    # a relative residual of 3.7e-3, above the 10 sqrt(eps) float32 failure threshold (measured)
    adjoint_iters: int = eqx.field(static=True, default=1000, kw_only=True)
    adjoint_restart: int = eqx.field(static=True, default=50, kw_only=True)

    rho: float | None = eqx.field(static=True, default=None)
    relaxation: float = eqx.field(static=True, default=1.7)
    adapt_iters: int = eqx.field(static=True, default=100)
    cg_iters: int = eqx.field(static=True, default=20)

    def validate(self, problem):
        if not 0 < self.relaxation < 2:
            raise ValueError(f"ADMM: `relaxation` must be in (0, 2), got {self.relaxation}")
        if self.rho is not None and not self.rho > 0:
            raise ValueError(f"ADMM: `rho` must be > 0, got {self.rho}")
        if self.cg_iters < 1:
            raise ValueError(f"ADMM: `cg_iters` must be >= 1, got {self.cg_iters}")
        if not self._terms(problem)[1]:
            raise TypeError("ADMM needs at least one term to split (a regulariser, constraint or non-quadratic fidelity); use CG")

    def _terms(self, problem):
        return split_terms(problem, keep_quadratic_fidelity=True, constraint_as_term=True)

    def _symbols(self, problem):
        """``(|A^|², sum_i |K_i^|²)`` on the rfft2 grid, or ``None`` if not all circulant."""
        quadratic, terms = self._terms(problem)
        if len(problem.op.in_shape) != 2 or jnp.issubdtype(problem.op.dtype, jnp.complexfloating):
            return None
        syms = [K.fourier_symbol() for K, _ in terms]
        a_sym = problem.op.fourier_symbol() if quadratic else None
        if any(s is None for s in syms) or (quadratic and a_sym is None):
            return None
        kk = sum(jnp.sum(jnp.abs(s) ** 2, axis=0) for s in syms)
        aa = jnp.sum(jnp.abs(a_sym) ** 2, axis=0) if quadratic else jnp.zeros_like(kk)
        return aa, kk

    def _constants(self, problem):
        """Loop invariants of the x-step: ``A^H y`` and the FFT symbols (when circulant)."""
        quadratic, _ = self._terms(problem)
        aty = problem.op.rmv(problem.data) if quadratic else None
        symbols = self._symbols(problem)
        return (aty,) + (symbols if symbols is not None else (None, None))

    def _x_step(self, problem, z, u, rho, x_warm, consts, exact=False):
        """The x-step: by FFT when circulant; else ``cg_iters`` CG steps from ``x_warm``, or
        (``exact=True``, for implicit differentiation) a CG solve to ``sqrt(eps)`` whose derivative
        is that of the exact solution (``jax.scipy.sparse.linalg.cg``, a ``custom_linear_solve``)."""
        quadratic, terms = self._terms(problem)
        A = problem.op
        aty, aa, kk = consts
        rhs = sum(K.rmv(zi - ui) for (K, _), zi, ui in zip(terms, z, u)) * rho
        if quadratic:
            rhs = rhs + aty
        if kk is not None:
            real = x_warm.dtype
            denom = (aa + rho * kk).astype(real)
            safe = jnp.where(denom > 0, denom, 1)
            xh = jnp.fft.rfft2(rhs.astype(real)) / safe
            return jnp.fft.irfft2(jnp.where(denom > 0, xh, 0), s=A.in_shape).astype(real)

        def matvec(v):
            out = rho * sum(K.rmv(K.mv(v)) for K, _ in terms)
            return out + A.rmv(A.mv(v)) if quadratic else out

        if exact:
            rtol = math.sqrt(float(jnp.finfo(x_warm.dtype).eps))
            return jax.scipy.sparse.linalg.cg(matvec, rhs, x0=x_warm, tol=rtol, maxiter=max(50, 20 * self.cg_iters))[0]
        return cg_fixed(matvec, rhs, x_warm, self.cg_iters)

    def init(self, problem, x0):
        quadratic, terms = self._terms(problem)
        real = jnp.finfo(x0.dtype).dtype
        if self.rho is not None:
            rho = jnp.asarray(self.rho, real)
        else:
            rho = self._default_rho(problem).astype(real)
        z = tuple(K.mv(x0) for K, _ in terms)
        u = tuple(jnp.zeros_like(zi) for zi in z)
        return _State(x0, z, u, rho, jnp.asarray(jnp.inf, real), jnp.zeros((), jnp.int32), self._constants(problem))

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

    def _iterate(self, problem, x_warm, z, u, rho, consts, exact=False):
        _, terms = self._terms(problem)
        a = self.relaxation
        x = self._x_step(problem, z, u, rho, x_warm, consts, exact)
        kx = tuple(K.mv(x) for K, _ in terms)
        v = tuple(a * kxi + (1 - a) * zi for kxi, zi in zip(kx, z))
        z_new = tuple(g.prox(vi + ui, 1 / rho) for (_, g), vi, ui in zip(terms, v, u))
        u_new = tuple(ui + vi - zi for ui, vi, zi in zip(u, v, z_new))
        return x, kx, z_new, u_new

    def step(self, problem, state):
        _, terms = self._terms(problem)
        rho = state.rho
        x, kx, z, u = self._iterate(problem, state.x, state.z, state.u, rho, state.consts)
        r = ratio(_norm(tuple(a - b for a, b in zip(kx, z))), jnp.maximum(_norm(kx), _norm(z)))
        # dual residual measured in the split variables: ||z - z^-|| / ||u|| (scaled duals), which
        # bounds rho ||K^H (z - z^-)|| / ||rho K^H u|| up to ||K|| without two more K^H products
        s = ratio(_norm(tuple(a - b for a, b in zip(z, state.z))), _norm(u))
        res = jnp.maximum(r, s)
        if self.adapt_iters > 0:
            adapt = state.k < self.adapt_iters
            factor = jnp.where(adapt & (r > 10 * s), 2.0, jnp.where(adapt & (s > 10 * r), 0.5, 1.0)).astype(rho.dtype)
            rho = rho * factor
            u = tuple(ui / factor for ui in u)
        return _State(x, z, u, rho, res.astype(rho.dtype), state.k + 1, state.consts)

    def refresh(self, problem, state):
        # the loop constants hold A^H y and the Fourier symbols, which include a per-direction weight
        return dataclasses.replace(state, consts=self._constants(problem))

    def get_x(self, problem, state):
        # the x-step iterate is feasible only in the limit: project it onto the constraint
        return state.x if problem.constraint is None else problem.constraint.prox(state.x, 1.0)

    def residual(self, problem, old, new):
        return new.res

    # Implicit differentiation in (z, u). With the inexact CG x-step (cg_iters steps warm-started
    # from the previous x) the map restarted from the old x for a perturbed problem has fixed
    # points that are not ADMM solutions, and differentiating CG's own iterations near its
    # solution divides rounding by rounding (r^T r / p^T H p with both ~0). So the map used for
    # derivatives takes the exact x-step (measured: through the inexact one, a per-direction TV
    # weight was fitted to a value 3 dB worse than the best scalar weight).
    def fixed_point_vars(self, state):
        return (state.z, state.u)

    def fixed_point(self, problem, zu, state):
        z, u = zu
        # constants recomputed from the problem, so derivatives reach the data and operator
        x_warm = jax.lax.stop_gradient(state.x)
        _, _, z_new, u_new = self._iterate(problem, x_warm, z, u, state.rho, self._constants(problem), exact=True)
        return (z_new, u_new)

    def x_from_fixed_point(self, problem, zu, state):
        z, u = zu
        x = self._x_step(problem, z, u, state.rho, jax.lax.stop_gradient(state.x), self._constants(problem), exact=True)
        return x if problem.constraint is None else problem.constraint.prox(x, 1.0)
