r"""The library's one linear-solve layer: conjugate gradients for Hermitian positive definite systems.

Every linear solve in invjax (the implicit derivative of a solve, ADMM's x-step, the derivative
of the ridge regulariser's prox, MoDL's data consistency) goes through :func:`cg`, so that a
numerical fix lands once. It solves

.. math:: H x = b, \qquad H = H^H \succ 0 \ \text{(real symmetric or complex Hermitian)},

matrix-free (``matvec: v -> H v``), optionally preconditioned by ``M \approx H^{-1}``
(``precondition: r -> M r``, Hermitian positive definite) and warm-started at ``x0``, and
returns the solution with :class:`LinearStats` (iterations, the *true* relative residual
``||b - H x|| / ||b||``, whether it met the tolerance): a solve that stops at ``max_iters`` is
reported, never silently returned as if it had converged. :func:`check_result` applies the one failure
policy (raise, NaN or ignore) to such a report.

Two ways to differentiate the result:

* ``unroll=False`` (default): the forward solve is ``lineax.linear_solve`` with ``lineax.CG``
  (``stabilise_every``: the residual is recomputed from ``b - H x`` every few iterations, so a
  drifting recurrence cannot fake convergence) on a ``lineax.FunctionLinearOperator`` tagged
  positive semi-definite. Derivatives are implicit, through ``jax.lax.custom_linear_solve``: the
  tangent is one more solve with ``H`` (``dx = H^{-1}(db - dH x)``, so derivatives reach what
  ``matvec`` closes over), the cotangent one solve with ``H^T = H``. Each of those solves applies
  the caller's ``failure`` policy (lineax's own derivative solves raise unconditionally, with no
  residual to report: that is why the layer defines the solve's derivative rules rather than
  using lineax's). Complex systems are solved in their real view ``R^2n`` with ``Re <., .>``:
  the library's operators there are often only real-linear (an implicit derivative's manifold
  curvature of ``|u|`` involves ``Re(conj(u) v)``), so lineax's complex Hermitian CG would be
  wrong for them, while in the real view every operator is real symmetric and JAX transposes
  the views itself (no hand-written ``conj`` rules).
* ``unroll=True``: exactly ``max_iters`` CG steps in a ``fori_loop``, differentiated by
  backpropagation through the iterations (the exact derivative of the computed, possibly
  inexact, iterate). Once the residual has fallen to rounding level the iteration stops moving;
  every division is guarded, and no square root of a quantity that reaches zero is taken inside
  the loop, so the derivative of the frozen steps is finite (before this layer, an unrolled
  ADMM whose inner CG had converged returned NaN gradients).

:func:`cg_init` / :func:`cg_step` are that one guarded, preconditioned CG step, shared with the
:class:`~invjax.solvers.CG` solver.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

_FAILURES = ("raise", "nan", "ignore")


class LinearStats(eqx.Module):
    """What a linear solve reports (arrays; one entry per system under ``vmap``).

    Attributes:
        iterations: CG iterations run (int32).
        residual: the relative residual ``||b - H x|| / ||b||`` of the returned ``x``,
            recomputed from ``b`` (0 when ``b = 0``; NaN where ``check=False`` skipped it).
        converged: whether the solve met its tolerance (bool).
    """

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


def _real_dtype(dtype):
    return jnp.finfo(dtype).dtype


def _dot(a, b):
    """``Re <a, b> = Re sum conj(a) b``: the real inner product in which ``H`` is self-adjoint."""
    return jnp.real(jnp.vdot(a, b))


def _two_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.abs(t) ** 2) for t in jax.tree_util.tree_leaves(tree)))


def _safe_div(num, den, ok):
    """``num / den`` where ``ok``, else 0, with a finite derivative on both branches."""
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0).astype(num.dtype)


def _identity(r):
    return r


# ---- the one CG step (unrolled solves and the CG solver) -------------------------------------------
class CGState(NamedTuple):
    """State of :func:`cg_step`: iterate ``x``, residual ``r = b - H x``, search direction ``p``,
    ``rz = Re <r, M r>``, ``rr = ||r||^2``, the rounding-level ``floor`` of ``rr`` below which the
    iteration stops moving, the steps taken ``k`` (int32; it schedules the residual
    recomputation and stays unbatched under ``vmap``) and the steps that moved ``iterations``."""

    x: jax.Array
    r: jax.Array
    p: jax.Array
    rz: jax.Array
    rr: jax.Array
    floor: jax.Array
    k: jax.Array
    iterations: jax.Array


def cg_init(matvec: Callable, b, x0, precondition: Callable | None = None) -> CGState:
    """The :class:`CGState` at ``x0`` for ``H x = b``."""
    precondition = _identity if precondition is None else precondition
    r = b - matvec(x0)
    z = precondition(r)
    rr = _dot(r, r)
    eps = jnp.finfo(rr.dtype).eps
    # rounding level of r = b - H x: eps relative to the larger of ||b|| and the starting residual
    # (10 eps put it above the CG solver's default float32 tol 1e-6: it froze unconverged)
    floor = jax.lax.stop_gradient(eps**2 * jnp.maximum(rr, _dot(b, b)))
    zero = jnp.zeros((), jnp.int32)
    return CGState(x0, r, z, _dot(r, z), rr, floor, zero, zero)


def cg_step(matvec: Callable, b, state: CGState, precondition: Callable | None = None,
            stabilise_every: int | None = 10) -> CGState:
    """One preconditioned CG step (Hestenes & Stiefel 1952) for ``H x = b``.

    Every ``stabilise_every`` steps the residual is recomputed as ``b - H x`` (one more
    ``matvec``) instead of by the recurrence, which drifts in finite precision. Once ``||r||^2``
    is at or below ``state.floor`` (or the curvature ``Re <p, H p>`` is not positive) the step
    leaves the state unchanged; all divisions are guarded so that their derivatives stay finite
    on the frozen branch.
    """
    precondition = _identity if precondition is None else precondition
    x, r, p, rz, rr, floor, k, n = state
    q = matvec(p)
    pq = _dot(p, q)
    active = (rr > floor) & (pq > 0) & (rz > 0)
    alpha = _safe_div(rz, pq, active)
    x_new = x + alpha.astype(x.dtype) * p
    if stabilise_every:
        stable = (k + 1) % stabilise_every == 0
        r_new = jax.lax.cond(stable, lambda: b - matvec(x_new), lambda: r - alpha.astype(r.dtype) * q)
    else:
        r_new = r - alpha.astype(r.dtype) * q
    z = precondition(r_new)
    rz_new = _dot(r_new, z)
    beta = _safe_div(rz_new, rz, active)
    p_new = z + beta.astype(p.dtype) * p

    def keep(new, old):
        return jnp.where(active, new, old)

    return CGState(keep(x_new, x), keep(r_new, r), keep(p_new, p), keep(rz_new, rz),
                   keep(_dot(r_new, r_new), rr), floor, k + 1, n + active.astype(jnp.int32))


# ---- the solve --------------------------------------------------------------------------------------
def _relative_residual(matvec, b, x):
    """``||b - H x|| / ||b||`` (0 for ``b = 0``), without derivatives."""
    b, x = jax.lax.stop_gradient((b, x))
    bnorm = _two_norm(b)
    rnorm = _two_norm(b - matvec(x))
    return jnp.where(bnorm > 0, rnorm / jnp.where(bnorm > 0, bnorm, 1), jnp.where(rnorm > 0, jnp.inf, 0)).astype(bnorm.dtype)


def _to_real(z):
    return jnp.stack([jnp.real(z), jnp.imag(z)])


def _to_complex(v, dtype):
    return jax.lax.complex(v[0], v[1]).astype(dtype)


def _psd_operator(fn, like):
    return lx.FunctionLinearOperator(fn, jax.ShapeDtypeStruct(like.shape, like.dtype), tags=lx.positive_semidefinite_tag)


def _lineax_solve(operator: lx.AbstractLinearOperator, b, precondition: lx.AbstractLinearOperator | None,
                  rtol, max_iters: int, stabilise_every: int | None):
    """``(x, iterations)``: ``lineax.CG`` until ``||b - H x|| <= rtol ||b||`` (or ``max_iters``)."""
    real = _real_dtype(b.dtype)
    bnorm = _two_norm(b)
    # The solve runs on (kappa H) u = b / t with t = rtol ||b||: lineax's test "||residual|| <= 1"
    # is then exactly ours. lineax also requires the step to be small, ||du|| <= 1, i.e.
    # ||dx|| <= kappa t: a test in the units of x that ours does not have; kappa = 1 / eps makes it
    # a no-op (CG is invariant to the scale of H and of its preconditioner).
    eps = float(jnp.finfo(real).eps)
    target = jnp.maximum(jnp.asarray(rtol, real), eps) * bnorm
    scale = jnp.where(target > 0, target, 1).astype(real)
    kappa = 1 / eps
    scaled = lx.FunctionLinearOperator(lambda v: kappa * operator.mv(v), operator.in_structure(),
                                       tags=lx.positive_semidefinite_tag)
    options = {} if precondition is None else {"preconditioner": precondition}
    solver = lx.CG(rtol=0.0, atol=1.0, norm=_two_norm, stabilise_every=stabilise_every, max_steps=max_iters)
    sol = lx.linear_solve(scaled, (b / scale).astype(b.dtype), solver, options=options, throw=False)
    x = (sol.value * (kappa * scale)).astype(b.dtype)
    return jnp.where(bnorm > 0, x, jnp.zeros_like(x)), sol.stats["num_steps"].astype(jnp.int32)


def cg(matvec: Callable, b, *, tol, max_iters: int, x0=None, precondition: Callable | None = None,
       project: Callable | None = None, reduction: float | None = None, unroll: bool = False,
       stabilise_every: int | None = 10, check: bool = True, failure: str = "ignore",
       messages: Callable[[int], str] | None = None):
    r"""Solve ``H x = b`` (``H`` Hermitian positive definite) by conjugate gradients.

    Args:
        matvec: ``v -> H v``, linear; derivatives reach the arrays it closes over.
        b: the right-hand side (real or complex array).
        tol: relative tolerance: stop once ``||b - H x|| <= tol ||b||`` (a float or a traced
            scalar); each derivative solve stops at ``tol`` relative to its own right-hand side.
        max_iters: iteration limit (static int ``>= 1``); with ``unroll=True`` the exact count.
        x0: warm start (default zeros). Implicit derivatives do not depend on it; unrolled ones
            flow into it (an outer iteration that warm-starts each solve is differentiated whole).
        precondition: ``r -> M r``, ``M ≈ H^{-1}`` Hermitian positive semi-definite (default none).
        project: ``P``, an orthogonal projection with ``H = P H P`` positive definite on its
            range: every solve (also a derivative one) projects its right-hand side first, so the
            result is the pseudo-inverse ``(P H P)^+ b`` (default: none).
        reduction: if given, stop once the residual has fallen by this factor from the warm
            start's, or at ``tol ||b||`` if that is looser (an inexact inner solve that must keep
            improving as an outer iteration converges: ADMM's x-step). With ``x0`` or
            ``reduction`` (and ``unroll=False``) the result is not linear in ``b`` (the forward
            solve's stop depends on the start): ``b`` must not be a tangent.
        unroll: ``False``: lineax CG with implicit derivatives (see the module docstring);
            ``True``: ``max_iters`` guarded steps, differentiated through.
        stabilise_every: recompute the true residual every this many iterations.
        check: compute ``LinearStats.residual`` (one more ``matvec``); ``False`` reports NaN
            there and ``converged`` from the iteration alone.
        failure: the policy of :func:`check_result` for a solve above ``10 * tol``, applied to
            every solve this call makes (the forward one and, with ``unroll=False``, each solve of
            its derivatives): ``"ignore"`` (default), ``"nan"`` or ``"raise"``.
        messages: the error messages of ``failure="raise"`` (see :func:`check_result`).

    Returns:
        ``(x, LinearStats)``.

    Example:
        Tikhonov deblurring, ``(A^T A + lam I) x = A^T y``, checked against its closed form (the
        blur is circular, so ``A^T A + lam I`` is diagonal in Fourier space):

        >>> from invjax.solvers.linear import cg
        >>> A = ij.operators.Convolution(jnp.ones((3, 3)) / 9, (16, 16))
        >>> y = A(ij.phantoms.shepp_logan(16))
        >>> lam = 1e-2
        >>> x, stats = cg(lambda v: A.T(A(v)) + lam * v, A.T(y), tol=1e-6, max_iters=200)
        >>> bool(stats.converged), float(stats.residual) <= 1e-6
        (True, True)
        >>> K = jnp.fft.fft2(A.T(A(jnp.zeros((16, 16)).at[0, 0].set(1.0))))  # eigenvalues of A^T A
        >>> exact = jnp.fft.ifft2(jnp.fft.fft2(A.T(y)) / (K + lam)).real
        >>> bool(jnp.abs(x - exact).max() < 1e-4)
        True
    """
    if not (isinstance(max_iters, int) and max_iters >= 1):
        raise ValueError(f"cg: `max_iters` must be an int >= 1, got {max_iters!r}")
    if failure not in _FAILURES:
        raise ValueError(f"cg: `failure` must be one of {_FAILURES}, got {failure!r}")
    if jnp.issubdtype(jnp.asarray(b).dtype, jnp.complexfloating) and not unroll:
        # complex systems are solved in the real view C^n = R^2n with Re <., .>: the operators
        # here are often only R-linear (the manifold curvature of |u| in an implicit derivative
        # involves Re(conj(u) v)), where a complex Hermitian CG (lineax's, for a complex
        # positive semi-definite tag) would be wrong; in the real view every operator is real
        # symmetric and JAX transposes the two views itself
        dtype = jnp.asarray(b).dtype

        def wrap(f):
            return None if f is None else (lambda v: _to_real(f(_to_complex(v, dtype))))

        x, stats = cg(wrap(matvec), _to_real(jnp.asarray(b)), tol=tol, max_iters=max_iters,
                      x0=None if x0 is None else _to_real(jnp.asarray(x0).astype(dtype)), precondition=wrap(precondition),
                      project=wrap(project), reduction=reduction, unroll=False, stabilise_every=stabilise_every,
                      check=check, failure=failure, messages=messages)
        return _to_complex(x, dtype), stats
    if project is not None and not unroll and (x0 is not None or reduction is not None):
        raise ValueError("cg: `project` cannot be combined with `x0` or `reduction` (unroll=False)")
    b = jnp.asarray(b)
    real = _real_dtype(b.dtype)
    if project is not None:
        b = project(b)
    if x0 is not None:
        x0 = jnp.asarray(x0).astype(b.dtype)
    if unroll:
        x0 = jnp.zeros_like(b) if x0 is None else x0
        state = cg_init(matvec, b, x0, precondition)
        state = jax.lax.fori_loop(0, max_iters, lambda _, s: cg_step(matvec, b, s, precondition, stabilise_every), state)
        x = state.x
        res = _relative_residual(matvec, b, x) if check or failure != "ignore" else jnp.asarray(jnp.nan, real)
        stats = LinearStats(state.iterations, res, res <= tol if check else state.rr <= state.floor)
        return check_result(x, stats, tol=tol, failure=failure, messages=messages), stats

    pre = None if precondition is None else _psd_operator(precondition, b)
    if x0 is None and reduction is None:
        x, iterations = _linear_solve(matvec, b, pre, project, tol, max_iters, stabilise_every, failure, messages)
        target = jnp.asarray(tol, real)
    else:
        x0 = jnp.zeros_like(b) if x0 is None else x0
        x, iterations, target = _warm_solve(matvec, b, x0, precondition, tol, reduction, max_iters, stabilise_every,
                                            failure, messages)
    if check:
        res = _relative_residual(matvec, b, x)
        # lineax tested its (periodically recomputed) recurrence residual: allow it a factor 2 of
        # rounding against the true one
        converged = res <= 2 * target
    else:
        res = jnp.asarray(jnp.nan, real)
        converged = iterations < max_iters
    return x, LinearStats(iterations, res, converged)


def _linear_solve(matvec, b, pre, project, tol, max_iters, stabilise_every, failure, messages):
    """``(x, iterations)``: ``H^{-1} b`` (``(P H P)^+ P b`` with a projection) as a linear function
    of ``b``, transposable (it may be a tangent: the implicit layer's right-hand side is), with
    every solve (forward, tangent, cotangent) to ``tol`` relative to its own right-hand side."""
    real = _real_dtype(b.dtype)
    rtol = jnp.asarray(tol, real)
    proj = None if project is None else _psd_operator(project, b)

    def solve(fn, rhs):
        # real and symmetric (complex systems arrive in their real view): one routine serves the
        # solve and its transpose, whose right-hand side (a cotangent) P projects as well
        if proj is not None:
            rhs = proj.mv(rhs)
        operator = _psd_operator(fn, rhs)
        x, iterations = _lineax_solve(operator, rhs, pre, rtol, max_iters, stabilise_every)
        if failure != "ignore":
            res = _relative_residual(operator.mv, rhs, x)
            x = check_result(x, LinearStats(iterations, res, res <= rtol), tol=rtol, failure=failure, messages=messages)
        return x, iterations

    return jax.lax.custom_linear_solve(matvec, b, solve=solve, symmetric=True, has_aux=True)


def _warm_solve(matvec, b, x0, precondition, tol, reduction, max_iters, stabilise_every, failure, messages):
    """``(x, iterations, target)``: the forward solve from ``x0`` until ``||b - H x|| <= target
    ||b||``, ``target = max(tol, reduction ||b - H x0|| / ||b||)``; its derivatives are those of
    ``H^{-1} b`` (``dx = H^{-1}(db - dH x)``, by :func:`_linear_solve` at ``tol``), whatever the
    start and the reduction (so it is not linear in ``b``: not for tangent right-hand sides)."""
    real = _real_dtype(b.dtype)
    # a custom_jvp function must not close over traced values: matvec's and the preconditioner's
    # arrays become arguments (no derivative flows into x0 or the preconditioner)
    fn, consts = jax.closure_convert(matvec, b)
    if precondition is None:
        pfn, pconsts = None, ()
    else:
        pfn, pconsts = jax.closure_convert(precondition, b)
    pconsts = tuple(jax.lax.stop_gradient(c) for c in pconsts)

    def preconditioner(pc, like):
        return None if pfn is None else _psd_operator(lambda r: pfn(r, *pc), like)

    @jax.custom_jvp
    def run(consts, b, x0, pc):
        H = lambda v: fn(v, *consts)  # noqa: E731
        r0 = b - H(x0)
        bnorm, r0norm = _two_norm(b), _two_norm(r0)
        target = jnp.asarray(tol, real)
        if reduction is not None:
            target = jnp.maximum(target, reduction * r0norm / jnp.where(bnorm > 0, bnorm, 1))
        # the correction's relative tolerance: the same residual, measured against ||r0||
        rtol = target * bnorm / jnp.maximum(r0norm, jnp.finfo(real).tiny)
        dx, iterations = _lineax_solve(_psd_operator(H, b), r0, preconditioner(pc, b), rtol, max_iters, stabilise_every)
        x = x0 + dx
        if failure != "ignore":
            res = _relative_residual(H, b, x)
            x = check_result(x, LinearStats(iterations, res, res <= target), tol=target, failure=failure,
                             messages=messages)
        return x, iterations, target

    @run.defjvp
    def run_jvp(primals, tangents):
        consts, b, x0, pc = primals
        dconsts, db, _, _ = tangents
        x, iterations, target = run(consts, b, x0, pc)
        _, dhx = jax.jvp(lambda *c: fn(x, *c), tuple(consts), tuple(dconsts))
        dx, _ = _linear_solve(lambda v: fn(v, *consts), db - dhx, preconditioner(pc, b), None, tol, max_iters,
                              stabilise_every, failure, messages)
        return (x, iterations, target), (dx, np.zeros((), jax.dtypes.float0), jnp.zeros_like(target))

    return run(tuple(consts), b, jax.lax.stop_gradient(x0), pconsts)


def check_result(x, stats: LinearStats, *, tol, failure: str = "raise", messages: Callable[[int], str] | None = None,
          slack: float = 10.0):
    """Apply the one failure policy to a solve whose ``stats.residual`` exceeds ``slack * tol``.

    Args:
        x: the solution.
        stats: its :class:`LinearStats` (``residual`` must have been computed).
        tol: the tolerance the solve was asked for.
        failure: ``"raise"`` (``equinox.EquinoxRuntimeError`` at run time, naming the residual
            reached to a power of ten), ``"nan"`` (NaN solution, for callers that treat it as a
            failed evaluation) or ``"ignore"`` (the last iterate).
        messages: ``k -> str``, the error for a residual in ``[1e k, 1e(k+1))`` (``k`` from -16
            to 2; 2 also stands for NaN).
        slack: the factor over ``tol`` still accepted (an iterative solve's residual
            fluctuates; default 10).

    Returns:
        ``x``, NaN or the same ``x`` behind a run-time check.
    """
    if failure not in _FAILURES:
        raise ValueError(f"`failure` must be one of {_FAILURES}, got {failure!r}")
    if failure == "ignore":
        return x
    tol = jnp.asarray(tol)
    failed = ~(stats.residual <= slack * tol)
    if failure == "nan":
        return jnp.where(failed, jnp.nan, x).astype(x.dtype)
    powers = list(range(-16, 3))
    messages = messages or (lambda k: f"a conjugate-gradient solve stopped at a relative residual of about 1e{k} "
                            f"(at least 1e{k}, below 1e{k + 1}; NaN: 1e2), above {slack:g} * its tolerance")
    rel = stats.residual
    level = jnp.where(jnp.isfinite(rel), jnp.floor(jnp.log10(jnp.maximum(rel, 1e-16))), powers[-1])
    index = jnp.clip(level - powers[0], 0, len(powers) - 1).astype(jnp.int32)
    return eqx.branched_error_if(x, failed, index, [messages(k) for k in powers])
