"""The shared iteration driver: loop, stopping, statistics and differentiation modes.

Every solver is a small frozen equinox module that supplies

* ``init(problem, x0) -> state``: the starting state (a pytree);
* ``step(problem, state) -> state``: one iteration;
* ``get_x(problem, state) -> x``: the current image;
* ``residual(problem, old, new) -> scalar``: the stopping quantity (default: relative change of
  ``x``), compared against ``tol``;
* for ``diff="implicit"``: ``fixed_point_vars(state) -> z`` and
  ``fixed_point(problem, z, state) -> z`` (a map whose fixed point is the solution; by default
  ``z`` is the whole state and the map is ``step``), and ``x_from_fixed_point(problem, z,
  state) -> x``.

The driver (this file) owns everything else. It knows no concrete solver.

Differentiation modes:

* ``diff="implicit"`` (default): the forward solve is a ``lax.while_loop`` that stops at
  ``tol``; derivatives come from the implicit function theorem at the fixed point
  ``z* = T(z*, theta)``: a ``jax.custom_jvp`` whose tangent solves
  ``(I - dT/dz) dz = dT/dtheta [dtheta]`` by GMRES (our own restarted GMRES, which stays finite
  on singular systems, where ``jax.scipy.sparse.linalg.gmres`` returns NaN) inside ``lax.custom_linear_solve``
  (``adjoint_tol``, ``adjoint_iters``), so that reverse mode transposes it into the adjoint
  system ``(I - dT/dz)^T v = g``. Memory is
  constant in the number of iterations; forward mode (``jax.jvp``) and reverse mode work.
* ``diff="unroll"``: a ``lax.scan`` over ``max_iters`` iterations (iterations after
  convergence leave the state unchanged), differentiated by backpropagation through the
  iterations. ``checkpoint`` segments of that many iterations are rematerialised in the
  backward pass (memory ~ ``max_iters / checkpoint + checkpoint`` states); compile time does
  not grow with ``max_iters`` in either mode.
"""

import math
from functools import partial
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._gmres import gmres
from .problem import Problem

# status codes reported in Stats.status
CONVERGED, MAX_ITERS, NONFINITE = 0, 1, 2
_MESSAGES = {
    CONVERGED: "converged: residual below tol",
    MAX_ITERS: "not converged: max_iters reached before the residual fell below tol",
    NONFINITE: "failed: the iterates became NaN or inf (check step sizes and data)",
}


class Stats(eqx.Module):
    """Per-solve statistics (arrays: one entry per problem under ``vmap``).

    Attributes:
        iterations: number of iterations run (int32).
        converged: whether the residual fell below ``tol`` (bool).
        residual: the last value of the solver's stopping residual.
        objective: the objective ``F(A x; y) + weight R(x)`` at the returned ``x``.
        status: 0 converged, 1 ``max_iters`` reached, 2 non-finite iterates.
    """

    iterations: jax.Array
    converged: jax.Array
    residual: jax.Array
    objective: jax.Array
    status: jax.Array

    @property
    def message(self) -> str | list[str]:
        """Human-readable status (call outside ``jit``)."""
        codes = jax.device_get(self.status)
        if getattr(codes, "ndim", 0) == 0:
            return _MESSAGES[int(codes)]
        return [_MESSAGES[int(c)] for c in codes.ravel()]


class Solution(eqx.Module):
    """Result of :func:`solve`: the image ``x``, its :class:`Stats` and the final solver state
    (pass ``state`` back as ``warm_start`` to continue from it)."""

    x: jax.Array
    stats: Stats
    state: Any


def _tree_norm(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in leaves))


def relative_change(new, old):
    """``||new - old|| / max(||new||, tiny)`` for arrays or pytrees of arrays."""
    diff = _tree_norm(jax.tree_util.tree_map(lambda a, b: a - b, new, old))
    scale = _tree_norm(new)
    tiny = jnp.finfo(diff.dtype).tiny
    return diff / jnp.maximum(scale, tiny)


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]))


_DIFF_MODES = ("implicit", "unroll")


class IterativeSolver(eqx.Module):
    """Base of all solvers; see the module docstring for what a subclass supplies.

    Args (common to every solver):
        max_iters: iteration limit (static int ``>= 1``).
        tol: stop when the residual falls below ``tol`` (``0`` runs all ``max_iters``).
        diff: ``"implicit"`` or ``"unroll"`` (see the module docstring).
        checkpoint: for ``diff="unroll"``, iterations per rematerialised segment
            (``None``: ~``sqrt(max_iters)``; ``0``: no checkpointing).
        adjoint_tol, adjoint_iters: relative GMRES tolerance (default ``sqrt(eps)`` of the dtype:
            ~3e-4 in float32, where GMRES stagnates on rounding below that, ~1.5e-8 in float64) and iteration limit of the implicit
            tangent/adjoint solve; ``adjoint_restart`` is the GMRES restart length (memory:
            that many copies of the fixed-point variables). A solve whose relative residual ends
            above ``10 * adjoint_tol`` raises at run time (``equinox.EquinoxRuntimeError``) rather
            than return a wrong derivative (``adjoint_failure="raise"``, default), or gives NaN
            derivatives (``"nan"``: for callers that treat them as a failed evaluation, as the
            tuning rules do), or returns GMRES's best iterate (``"ignore"``: where the linear
            system is singular, e.g. ADMM/PDHG on piecewise-constant images, whose TV dual is not
            unique: the residual then stalls at the part of the right-hand side outside the
            range of ``I - dT/dz``, which moves the dual along its set of solutions but not
            ``x``; on a 16² image of bars, 62 % flat, GMRES stalled at 1.7e-6 in float64 and the
            gradient matched central differences to 7 digits). GMRES stays finite on singular
            systems (:mod:`invjax.solvers._gmres`).
    """

    max_iters: int = eqx.field(static=True, default=500, kw_only=True)
    tol: float = eqx.field(static=True, default=1e-5, kw_only=True)
    diff: str = eqx.field(static=True, default="implicit", kw_only=True)
    checkpoint: int | None = eqx.field(static=True, default=None, kw_only=True)
    adjoint_tol: float | None = eqx.field(static=True, default=None, kw_only=True)
    adjoint_iters: int = eqx.field(static=True, default=200, kw_only=True)
    adjoint_restart: int = eqx.field(static=True, default=20, kw_only=True)
    adjoint_failure: str = eqx.field(static=True, default="raise", kw_only=True)

    def __check_init__(self):
        who = type(self).__name__
        if not isinstance(self.max_iters, int) or isinstance(self.max_iters, bool) or self.max_iters < 1:
            raise ValueError(f"{who}: `max_iters` must be an int >= 1, got {self.max_iters!r}")
        if not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol >= 0):
            raise ValueError(f"{who}: `tol` must be a finite number >= 0, got {self.tol!r}")
        if self.diff not in _DIFF_MODES:
            raise ValueError(f"{who}: `diff` must be one of {_DIFF_MODES}, got {self.diff!r}")
        if self.adjoint_failure not in ("raise", "nan", "ignore"):
            raise ValueError(f"{who}: `adjoint_failure` must be 'raise', 'nan' or 'ignore', got {self.adjoint_failure!r}")
        if self.checkpoint is not None and (not isinstance(self.checkpoint, int) or self.checkpoint < 0):
            raise ValueError(f"{who}: `checkpoint` must be None or an int >= 0, got {self.checkpoint!r}")

    # ---- the algorithm interface --------------------------------------------------------------
    def validate(self, problem: Problem) -> None:
        """Raise ``TypeError`` if the solver cannot handle this problem (trace time)."""

    def init(self, problem: Problem, x0: jax.Array):
        raise NotImplementedError

    def step(self, problem: Problem, state):
        raise NotImplementedError

    def get_x(self, problem: Problem, state) -> jax.Array:
        return state.x

    def residual(self, problem: Problem, old, new) -> jax.Array:
        return relative_change(self.get_x(problem, new), self.get_x(problem, old))

    def fixed_point_vars(self, state):
        return state

    def fixed_point(self, problem: Problem, z, state):
        return self.step(problem, z)

    def x_from_fixed_point(self, problem: Problem, z, state):
        return self.get_x(problem, z)

    def refresh(self, problem: Problem, state):
        """The state of an earlier solve, as a start for ``problem`` (a new weight or data):
        recomputes whatever the state caches from the problem (default: nothing)."""
        return state

    # ---- the driver ---------------------------------------------------------------------------
    def __call__(self, problem: Problem, x0=None, warm_start=None) -> Solution:
        """Solve ``problem`` from ``x0`` (default ``A^H y`` rescaled, or zeros) or from the
        ``state`` of an earlier :class:`Solution` (``warm_start``)."""
        if not isinstance(problem, Problem):
            raise TypeError(f"{type(self).__name__}: `problem` must be an invjax Problem, got {type(problem).__name__}")
        self.validate(problem)
        problem = problem.checked()
        if x0 is None:
            x0 = jnp.zeros(problem.op.in_shape, problem.op.dtype)
        else:
            x0 = jnp.asarray(x0)
            if tuple(x0.shape) != tuple(problem.op.in_shape):
                raise ValueError(
                    f"{type(self).__name__}: `x0` must have shape {tuple(problem.op.in_shape)}, got {tuple(x0.shape)}"
                )
            x0 = x0.astype(jnp.result_type(x0.dtype, problem.op.dtype))
        state0 = self.init(problem, x0) if warm_start is None else self.refresh(problem, warm_start)
        if self.diff == "unroll":
            state, k, res, status = self._scan(problem, state0)
            x = self.get_x(problem, state)
        else:
            x, state, k, res, status = self._implicit(problem, state0)
        stats = Stats(
            iterations=k,
            converged=status == CONVERGED,
            residual=res,
            objective=problem.objective(x),
            status=status,
        )
        return Solution(x=x, stats=stats, state=state)

    def _advance(self, problem, carry):
        k, state, res, status = carry
        new = self.step(problem, state)
        res = self.residual(problem, state, new).astype(res.dtype)
        finite = _all_finite(new) & jnp.isfinite(res)
        status = jnp.where(~finite, NONFINITE, jnp.where(res <= self.tol, CONVERGED, MAX_ITERS))
        return k + 1, new, res, status.astype(jnp.int32)

    def _carry0(self, problem, state0):
        real = jnp.finfo(self.get_x(problem, state0).dtype).dtype
        return (jnp.zeros((), jnp.int32), state0, jnp.asarray(jnp.inf, real), jnp.asarray(MAX_ITERS, jnp.int32))

    def _loop(self, problem, state0):
        def cond(carry):
            k, _, _, status = carry
            return (k < self.max_iters) & (status == MAX_ITERS)

        return jax.lax.while_loop(cond, lambda c: self._advance(problem, c), self._carry0(problem, state0))

    def _scan(self, problem, state0):
        def body(carry, _):
            _, _, _, status = carry
            active = status == MAX_ITERS
            new = self._advance(problem, carry)
            # after convergence (or failure) the state is frozen, so the map stays a function of
            # the iterate actually returned
            return jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, carry), None

        n = self.max_iters
        seg = self.checkpoint if self.checkpoint is not None else max(1, int(math.isqrt(n)))
        carry = self._carry0(problem, state0)
        if seg == 0 or seg >= n:
            carry, _ = jax.lax.scan(body, carry, None, length=n)
        else:
            outer, rest = divmod(n, seg)

            @jax.checkpoint
            def segment(c, _):
                c, _ = jax.lax.scan(body, c, None, length=seg)
                return c, None

            carry, _ = jax.lax.scan(segment, carry, None, length=outer)
            if rest:
                carry, _ = jax.lax.scan(body, carry, None, length=rest)
        k, state, res, status = carry
        return state, k, res, status

    def _implicit(self, problem, state0):
        state0 = jax.lax.stop_gradient(state0)
        z, (state, k, res, status) = _implicit_solve(self, problem, state0)
        return self.x_from_fixed_point(problem, z, state), state, k, res, status

    def _adjoint_solve(self, matvec, b):
        leaf = jax.tree_util.tree_leaves(b)[0]
        rtol = self._adjoint_rtol(leaf.dtype)
        restart = min(self.adjoint_restart, self.adjoint_iters)
        sol, rel = gmres(matvec, b, rtol=rtol, restart=restart, max_iters=self.adjoint_iters)
        if self.adjoint_failure == "ignore":
            return sol
        # a tangent or adjoint solve that stopped far from its tolerance fails loudly instead of
        # returning a wrong derivative
        failed = ~(rel <= 10 * rtol)
        if self.adjoint_failure == "nan":
            return jax.tree_util.tree_map(lambda a: jnp.where(failed, jnp.nan, a).astype(a.dtype), sol)
        return eqx.error_if(
            sol,
            failed,
            f"{type(self).__name__}, diff='implicit': the GMRES solve of the implicit derivative stopped with a "
            f"relative residual above 10 * adjoint_tol = {10 * rtol:.2g} after adjoint_iters={self.adjoint_iters} "
            f"iterations (restart {restart}): raise adjoint_iters or adjoint_restart, loosen adjoint_tol, or use "
            "diff='unroll'",
        )

    def _adjoint_rtol(self, dtype):
        return self.adjoint_tol if self.adjoint_tol is not None else math.sqrt(float(jnp.finfo(dtype).eps))


class FixedPointOnX(IterativeSolver):
    """A solver whose iteration map is a map on ``x`` alone, ``x = T(x)`` with
    ``T = self._map(problem, x, state.step)`` (gradient and proximal-gradient methods)."""

    def fixed_point_vars(self, state):
        return state.x

    def fixed_point(self, problem, z, state):
        return self._map(problem, z, state.step)

    def x_from_fixed_point(self, problem, z, state):
        return z


def _zero_tangent(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _implicit_solve(solver, problem, state0):
    """``z* = T(z*, problem)`` by the solver's loop; derivatives by the implicit function theorem."""
    k, state, res, status = solver._loop(problem, state0)
    return solver.fixed_point_vars(state), (state, k, res, status)


@_implicit_solve.defjvp
def _implicit_solve_jvp(solver, primals, tangents):
    problem, state0 = primals
    problem_dot, _ = tangents
    z, aux = _implicit_solve(solver, problem, state0)
    state = aux[0]
    # dz = (I - dT/dz)^{-1} dT/dtheta [theta_dot]
    _, rhs = jax.jvp(lambda p: solver.fixed_point(p, z, state), (problem,), (problem_dot,))
    # Parts of the fixed-point map that do not depend on the problem (e.g. PDHG's primal step)
    # give known-zero tangents; custom_linear_solve's transpose needs every part of the
    # right-hand side to be linear in the input tangents, so tie them to the tangents by 0 * t.
    anchor = sum(
        0 * jnp.sum(jnp.real(t))
        for t in jax.tree_util.tree_leaves(problem_dot)
        if jnp.issubdtype(jnp.asarray(t).dtype, jnp.inexact)
    )
    rhs = jax.tree_util.tree_map(lambda r: r + jnp.asarray(anchor).astype(r.dtype), rhs)
    _, d_t = jax.linearize(lambda v: solver.fixed_point(problem, v, state), z)

    def matvec(v):
        return jax.tree_util.tree_map(lambda a, b: a - b, v, d_t(v))

    dz = jax.lax.custom_linear_solve(
        matvec,
        rhs,
        solve=lambda mv, b: solver._adjoint_solve(mv, b),
        transpose_solve=lambda mvt, b: solver._adjoint_solve(mvt, b),
    )
    return (z, aux), (dz, jax.tree_util.tree_map(_zero_tangent, aux))


def solve(problem: Problem, solver: IterativeSolver, x0=None, warm_start=None) -> Solution:
    """Solve ``problem`` with ``solver`` (see :class:`IterativeSolver`).

    Example:
        >>> problem = ij.Problem(op=A, data=y, regularizer=ij.functionals.TV(), weight=0.01)
        >>> sol = ij.solve(problem, ij.solvers.PDHG(max_iters=300, tol=1e-5))
        >>> sol.x, sol.stats.iterations, sol.stats.converged
    """
    if not isinstance(solver, IterativeSolver):
        raise TypeError(f"solve: `solver` must be an invjax solver, got {type(solver).__name__}")
    return solver(problem, x0=x0, warm_start=warm_start)
