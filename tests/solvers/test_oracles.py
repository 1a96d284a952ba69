"""Solvers against independent oracles: closed-form Tikhonov, cvxpy TV, scipy NNLS."""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.sparse

import invjax as ij

fn = ij.functionals


def _gauss_psf(size, sigma):
    r = np.arange(size) - size // 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def _tikhonov_fft(psf, y, lam):
    n, m = y.shape
    k = psf.shape[0]
    padded = np.zeros((n, m))
    padded[:k, :k] = psf
    otf = np.fft.fft2(np.roll(padded, (-(k // 2), -(k // 2)), (0, 1)))
    return np.real(np.fft.ifft2(np.conj(otf) * np.fft.fft2(y) / (np.abs(otf) ** 2 + lam)))


def _deblur_data(n=32, noise=0.02, seed=0, psf_size=5, sigma=1.0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, n))
    x[n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = 1.0
    x[3 * n // 8 : 5 * n // 8, n // 8 : 7 * n // 16] = 0.5
    psf = _gauss_psf(psf_size, sigma)
    A = ij.operators.Convolution(psf, (n, n))
    y = np.asarray(A(x)) + noise * rng.standard_normal((n, n))
    return x, psf, A, y


def test_cg_tikhonov_equals_closed_form_fft(x64):
    x, psf, A, y = _deblur_data(psf_size=9, sigma=2.0)
    lam = 0.01
    sol = ij.solve(ij.Problem(A, y, fn.SquaredL2(), weight=lam), ij.solvers.CG(max_iters=500, tol=1e-10))
    ref = _tikhonov_fft(psf, y, lam)
    assert bool(sol.stats.converged)
    assert np.linalg.norm(sol.x - ref) / np.linalg.norm(ref) < 1e-4


def test_cg_tikhonov_float32_accuracy():
    """float32 meets the issue's 1e-4 too (measured 2.2e-5 at tol=1e-6, cond(H) = 100).

    (Before CG applied H by a JVP, as grad(x) - grad(0), rounding capped this at ~6e-4.)"""
    x, psf, A, y = _deblur_data(psf_size=9, sigma=2.0)
    lam = 0.01
    A32 = ij.operators.Convolution(psf.astype(np.float32), y.shape)
    sol = ij.solve(ij.Problem(A32, y.astype(np.float32), fn.SquaredL2(), weight=lam), ij.solvers.CG(max_iters=500, tol=1e-6))
    ref = _tikhonov_fft(psf, y, lam)
    assert sol.x.dtype == jnp.float32 and bool(sol.stats.converged)
    assert np.linalg.norm(sol.x - ref) / np.linalg.norm(ref) < 1e-4


def _cvxpy_tv(A, y, lam, tv):
    n = y.shape[0]
    # sparse matrices of the exact operators (a 5x5 PSF has 25 entries a row): fast to solve. The
    # FFT convolution's matrix has ~1e-17 rounding everywhere else: drop it (kept, the matrix is
    # dense and Clarabel took 25 s instead of ~1 s, measured)
    dense = np.asarray(A.as_matrix())
    M = scipy.sparse.csr_matrix(np.where(np.abs(dense) > 1e-12 * np.abs(dense).max(), dense, 0))
    Dm = scipy.sparse.csr_matrix(np.asarray(tv.operator((n, n)).as_matrix()))
    xv = cp.Variable(n * n)
    g = cp.reshape(Dm @ xv, (2, n * n), order="C")
    obj = 0.5 * cp.sum_squares(M @ xv - y.ravel()) + lam * cp.sum(cp.norm(g, 2, axis=0))
    cp.Problem(cp.Minimize(obj)).solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return obj.value


@pytest.fixture(scope="module")
def tv_problem():
    with_x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        x, psf, A, y = _deblur_data()
        out = {}
        for boundary in ("neumann", "periodic"):
            tv = fn.TV(boundary=boundary, tol=1e-9, max_iters=5000)
            out[boundary] = (A, y, tv, _cvxpy_tv(A, y, 0.02, tv))
        yield out
    finally:
        jax.config.update("jax_enable_x64", with_x64)


@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
@pytest.mark.parametrize(
    "solver",
    [
        ij.solvers.ADMM(max_iters=3000, tol=1e-7),
        ij.solvers.PDHG(max_iters=5000, tol=1e-7),
        # (~20 s each with its 5000-iteration TV prox; FISTA's TV optimum is checked against
        # central differences in the solver matrix by default)
        pytest.param(ij.solvers.FISTA(max_iters=3000, tol=1e-8), marks=pytest.mark.slow),
    ],
    ids=["ADMM", "PDHG", "FISTA"],
)
def test_tv_deconvolution_reaches_cvxpy_optimum(tv_problem, boundary, solver, x64):
    A, y, tv, f_opt = tv_problem[boundary]
    sol = ij.solve(ij.Problem(A, y, tv, weight=0.02), solver)
    rel = (float(sol.stats.objective) - f_opt) / abs(f_opt)
    assert -1e-6 < rel < 1e-4


def test_nonnegative_least_squares_matches_scipy_nnls(x64):
    rng = np.random.default_rng(3)
    M = rng.standard_normal((30, 12))
    b = rng.standard_normal(30)
    ref, _ = scipy.optimize.nnls(M, b)
    assert np.sum(ref == 0) > 2  # the constraint is active
    problem = ij.Problem(ij.operators.Dense(M), b, constraint=fn.NonNegative())
    for solver in (
        ij.solvers.FISTA(max_iters=20000, tol=1e-12),
        ij.solvers.Landweber(max_iters=50000, tol=1e-13),
        ij.solvers.ADMM(max_iters=20000, tol=1e-11),
        ij.solvers.PDHG(max_iters=50000, tol=1e-11),
    ):
        sol = ij.solve(problem, solver)
        assert np.abs(np.asarray(sol.x) - ref).max() < 1e-6, type(solver).__name__
        assert float(jnp.min(sol.x)) >= 0
