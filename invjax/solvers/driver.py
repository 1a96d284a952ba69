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

**Stopping: one scale-free measure shared by every solver.** At each check the driver compares
against ``tol`` the largest of

* the solver's own residual (its optimality measure: the relative change, the gradient mapping,
  ADMM's and PDHG's primal-dual residuals), and
* the relative change of ``x`` over each of the last two blocks of ``check_every`` iterations,
  ``||x_k - x_{k-m}|| / ||x_k||`` (``m = check_every``).

The second is an estimate of the relative distance to the solution that does not depend on how
the solver scales its own residual: for an iteration converging linearly at a rate ``q`` per
step the change over ``m`` steps is ``(1 - q^m)`` times the distance, and the distance itself
when ``q^m`` is small. A one-step residual is ``(1 - q)`` times the distance, so on an
ill-conditioned problem it can be tiny far from the solution: FISTA's gradient-mapping step at
``1e-4`` on 64² CRR-NN deblurring was 200 times smaller than the distance (60 iterations,
converged=True, 0.5 dB below the solution, a weight gradient of the wrong size), where the
change over 10 iterations stays within a factor 1-8 of it. Two consecutive blocks are required
so that one quiet block (a momentum restart) cannot stop the loop. A warm start
(``warm_start=``) may stop after one block. A solver whose own residual is the residual of the
equations it solves sets ``stops_on_change = False`` and stops on that alone (``CG``: in float32
its iterates past the attainable accuracy wander instead of settling, so a change test on them
would never pass).

Derivative policies (``adjoint=``, :mod:`invjax.solvers.adjoint`):

* :class:`~invjax.solvers.ImplicitAdjoint` (default; shorthand ``diff="implicit"``): the forward
  solve is a ``lax.while_loop`` that stops at ``tol``; derivatives come from the problem's
  optimality conditions at the returned ``x``, the same whichever solver found it
  (:mod:`invjax.solvers.implicit`): one conjugate-gradient solve per derivative
  (:mod:`invjax.solvers.linear`), memory constant in the iterations, forward and reverse mode.
* :class:`~invjax.solvers.UnrollAdjoint` (shorthand ``diff="unroll"``): a ``lax.scan`` over
  blocks of ``check_every`` iterations that stops at convergence (the blocks after it are skipped
  by a ``lax.cond``: no work, and an identity derivative), differentiated through the
  iterations in forward or reverse mode. ``checkpoints`` states are stored for the backward
  pass and the segments between them rematerialised; compile time does not grow with
  ``max_iters`` in either mode.

The keywords of the first version (``checkpoint``, ``adjoint_tol``, ``adjoint_iters``,
``adjoint_failure``, ``adjoint_flat``, ``adjoint_curvature_cap``) are still accepted at
construction (and by ``dataclasses.replace``) as shorthands that set the corresponding field of
the ``adjoint`` object; they are not stored.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import InitVar
from functools import partial
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from . import implicit
from .adjoint import AbstractAdjoint, ImplicitAdjoint, UnrollAdjoint
from .problem import Problem

# status codes reported in Stats.status
CONVERGED, MAX_ITERS, NONFINITE = 0, 1, 2
_MESSAGES = {
    CONVERGED: "converged: residual below tol",
    MAX_ITERS: "not converged: max_iters reached before the residual fell below tol",
    NONFINITE: "failed: the iterates became NaN or inf (check step sizes and data)",
}


class Stats(eqx.Module):
    """Per-solve statistics (arrays: one entry per problem under ``vmap``), built by the driver.

    Arguments:
        iterations: number of iterations run (int32; a multiple of ``check_every`` unless
            ``max_iters`` cut the last block short).
        converged: whether the stopping residual was at most ``tol`` at the last check and at
            the one before it (a cold start needs two blocks; a warm start may stop after one)
            (bool).
        residual: the stopping residual at the last check: the largest of the solver's own
            residual and the relative change of ``x``, ``||x_k - x_{k-m}|| / ||x_k||``, over each
            of the last two blocks of ``m = check_every`` iterations (only the last one after
            the first block of a cold start), an estimate of the relative distance to the
            solution (see :mod:`invjax.solvers.driver`).
        objective: the objective ``F(A x; y) + weight R(x)`` at the returned ``x``.
        status: 0 converged, 1 ``max_iters`` reached, 2 non-finite iterates (int32; see
            :attr:`message`).
        inner_iterations: iterations of an inner iterative solver over the whole solve (int32;
            e.g. ADMM's conjugate-gradient x-steps where no exact FFT solve applies; 0 where none
            runs).

    Example:
        >>> A = ij.operators.Convolution(jnp.ones((3, 3)) / 9, (16, 16))
        >>> problem = ij.Problem(A, A(ij.phantoms.shepp_logan(16)), ij.functionals.SquaredL2(), weight=0.1)
        >>> stats = ij.solve(problem, ij.solvers.FISTA(tol=1e-4, check_every=10)).stats
        >>> bool(stats.converged), int(stats.status), stats.message
        (True, 0, 'converged: residual below tol')
        >>> int(stats.iterations) % 10, bool(stats.residual <= 1e-4), int(stats.inner_iterations)
        (0, True, 0)
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
    ``diff="unroll"`` to differentiate the solver's state).

    Arguments:
        x: the reconstruction, shape ``problem.op.in_shape`` (a leading batch axis under
            ``vmap``/:func:`solve_batch`).
        stats: :class:`Stats` (``iterations``, ``converged``, ``residual``, ``status``).
        state: the solver's final state (duals, step sizes), for ``warm_start``.

    Example:
        >>> A = ij.operators.Identity((4, 4))
        >>> problem = ij.Problem(op=A, data=jnp.ones((4, 4)), regularizer=ij.functionals.SquaredL2(), weight=1.0)
        >>> sol = ij.solve(problem, ij.solvers.FISTA())
        >>> round(float(sol.x.mean()), 3), bool(sol.stats.converged)
        (0.5, True)
        >>> again = ij.solve(problem, ij.solvers.FISTA(), warm_start=sol.state)
        >>> int(again.stats.iterations) <= int(sol.stats.iterations)
        True
    """

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


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class IterativeSolver(eqx.Module):
    """Abstract base of all solvers; see the module docstring for what a subclass supplies.

    Arguments:
        max_iters: iteration limit (static int ``>= 1``; default 1000, PDHG 2000: enough for the
            default ``tol`` in float32 on 256² TV deblurring and 128² 30-angle CT, measured in
            ``benchmarks/derivatives.py``).
        tol: stop when the stopping residual is at most ``tol`` at two consecutive checks (one
            after a warm start; ``0`` runs all ``max_iters``): the largest of the solver's own
            residual and the relative change of ``x`` over each of the last two blocks of
            ``check_every`` iterations, an estimate of the relative distance to the solution
            (see the module docstring; reported as :attr:`Stats.residual`).
        check_every: iterations between evaluations of the stopping residual (and of the
            finiteness of the iterates); they cost about as much as an iteration.
        adjoint: the derivative policy, :class:`~invjax.solvers.ImplicitAdjoint` (default) or
            :class:`~invjax.solvers.UnrollAdjoint` (see the module docstring).
        diff: shorthand for ``adjoint``: ``"implicit"`` (``ImplicitAdjoint()``) or ``"unroll"``
            (``UnrollAdjoint()``); an ``adjoint`` of that kind passed with it is kept. Not stored:
            ``solver.diff`` reads ``solver.adjoint.kind``.
        checkpoint, adjoint_tol, adjoint_iters, adjoint_failure, adjoint_flat, adjoint_curvature_cap:
            shorthands kept for existing code (not stored): ``checkpoint=k`` (iterations per
            rematerialised segment; ``0`` none) sets ``UnrollAdjoint.checkpoints``;
            ``adjoint_<name>`` sets ``ImplicitAdjoint.<name>`` (``adjoint_iters``:
            ``max_iters``); each is ignored under the other policy.

    All are keyword-only, common to every solver (a subclass adds its own settings).

    Raises:
        ValueError: at construction, a ``max_iters`` or ``check_every`` that is not an int
            ``>= 1``, a ``tol`` that is not a finite number ``>= 0``, an unknown ``diff`` or a
            negative ``checkpoint``.
        TypeError: at construction, an ``adjoint`` that is not an ``ImplicitAdjoint`` or
            ``UnrollAdjoint``; at solve time (``validate``), a problem the solver cannot handle.

    Example:
        A subclass supplies ``init`` and ``step`` (here gradient descent on the smooth problem
        ``||x - y||^2 / 2 + w ||x||^2 / 2``, whose solution is ``y / (1 + w)``):

        >>> class Descent(ij.solvers.IterativeSolver):
        ...     def init(self, problem, x0):
        ...         return {"x": x0}
        ...     def get_x(self, problem, state):
        ...         return state["x"]
        ...     def step(self, problem, state):
        ...         x = state["x"]
        ...         return {"x": x - 0.5 * ((x - problem.data) + problem.weight * x)}
        >>> problem = ij.Problem(ij.operators.Identity((4, 4)), jnp.ones((4, 4)), ij.functionals.SquaredL2(), weight=1.0)
        >>> sol = ij.solve(problem, Descent(tol=1e-5))
        >>> isinstance(Descent(), ij.solvers.IterativeSolver), round(float(sol.x.mean()), 3), bool(sol.stats.converged)
        (True, 0.5, True)
    """

    # whether the driver's change-of-x measure joins the solver's own residual (module docstring);
    # False for a solver whose residual is already the residual of the equations it solves (CG)
    stops_on_change: ClassVar[bool] = True

    max_iters: int = eqx.field(static=True, default=1000, kw_only=True)
    tol: float = eqx.field(static=True, default=1e-4, kw_only=True)
    check_every: int = eqx.field(static=True, default=10, kw_only=True)
    adjoint: AbstractAdjoint = eqx.field(static=True, default=ImplicitAdjoint(), kw_only=True)
    diff: InitVar[str | None] = eqx.field(default=None, kw_only=True)
    checkpoint: InitVar[int | None] = eqx.field(default=None, kw_only=True)
    adjoint_tol: InitVar[float | None] = eqx.field(default=None, kw_only=True)
    adjoint_iters: InitVar[int | None] = eqx.field(default=None, kw_only=True)
    adjoint_failure: InitVar[str | None] = eqx.field(default=None, kw_only=True)
    adjoint_flat: InitVar[float | None] = eqx.field(default=None, kw_only=True)
    adjoint_curvature_cap: InitVar[float | None] = eqx.field(default=None, kw_only=True)

    def __post_init__(self, diff, checkpoint, adjoint_tol, adjoint_iters, adjoint_failure, adjoint_flat,
                      adjoint_curvature_cap):
        # the shorthands build or adjust the adjoint object; dataclasses.replace passes them
        # afresh (they are not stored), so replace(solver, diff="unroll") switches the policy and
        # replace(solver, adjoint_failure="nan") changes one setting of the implicit one
        who = type(self).__name__
        adjoint = self.adjoint
        if not isinstance(adjoint, AbstractAdjoint):
            raise TypeError(
                f"{who}: `adjoint` must be ij.solvers.ImplicitAdjoint(...) or ij.solvers.UnrollAdjoint(...), "
                f"got {type(adjoint).__name__}"
            )
        if diff is not None and not isinstance(diff, _Kind):
            if diff not in _DIFF_MODES:
                raise ValueError(f"{who}: `diff` must be one of {_DIFF_MODES}, got {diff!r}")
            if adjoint.kind != diff:
                adjoint = ImplicitAdjoint() if diff == "implicit" else UnrollAdjoint()
        legacy = {"tol": adjoint_tol, "max_iters": adjoint_iters, "failure": adjoint_failure, "flat": adjoint_flat,
                  "curvature_cap": adjoint_curvature_cap}
        legacy = {k: v for k, v in legacy.items() if v is not None}
        if legacy and isinstance(adjoint, ImplicitAdjoint):
            adjoint = dataclasses.replace(adjoint, **legacy)
        if checkpoint is not None:
            if not isinstance(checkpoint, int) or isinstance(checkpoint, bool) or checkpoint < 0:
                raise ValueError(f"{who}: `checkpoint` must be None or an int >= 0, got {checkpoint!r}")
            if isinstance(adjoint, UnrollAdjoint) and _positive_int(self.max_iters) and _positive_int(self.check_every):
                blocks = max(1, self.max_iters // self.check_every)
                per = max(1, checkpoint // self.check_every) if checkpoint else blocks
                adjoint = UnrollAdjoint(checkpoints=blocks if not checkpoint else max(1, math.ceil(blocks / per)))
        self.adjoint = adjoint

    def __check_init__(self):
        who = type(self).__name__
        if not _positive_int(self.max_iters):
            raise ValueError(f"{who}: `max_iters` must be an int >= 1, got {self.max_iters!r}")
        if not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol >= 0):
            raise ValueError(f"{who}: `tol` must be a finite number >= 0, got {self.tol!r}")
        if not _positive_int(self.check_every):
            raise ValueError(f"{who}: `check_every` must be an int >= 1, got {self.check_every!r}")

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
        if isinstance(self.adjoint, UnrollAdjoint):
            state, k, res, status = self._scan(problem, state0, warm_start is not None)
            x = self.get_x(problem, state)
        else:
            x, (state, k, res, status) = _implicit_solve(self, warm_start is not None, problem, jax.lax.stop_gradient(state0))
        stats = Stats(
            iterations=k,
            converged=status == CONVERGED,
            residual=res,
            objective=problem.objective(x),
            status=status,
            inner_iterations=self.inner_iterations(state),
        )
        return Solution(x=x, stats=stats, state=state)

    def _carry0(self, problem, state0, warm=False):
        """``(k, state, residual, status, x at the last check, change over the last block)``."""
        x0 = self.get_x(problem, state0)
        real = jnp.finfo(x0.dtype).dtype
        # a cold start needs two blocks below tol; a warm start's previous block was the old solve's
        before = jnp.asarray(0.0 if warm else jnp.inf, real)
        return (jnp.zeros((), jnp.int32), state0, jnp.asarray(jnp.inf, real), jnp.asarray(MAX_ITERS, jnp.int32),
                x0, before)

    def _finish_block(self, problem, carry, state):
        """The block's last step, its stopping residual (see the module docstring) and status."""
        _, _, res, _, x_check, before = carry
        new, res_new = self.checked_step(problem, state)
        own = jnp.asarray(res_new).astype(res.dtype)
        finite = _all_finite(new) & jnp.isfinite(own)
        if self.stops_on_change:
            x = self.get_x(problem, new)
            change = relative_change(x, x_check).astype(res.dtype)
            # reported: the largest of the three (the first block has no previous one: inf, not shown)
            res_new = jnp.maximum(own, jnp.maximum(change, jnp.where(jnp.isinf(before), 0, before)))
            below = (res_new <= self.tol) & (before <= self.tol)
        else:  # its own residual alone (CG checks every iteration: no norm of x spent on it)
            x, change = x_check, before
            res_new = own
            below = own <= self.tol
        status = jnp.where(~finite, NONFINITE, jnp.where(below, CONVERGED, MAX_ITERS))
        return new, res_new, status.astype(jnp.int32), x, change

    def _loop(self, problem, state0, warm=False):
        n = self.check_every

        def cond(carry):
            k, _, _, status, _, _ = carry
            return (k < self.max_iters) & (status == MAX_ITERS)

        def body(carry):
            k, state = carry[:2]
            m = jnp.minimum(n, self.max_iters - k)
            if n > 1:
                state = jax.lax.fori_loop(0, m - 1, lambda _, s: self.step(problem, s), state)
            new, res, status, x, change = self._finish_block(problem, carry, state)
            return k + m, new, res, status, x, change

        return jax.lax.while_loop(cond, body, self._carry0(problem, state0, warm))[:4]

    def _scan(self, problem, state0, warm=False):
        n = self.check_every

        def block(length):
            def advance(carry):
                k, s = carry[:2]
                if length > 1:
                    s = jax.lax.fori_loop(0, length - 1, lambda _, t: self.step(problem, t), s)
                s, r, st, x, change = self._finish_block(problem, carry, s)
                return k + length, s, r, st, x, change

            def run(carry, _):
                # after convergence (or failure) the blocks are skipped: no work, and the map stays
                # a function of the iterate actually returned, with an identity derivative (under
                # vmap the predicate is batched and the cond a select: the step then runs and is
                # discarded)
                return jax.lax.cond(carry[3] == MAX_ITERS, advance, lambda c: c, carry), None

            return run

        blocks, rest = divmod(self.max_iters, n)
        seg_blocks = self.adjoint.segment_blocks(blocks)
        carry = self._carry0(problem, state0, warm)
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
        k, state, res, status = carry[:4]
        return state, k, res, status

    def _adjoint_settings(self, dtype) -> implicit.Settings:
        adjoint = self.adjoint if isinstance(self.adjoint, ImplicitAdjoint) else ImplicitAdjoint()
        tol = adjoint.resolved_tol(float(jnp.finfo(dtype).eps))
        return implicit.Settings(tol, adjoint.max_iters, adjoint.failure, float(adjoint.flat),
                                 float(adjoint.curvature_cap), type(self).__name__)


class _Kind(str):
    """What ``solver.diff`` reads: the adjoint's kind, marked as read back. ``dataclasses.replace``
    passes every init field from the instance, init-only ones too: the marked value must not
    override a new ``adjoint`` (``replace(solver, adjoint=...)``), while a plain string given by the
    caller (``replace(solver, diff="unroll")``) does."""


# ``solver.diff``: the shorthand is an init-only field; reading it gives the adjoint's kind
IterativeSolver.diff = property(lambda self: _Kind(self.adjoint.kind), doc='``"implicit"`` or ``"unroll"``: ``adjoint.kind``.')


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


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _implicit_solve(solver, warm, problem, state0):
    """The solver's loop; derivatives from the problem's optimality conditions at its result."""
    k, state, res, status = solver._loop(problem, state0, warm)
    return solver.get_x(problem, state), (_tied(state, problem), k, res, status)


def _tied(state, problem):
    """``state`` with every inexact leaf made to depend (by adding an exact zero) on every array
    of ``problem``.

    The derivative rule gives the state NaN tangents anchored on the problem's tangents
    (:func:`implicit.nan_tangent`). Under ``vmap`` a state leaf computed from unbatched inputs
    only (a step size from the operator, when only the data or the weight is batched) would be
    an unbatched primal with a batched tangent, which JAX's batching of ``custom_jvp`` turns into
    mis-shaped tangents ((B, B)) or, under ``jit``, a ``broadcast_in_dim`` error. Tied to the
    problem, a leaf is batched exactly where the anchor is. One element per array is read."""
    zero = None
    for leaf in jax.tree_util.tree_leaves(problem):
        if eqx.is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.inexact) and leaf.size:
            first = jnp.real(leaf.reshape(-1)[0])
            z = jnp.where(jnp.isfinite(first), 0.0, 0.0)  # 0 even at an inf (a box bound)
            zero = z if zero is None else zero + z
    if zero is None:
        return state

    def tie(a):
        if eqx.is_array(a) and jnp.issubdtype(a.dtype, jnp.inexact):
            return a + zero.astype(jnp.finfo(a.dtype).dtype)
        return a

    return jax.tree_util.tree_map(tie, state)


@_implicit_solve.defjvp
def _implicit_solve_jvp(solver, warm, primals, tangents):
    problem, state0 = primals
    problem_dot, _ = tangents
    x, aux = _implicit_solve(solver, warm, problem, state0)
    state = aux[0]
    duals = solver.duals(problem, state)
    dx = implicit.tangent(problem, problem_dot, x, duals, solver._adjoint_settings(x.dtype), accuracy=aux[2])
    anchor = implicit._anchor(problem_dot)
    aux_dot = (implicit.nan_tangent(state, anchor),) + tuple(implicit.zero_tangent(a) for a in aux[1:])
    return (x, aux), (dx, aux_dot)


def solve(problem: Problem, solver: IterativeSolver, x0=None, warm_start=None) -> Solution:
    r"""Solve ``problem`` with ``solver``: one compiled loop, differentiable.

    Computes an approximate minimiser of the problem's objective

    .. math:: \hat x = \arg\min_x\; f(Ax, y) + w\, g(x) \;(+\, \iota_C(x)),

    with ``f`` the fidelity (default ``SquaredL2``: ``||Ax - y||^2 / 2``), ``g`` the
    regularizer, ``w`` the weight and ``C`` an optional constraint, by running
    ``solver.step`` in a ``lax.while_loop`` until its residual falls below ``solver.tol`` or
    ``solver.max_iters`` is reached. The solve works under ``jit`` (use
    ``eqx.filter_jit``: a problem holds arrays), ``vmap`` over data and weights, and
    ``grad``/``jvp``: derivatives come from the problem's optimality conditions at ``sol.x``
    (``solver.adjoint``, default :class:`ImplicitAdjoint`) or from unrolling
    (:class:`UnrollAdjoint`).

    Arguments:
        problem: an :class:`~invjax.Problem` (operator ``A`` mapping images of shape
            ``A.in_shape`` to data of shape ``A.out_shape``, data ``y``, regularizer, weight).
        solver: an invjax solver (``ADMM``, ``PDHG``, ``FISTA``, ``CG``, ``Landweber``, ...)
            holding ``max_iters``, ``tol`` and its step settings.
        x0: optional initial image of shape ``A.in_shape`` (default: the solver's start,
            usually ``A^H y`` scaled or zeros).
        warm_start: optional ``Solution.state`` of an earlier solve of a problem of the same
            structure, to continue from (duals and step sizes included).

    Returns:
        A :class:`Solution`: ``sol.x`` (shape ``A.in_shape``, the working dtype: complex
        stays complex), ``sol.state`` (for ``warm_start``) and ``sol.stats``
        (``iterations``, ``converged``, ``residual``, ``status``; ``sol.stats.message`` in
        words).

    Raises:
        TypeError: ``solver`` is not an invjax solver, or the solver cannot handle the
            problem's terms (named at trace time).
        ValueError: shapes of ``x0`` or the data that do not match the operator.

    Example:
        >>> x = jnp.zeros((16, 16)).at[4:12, 4:12].set(1.0)
        >>> A = ij.operators.Identity((16, 16))
        >>> problem = ij.Problem(op=A, data=x, regularizer=ij.functionals.TV(), weight=0.05)
        >>> sol = eqx.filter_jit(ij.solve)(problem, ij.solvers.PDHG())
        >>> bool(sol.stats.converged), sol.x.shape
        (True, (16, 16))
    """
    if not isinstance(solver, IterativeSolver):
        raise TypeError(f"solve: `solver` must be an invjax solver, got {type(solver).__name__}")
    return solver(problem, x0=x0, warm_start=warm_start)
