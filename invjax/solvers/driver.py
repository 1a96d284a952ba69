"""The shared iteration driver: loop, stopping, statistics and differentiation modes.

A solver is a small frozen equinox module holding its settings (validated at construction in
``__check_init__``) that supplies

* ``init(problem, x0) -> state``: the starting state (a pytree);
* ``step(problem, state) -> state``: one iteration;

and may override

* ``validate(problem)``: raise ``TypeError`` at trace time for a problem it cannot solve;
* ``get_x(problem, state) -> x``: the current image (default ``state.x``);
* ``residual(problem, old, new) -> scalar``: the stopping quantity compared against ``tol``
  (default: the relative change of ``x``), and ``checked_step(problem, state) -> (state,
  residual)``, the step at which the residual is computed (a solver that adapts its step sizes
  from the residuals does it there);
* ``duals(problem, state)``: for implicit derivatives, one :class:`~invjax.solvers.implicit.Dual`
  (or ``None``) per term of :meth:`Problem.terms` (default: ``None`` for all, enough for smooth
  problems and for one non-smooth term on the image);
* ``refresh(problem, state) -> state``: an earlier solve's state as the start of a new problem
  (a new weight or data), recomputing what it caches from the problem;
* ``inner_iterations(state)``: iterations of an inner solver (reported in ``Stats``).

The driver (this file) owns everything else and knows no concrete solver. The loop runs
``check_every`` iterations between evaluations of the stopping residual and of the finiteness
check (so the iteration count is rounded up to a multiple of ``check_every``, never past
``max_iters``).

Differentiation modes:

* ``diff="implicit"`` (default): the forward solve is a ``lax.while_loop`` that stops at
  ``tol``; derivatives come from the problem's optimality conditions at the returned ``x``, the
  same whichever solver found it (:mod:`invjax.solvers.implicit`): one conjugate-gradient solve
  per derivative, memory constant in the iterations, forward and reverse mode.
* ``diff="unroll"``: a ``lax.scan`` over ``max_iters`` iterations (iterations after
  convergence leave the state unchanged), differentiated by backpropagation through the
  iterations. ``checkpoint`` segments of that many iterations are rematerialised in the
  backward pass (memory ~ ``max_iters / checkpoint + checkpoint`` states); compile time does
  not grow with ``max_iters`` in either mode.
"""

from __future__ import annotations

import abc
import math
from functools import partial
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from . import implicit
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
        inner_iterations: iterations of an inner iterative solver over the whole solve (int32;
            e.g. ADMM's conjugate-gradient x-steps where no exact FFT solve applies; 0 where none
            runs).
    """

    iterations: jax.Array
    converged: jax.Array
    residual: jax.Array
    objective: jax.Array
    status: jax.Array
    inner_iterations: jax.Array

    @property
    def message(self) -> str | list[str]:
        """Human-readable status (call outside ``jit``)."""
        codes = jax.device_get(self.status)
        if getattr(codes, "ndim", 0) == 0:
            return _MESSAGES[int(codes)]
        return [_MESSAGES[int(c)] for c in codes.ravel()]


class Solution(eqx.Module):
    """Result of :func:`solve`: the image ``x``, its :class:`Stats` and the final solver state
    (pass ``state`` back as ``warm_start`` to continue from it).

    With ``diff="implicit"`` only ``x`` (and what is computed from it) has derivatives: the
    derivatives of ``state`` are NaN wherever they are used, never a silent zero (use
    ``diff="unroll"`` to differentiate the solver's state)."""

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
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


_DIFF_MODES = ("implicit", "unroll")
_FAILURES = ("raise", "nan", "ignore")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class IterativeSolver(eqx.Module):
    """Abstract base of all solvers; see the module docstring for what a subclass supplies.

    Args (common to every solver, keyword-only):
        max_iters: iteration limit (static int ``>= 1``; default 1000, PDHG 2000: enough for the
            default ``tol`` in float32 on 256² TV deblurring and 128² 30-angle CT, measured in
            ``benchmarks/derivatives.py``).
        tol: stop when the residual falls below ``tol`` (``0`` runs all ``max_iters``).
        check_every: iterations between evaluations of the stopping residual (and of the
            finiteness of the iterates); they cost about as much as an iteration.
        diff: ``"implicit"`` or ``"unroll"`` (see the module docstring).
        checkpoint: for ``diff="unroll"``, iterations per rematerialised segment
            (``None``: ~``sqrt(max_iters)``; ``0``: no checkpointing).
        adjoint_tol: relative residual of the conjugate-gradient solve of an implicit
            derivative (default ``1e-2`` in single precision, ``1e-6`` in double: measured on
            256² TV deblurring, the gradient at ``1e-2`` differs from the one at ``1e-4`` by 0.1 %,
            far less than the error of the solve it differentiates).
        adjoint_iters: its iteration limit (default 1000).
        adjoint_failure: what a derivative solve that stops above ``10 * adjoint_tol`` does:
            ``"raise"`` (default; ``equinox.EquinoxRuntimeError`` at run time), ``"nan"`` (NaN
            derivatives, for callers that treat them as a failed evaluation, as the tuning rules
            do) or ``"ignore"`` (the last iterate).
        adjoint_flat: an entry of a non-smooth term ``g(K x)`` whose modulus is below
            ``adjoint_flat`` times the solve's final stopping residual times ``max |K x|`` counts
            as an exact zero (default 1; see :mod:`invjax.solvers.implicit`).
        adjoint_curvature_cap: the curvature of a non-smooth term on its manifold (``c / |u|``
            for a norm) is capped at this multiple of the smooth part's mean curvature
            (default 1e5).
    """

    max_iters: int = eqx.field(static=True, default=1000, kw_only=True)
    tol: float = eqx.field(static=True, default=1e-4, kw_only=True)
    check_every: int = eqx.field(static=True, default=10, kw_only=True)
    diff: str = eqx.field(static=True, default="implicit", kw_only=True)
    checkpoint: int | None = eqx.field(static=True, default=None, kw_only=True)
    adjoint_tol: float | None = eqx.field(static=True, default=None, kw_only=True)
    adjoint_iters: int = eqx.field(static=True, default=1000, kw_only=True)
    adjoint_failure: str = eqx.field(static=True, default="raise", kw_only=True)
    adjoint_flat: float = eqx.field(static=True, default=1.0, kw_only=True)
    adjoint_curvature_cap: float = eqx.field(static=True, default=1e5, kw_only=True)

    def __check_init__(self):
        who = type(self).__name__
        if not _positive_int(self.max_iters):
            raise ValueError(f"{who}: `max_iters` must be an int >= 1, got {self.max_iters!r}")
        if not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol >= 0):
            raise ValueError(f"{who}: `tol` must be a finite number >= 0, got {self.tol!r}")
        if not _positive_int(self.check_every):
            raise ValueError(f"{who}: `check_every` must be an int >= 1, got {self.check_every!r}")
        if self.diff not in _DIFF_MODES:
            raise ValueError(f"{who}: `diff` must be one of {_DIFF_MODES}, got {self.diff!r}")
        if self.adjoint_failure not in _FAILURES:
            raise ValueError(f"{who}: `adjoint_failure` must be one of {_FAILURES}, got {self.adjoint_failure!r}")
        if self.checkpoint is not None and (not isinstance(self.checkpoint, int) or self.checkpoint < 0):
            raise ValueError(f"{who}: `checkpoint` must be None or an int >= 0, got {self.checkpoint!r}")
        if self.adjoint_tol is not None and not (isinstance(self.adjoint_tol, (int, float)) and 0 < self.adjoint_tol < 1):
            raise ValueError(f"{who}: `adjoint_tol` must be None or a number in (0, 1), got {self.adjoint_tol!r}")
        if not _positive_int(self.adjoint_iters):
            raise ValueError(f"{who}: `adjoint_iters` must be an int >= 1, got {self.adjoint_iters!r}")
        if not (isinstance(self.adjoint_flat, (int, float)) and self.adjoint_flat >= 0):
            raise ValueError(f"{who}: `adjoint_flat` must be a number >= 0, got {self.adjoint_flat!r}")
        if not (isinstance(self.adjoint_curvature_cap, (int, float)) and self.adjoint_curvature_cap > 0):
            raise ValueError(f"{who}: `adjoint_curvature_cap` must be a number > 0, got {self.adjoint_curvature_cap!r}")

    # ---- the algorithm interface --------------------------------------------------------------
    def validate(self, problem: Problem) -> None:
        """Raise ``TypeError`` if the solver cannot handle this problem (trace time)."""

    @abc.abstractmethod
    def init(self, problem: Problem, x0: jax.Array):
        """The starting state from the image ``x0``."""

    @abc.abstractmethod
    def step(self, problem: Problem, state):
        """One iteration."""

    def get_x(self, problem: Problem, state) -> jax.Array:
        return state.x

    def residual(self, problem: Problem, old, new) -> jax.Array:
        return relative_change(self.get_x(problem, new), self.get_x(problem, old))

    def checked_step(self, problem: Problem, state):
        """One iteration and the stopping residual after it."""
        new = self.step(problem, state)
        return new, self.residual(problem, state, new)

    def duals(self, problem: Problem, state) -> tuple:
        """One :class:`~invjax.solvers.implicit.Dual` or ``None`` per term of ``problem.terms()``."""
        return (None,) * len(problem.terms())

    def refresh(self, problem: Problem, state):
        """The state of an earlier solve, as a start for ``problem`` (a new weight or data):
        recomputes whatever the state caches from the problem (default: nothing)."""
        return state

    def inner_iterations(self, state) -> jax.Array:
        return jnp.zeros((), jnp.int32)

    # ---- the driver ---------------------------------------------------------------------------
    def __call__(self, problem: Problem, x0=None, warm_start=None) -> Solution:
        """Solve ``problem`` from ``x0`` (default zeros) or from the ``state`` of an earlier
        :class:`Solution` (``warm_start``)."""
        who = type(self).__name__
        if not isinstance(problem, Problem):
            raise TypeError(f"{who}: `problem` must be an invjax Problem, got {type(problem).__name__}")
        self.validate(problem)
        problem = problem.checked()
        dtype = working_dtype(problem)
        if x0 is None:
            x0 = jnp.zeros(problem.op.in_shape, dtype)
        else:
            x0 = jnp.asarray(x0)
            if tuple(x0.shape) != tuple(problem.op.in_shape):
                raise ValueError(f"{who}: `x0` must have shape {tuple(problem.op.in_shape)}, got {tuple(x0.shape)}")
            if jnp.issubdtype(x0.dtype, jnp.complexfloating) and not jnp.issubdtype(dtype, jnp.complexfloating):
                raise TypeError(f"{who}: `x0` is complex ({x0.dtype}) but the problem is real ({dtype})")
            x0 = x0.astype(dtype)
        # the checks above ran on concrete values (clear errors); the solve is one compiled
        # program, also when called outside ``jit`` (op by op, the first solve of a shape
        # compiled every primitive on its own: 3-5x slower; inside a ``jit`` it is inlined)
        return _run(self, problem, x0, warm_start)

    def _run(self, problem: Problem, x0, warm_start) -> Solution:
        state0 = self.init(problem, x0) if warm_start is None else self.refresh(problem, warm_start)
        if self.diff == "unroll":
            state, k, res, status = self._scan(problem, state0)
            x = self.get_x(problem, state)
        else:
            x, (state, k, res, status) = _implicit_solve(self, problem, jax.lax.stop_gradient(state0))
        stats = Stats(
            iterations=k,
            converged=status == CONVERGED,
            residual=res,
            objective=problem.objective(x),
            status=status,
            inner_iterations=self.inner_iterations(state),
        )
        return Solution(x=x, stats=stats, state=state)

    def _carry0(self, problem, state0):
        real = jnp.finfo(self.get_x(problem, state0).dtype).dtype
        return (jnp.zeros((), jnp.int32), state0, jnp.asarray(jnp.inf, real), jnp.asarray(MAX_ITERS, jnp.int32))

    def _finish_block(self, problem, k, state, res):
        new, res_new = self.checked_step(problem, state)
        res_new = jnp.asarray(res_new).astype(res.dtype)
        finite = _all_finite(new) & jnp.isfinite(res_new)
        status = jnp.where(~finite, NONFINITE, jnp.where(res_new <= self.tol, CONVERGED, MAX_ITERS))
        return new, res_new, status.astype(jnp.int32)

    def _loop(self, problem, state0):
        n = self.check_every

        def cond(carry):
            k, _, _, status = carry
            return (k < self.max_iters) & (status == MAX_ITERS)

        def body(carry):
            k, state, res, _ = carry
            m = jnp.minimum(n, self.max_iters - k)
            if n > 1:
                state = jax.lax.fori_loop(0, m - 1, lambda _, s: self.step(problem, s), state)
            new, res, status = self._finish_block(problem, k, state, res)
            return k + m, new, res, status

        return jax.lax.while_loop(cond, body, self._carry0(problem, state0))

    def _scan(self, problem, state0):
        n = self.check_every

        def block(length):
            def run(carry, _):
                k, state, res, status = carry
                active = status == MAX_ITERS
                s = state
                if length > 1:
                    s = jax.lax.fori_loop(0, length - 1, lambda _, t: self.step(problem, t), s)
                s, r, st = self._finish_block(problem, k, s, res)
                new = (k + length, s, r, st)
                # after convergence (or failure) the state is frozen, so the map stays a function of
                # the iterate actually returned
                return jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, carry), None

            return run

        blocks, rest = divmod(self.max_iters, n)
        seg = self.checkpoint if self.checkpoint is not None else max(1, int(math.isqrt(self.max_iters)))
        seg_blocks = max(1, seg // n) if seg else 0
        carry = self._carry0(problem, state0)
        full = block(n)
        if blocks:
            if seg_blocks == 0 or seg_blocks >= blocks:
                carry, _ = jax.lax.scan(full, carry, None, length=blocks)
            else:
                outer, tail = divmod(blocks, seg_blocks)

                @jax.checkpoint
                def segment(c, _):
                    c, _ = jax.lax.scan(full, c, None, length=seg_blocks)
                    return c, None

                carry, _ = jax.lax.scan(segment, carry, None, length=outer)
                if tail:
                    carry, _ = jax.lax.scan(full, carry, None, length=tail)
        if rest:
            carry, _ = block(rest)(carry, None)
        k, state, res, status = carry
        return state, k, res, status

    def _adjoint_settings(self, dtype) -> implicit.Settings:
        tol = self.adjoint_tol
        if tol is None:
            tol = 1e-2 if jnp.finfo(dtype).eps > 1e-10 else 1e-6
        return implicit.Settings(tol, self.adjoint_iters, self.adjoint_failure, float(self.adjoint_flat), float(self.adjoint_curvature_cap), type(self).__name__)


@eqx.filter_jit
def _run(solver, problem, x0, warm_start):
    return solver._run(problem, x0, warm_start)


def working_dtype(problem: Problem):
    """The dtype of the iterates: the operator's input dtype at the precision of the data
    (a float32 problem stays float32 under ``jax_enable_x64``; complex stays complex)."""
    dtype = jnp.dtype(problem.op.dtype)
    data_real = jnp.finfo(problem.data.dtype).dtype
    real = jnp.promote_types(jnp.finfo(dtype).dtype, data_real)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.result_type(real, jnp.complex64) if real == jnp.float32 else jnp.dtype(jnp.complex128)
    return jnp.dtype(real)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _implicit_solve(solver, problem, state0):
    """The solver's loop; derivatives from the problem's optimality conditions at its result."""
    k, state, res, status = solver._loop(problem, state0)
    return solver.get_x(problem, state), (state, k, res, status)


@_implicit_solve.defjvp
def _implicit_solve_jvp(solver, primals, tangents):
    problem, state0 = primals
    problem_dot, _ = tangents
    x, aux = _implicit_solve(solver, problem, state0)
    state = aux[0]
    duals = solver.duals(problem, state)
    dx = implicit.tangent(problem, problem_dot, x, duals, solver._adjoint_settings(x.dtype), accuracy=aux[2])
    anchor = implicit._anchor(problem_dot)
    aux_dot = (implicit.nan_tangent(state, anchor),) + tuple(implicit.zero_tangent(a) for a in aux[1:])
    return (x, aux), (dx, aux_dot)


def solve(problem: Problem, solver: IterativeSolver, x0=None, warm_start=None) -> Solution:
    """Solve ``problem`` with ``solver`` (see :class:`IterativeSolver`).

    Example:
        >>> problem = ij.Problem(op=A, data=y, regularizer=ij.functionals.TV(), weight=0.01)
        >>> sol = eqx.filter_jit(ij.solve)(problem, ij.solvers.PDHG(max_iters=300, tol=1e-5))
        >>> sol.x, sol.stats.iterations, sol.stats.converged
    """
    if not isinstance(solver, IterativeSolver):
        raise TypeError(f"solve: `solver` must be an invjax solver, got {type(solver).__name__}")
    return solver(problem, x0=x0, warm_start=warm_start)
