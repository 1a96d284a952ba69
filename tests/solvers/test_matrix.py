"""The solver matrix: every solver x every regulariser it accepts x real/complex x float32/float64.

Each supported combination solves under ``jit`` keeping its dtype (float32 under
``jax_enable_x64`` too), ``vmap`` over a batch of 3 (weights and data) equals 3 solves, and in
float64 ``jax.grad`` and ``jax.jvp`` with respect to the weight and the data (implicit
differentiation, the default) match central differences of converged solves. Each combination a
solver does not accept raises a ``TypeError`` at trace time naming the solver and the functional.
The registry of cases is tests/registry.py.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij
from tests.conftest import x64_enabled
from tests.registry import REGULARIZERS, SOLVERS

N = 8
KINDS = ("real", "complex")


def _data(kind, dtype):
    """``(A, x_true, y)`` of an 8x8 deblurring (real) or undersampled MRI (complex) problem."""
    rng = np.random.default_rng(3)
    x = np.zeros((N, N))
    x[2:6, 2:6] = 0.6
    x[3:5, 1:4] = 0.25
    if kind == "real":
        r = np.arange(3) - 1
        psf = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 0.7**2))
        A = ij.operators.Convolution((psf / psf.sum()).astype(dtype), (N, N))
        y = np.asarray(A(jnp.asarray(x, dtype))) + 0.02 * rng.standard_normal((N, N))
        return A, jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    cdt = jnp.complex64 if dtype == np.float32 else jnp.complex128
    mask = rng.random((N, N)) < 0.6
    mask[0, 0] = True
    A = ij.operators.CartesianMRI(mask, dtype=cdt)
    xc = x * np.exp(1j * np.linspace(0, 1, N))[None, :]
    noise = 0.02 * (rng.standard_normal((N, N)) + 1j * rng.standard_normal((N, N)))
    y = np.asarray(A(jnp.asarray(xc, cdt))) + mask * noise
    return A, jnp.asarray(xc, cdt), jnp.asarray(y, cdt)


def _problem(name, A, y, w):
    reg, constraint = REGULARIZERS[name].make()
    return ij.Problem(A, y, reg, w, constraint=constraint)


# complex float32 cases in the default run: one per solver (the float64 test runs every complex
# case by default; the rest of the float32 ones are marked slow to keep the default run within
# its 10-minute budget)
_COMPLEX32_DEFAULT = {"CG": "SquaredL2", "Landweber": "SquaredL2", "FISTA": "L1", "ADMM": "L1", "PDHG": "L1"}


def _cases(supported, lighter_complex=False):
    out = []
    for s in sorted(SOLVERS):
        for r in sorted(REGULARIZERS):
            for kind in KINDS:
                if kind == "complex" and not REGULARIZERS[r].complex_ok:
                    continue
                if (s in REGULARIZERS[r].solvers) == supported:
                    slow = lighter_complex and kind == "complex" and _COMPLEX32_DEFAULT.get(s) != r
                    out.append(pytest.param(s, r, kind, id=f"{s}-{r}-{kind}", marks=[pytest.mark.slow] if slow else []))
    return out


@pytest.mark.parametrize("solver,reg,kind", _cases(supported=False))
def test_unsupported_combination_is_a_type_error_at_trace_time(solver, reg, kind):
    A, _, y = _data(kind, np.float32)
    problem = _problem(reg, A, y, REGULARIZERS[reg].weight)
    with pytest.raises(TypeError, match=solver) as err:
        jax.eval_shape(lambda p: ij.solve(p, SOLVERS[solver]()), problem)
    # the message names the functional that is not accepted
    reg_f, constraint = REGULARIZERS[reg].make()
    names = {type(reg_f).__name__} | ({type(constraint).__name__} if constraint is not None else set())
    assert any(n in str(err.value) for n in names), str(err.value)


@pytest.mark.parametrize("solver,reg,kind", _cases(supported=True, lighter_complex=True))
def test_float32_jit_vmap_and_dtype_under_x64(solver, reg, kind):
    with x64_enabled():
        A, _, y = _data(kind, np.float32)
        # (an array, as below: a Python float is a static argument of filter_jit, one more compile)
        w = jnp.float32(REGULARIZERS[reg].weight)
        # check_every=1 (one copy of the step in the program: ~15 % less compilation) except for
        # ADMM, whose penalty adapts at checks; the default check_every runs everywhere else
        # CG at 1e-6: at 1e-4 its float32 iterate is only ~1e-3 from the solution, and the batched
        # and sequential programs (multi-threaded reductions summed in another order) landed 3e-5
        # apart on that path; at 1e-6 both are near the solution
        s = SOLVERS[solver](tol=1e-6 if solver == "CG" else 1e-4, **({} if solver == "ADMM" else dict(check_every=1)))
        traces = []

        def one(y, w):
            traces.append(1)
            return ij.solve(_problem(reg, A, y, w), s)

        # a batch of 3 (different weights and data) under vmap, and the same 3 problems solved one
        # after another (lax.map) as the reference, in one program (one compilation, not two)
        ws = jnp.asarray([0.5 * w, w, 2 * w], jnp.float32)
        ys = jnp.stack([y, 0.9 * y, y + 0.01])
        both = eqx.filter_jit(lambda ys, ws: (jax.vmap(one)(ys, ws), jax.lax.map(lambda a: one(*a), (ys, ws))))
        batched, singles = both(ys, ws)
        assert singles.x.dtype == y.dtype if kind == "complex" else singles.x.dtype == jnp.float32
        assert batched.x.dtype == singles.x.dtype
        assert bool(jnp.all(singles.stats.converged)), (singles.stats.iterations, singles.stats.residual)
        scale = float(jnp.max(jnp.abs(singles.x)))
        np.testing.assert_allclose(np.asarray(batched.x), np.asarray(singles.x), atol=1e-5 * scale)
        np.testing.assert_array_equal(np.asarray(batched.stats.iterations), np.asarray(singles.stats.iterations))
        assert len(traces) == 2  # traced once under vmap and once under map


def _tight(solver):
    # central differences need the loss to ~1e-12: PDHG's iterate lags its residual by ~10x,
    # ADMM with a box reaches such tolerances only while its penalty keeps adapting
    # check_every=1: one copy of the step in the program, which compiles ~15 % faster; not for
    # ADMM, whose penalty adapts at every check
    extra = {"ADMM": dict(adapt_iters=10**6)}.get(solver, dict(check_every=1))
    return SOLVERS[solver](tol=1e-13 if solver == "PDHG" else 1e-12, **extra)


@pytest.mark.parametrize("solver,reg,kind", _cases(supported=True))
def test_float64_grad_and_jvp_match_central_differences(solver, reg, kind, x64):
    A, x_true, y = _data(kind, np.float64)
    s = _tight(solver)
    w0 = REGULARIZERS[reg].weight

    def loss(w, y):
        sol = ij.solve(_problem(reg, A, y, w), s)
        return jnp.sum(jnp.abs(sol.x - x_true) ** 2), sol.stats.converged

    rng = np.random.default_rng(7)
    dy = rng.standard_normal(y.shape)
    if kind == "complex":
        dy = dy + 1j * rng.standard_normal(y.shape)
    dy = jnp.asarray(dy, y.dtype)
    if isinstance(A, ij.operators.CartesianMRI):
        dy = dy * A.mask  # data outside the sampled set is not seen
    # small steps: a larger data step moves pixels across the kinks of L1 and the box (measured:
    # at 1e-3 the difference quotient of L1 + PDHG was off by 37 %)
    hw, hy = 1e-4 * w0, 1e-5

    @jax.jit
    def derivatives(w, y):
        # reverse mode and one forward-mode pass (along the weight and the data at once) in one
        # program: compiling dominates these tests, and one program compiles ~40 % faster than two
        (value, ok), (gw, gy) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(w, y)
        jvp = jax.jvp(lambda v, u: loss(v, u)[0], (w, y), (jnp.ones_like(w), dy))[1]
        # the data gradient in the direction dy (JAX's cotangent of a complex input is the
        # conjugate of the real gradient: Re sum gy * dy)
        return value, ok, gw, jnp.sum(jnp.real(gy * dy)), jvp

    value, ok, gw, gy_d, jvp = derivatives(jnp.asarray(w0), y)
    assert bool(ok)
    # the differences reuse the compiled program
    lp, lm = (float(derivatives(jnp.asarray(w), y)[0]) for w in (w0 + hw, w0 - hw))
    yp, ym = (float(derivatives(jnp.asarray(w0), v)[0]) for v in (y + hy * dy, y - hy * dy))
    fd_w = (lp - lm) / (2 * hw)
    fd_y = (yp - ym) / (2 * hy)
    checks = ((gw, fd_w, "grad w"), (gy_d, fd_y, "grad y"), (jvp, fd_w + fd_y, "jvp w + y"))
    for got, fd, what in checks:
        assert float(got) == pytest.approx(fd, rel=1e-4, abs=1e-7 * abs(float(value))), what
