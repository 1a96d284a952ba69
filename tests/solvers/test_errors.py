"""Bad input gives a clear error or an honest non-converged status, never a silent NaN."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij

fn = ij.functionals


@pytest.fixture
def deblur():
    A = ij.operators.Convolution(np.ones((3, 3), np.float32) / 9, (12, 12))
    y = np.asarray(A(np.random.default_rng(0).random((12, 12), dtype=np.float32)))
    return A, y


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(weight=-0.1), ValueError, r"`weight` must be finite and >= 0, got -0.1"),
        (dict(weight=np.nan), ValueError, r"`weight` must be finite and >= 0"),
        (dict(weight=np.inf), ValueError, r"`weight` must be finite and >= 0"),
        (dict(weight=1j), TypeError, r"`weight` must be real"),
        (dict(data=np.zeros((12, 11))), ValueError, r"`data` must have the operator's out_shape \(12, 12\), got \(12, 11\)"),
        (dict(data=np.full((12, 12), np.nan)), ValueError, r"`data` must be finite"),
        (dict(regularizer="tv"), TypeError, r"`regularizer` must be a Functional"),
        (dict(constraint=fn.L1()), TypeError, r"`constraint` must be an indicator functional"),
    ],
)
def test_problem_rejects_bad_input(deblur, kwargs, exc, match):
    A, y = deblur
    args = dict(op=A, data=y, regularizer=fn.TV(), weight=0.01)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ij.Problem(**args)


def test_traced_nan_data_and_negative_weight_raise_at_run_time(deblur):
    A, y = deblur
    f = eqx.filter_jit(lambda y, w: ij.solve(ij.Problem(A, y, fn.TV(), w), ij.solvers.PDHG(max_iters=5)).x)
    assert np.all(np.isfinite(f(y, 0.01)))
    with pytest.raises(eqx.EquinoxRuntimeError, match="`data` contains NaN"):
        f(np.where(np.eye(12) > 0, np.nan, y), 0.01)
    with pytest.raises(eqx.EquinoxRuntimeError, match="`weight` must be finite and >= 0"):
        f(y, -1.0)


@pytest.mark.parametrize("solver_cls", [ij.solvers.CG, ij.solvers.PDHG, ij.solvers.ADMM, ij.solvers.FISTA, ij.solvers.Landweber])
@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(max_iters=0), r"`max_iters` must be an int >= 1, got 0"), (dict(max_iters=2.5), r"`max_iters` must be an int"),
     (dict(tol=-1.0), r"`tol` must be a finite number >= 0"), (dict(diff="backprop"), r"`diff` must be one of")],
)
def test_bad_solver_settings(solver_cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        solver_cls(**kwargs)


def test_step_sizes_violating_convergence_condition(deblur):
    A, y = deblur
    problem = ij.Problem(A, y, fn.TV(boundary="periodic"), 0.01)
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"tau \* sigma \* \|\|K\|\|\^2 < 1"):
        ij.solve(problem, ij.solvers.PDHG(tau=3.0, sigma=1.0))
    smooth = ij.Problem(A, y, fn.SquaredL2(), 0.01)
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"`step_size` must be < 2 / L"):
        ij.solve(smooth, ij.solvers.Landweber(step_size=10.0))
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"`step_size` must be < 2 / L"):
        ij.solve(smooth, ij.solvers.FISTA(step_size=10.0))
    with pytest.raises(ValueError, match=r"`relaxation` must be in \(0, 2\)"):
        ij.solve(problem, ij.solvers.ADMM(relaxation=2.5))


def test_solver_problem_mismatch_is_a_type_error(deblur):
    A, y = deblur
    with pytest.raises(TypeError, match="CG needs a quadratic"):
        ij.solve(ij.Problem(A, y, fn.TV(), 0.01), ij.solvers.CG())
    with pytest.raises(TypeError, match="Landweber needs a smooth regulariser"):
        ij.solve(ij.Problem(A, y, fn.L1(), 0.01), ij.solvers.Landweber())
    with pytest.raises(TypeError, match="FISTA: the non-smooth regulariser TV with the constraint NonNegative has no exact prox"):
        ij.solve(ij.Problem(A, y, fn.TV(), 0.01, constraint=fn.NonNegative()), ij.solvers.FISTA())
    with pytest.raises(TypeError, match="`solver` must be an invjax solver"):
        ij.solve(ij.Problem(A, y, fn.TV(), 0.01), "pdhg")
    with pytest.raises(ValueError, match=r"`x0` must have shape \(12, 12\), got \(3,\)"):
        ij.solve(ij.Problem(A, y, fn.TV(), 0.01), ij.solvers.PDHG(), x0=jnp.zeros(3))


def test_non_convergence_is_reported_not_hidden(deblur):
    A, y = deblur
    sol = ij.solve(ij.Problem(A, y, fn.TV(), 0.01), ij.solvers.PDHG(max_iters=3, tol=1e-12))
    assert not bool(sol.stats.converged)
    assert int(sol.stats.iterations) == 3
    assert int(sol.stats.status) == 1
    assert "max_iters reached" in sol.stats.message
    ok = ij.solve(ij.Problem(A, y, fn.TV(), 0.01), ij.solvers.PDHG(max_iters=5000, tol=1e-4))
    assert bool(ok.stats.converged) and ok.stats.message.startswith("converged")
    assert float(ok.stats.residual) <= 1e-4


def test_divergence_is_reported_as_nonfinite(deblur):
    """Steps far beyond the convergence condition (checked only when given): poison a state's
    step product and warm-start from it; the solve stops at the first check with status 2."""
    A, y = deblur
    problem = ij.Problem(A, y, fn.TV(), 0.01)
    solver = ij.solvers.PDHG(max_iters=500, adaptive=False)
    bad_state = solver.init(problem, jnp.zeros((12, 12)))
    bad_state = eqx.tree_at(lambda s: s.eta, bad_state, jnp.asarray(1e30, jnp.float32))
    sol = ij.solve(problem, solver, warm_start=bad_state)
    assert int(sol.stats.status) == 2
    assert not bool(sol.stats.converged)
    assert "NaN or inf" in sol.stats.message
    assert int(sol.stats.iterations) < 500
