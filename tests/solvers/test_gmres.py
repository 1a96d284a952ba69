"""The implicit-derivative GMRES against numpy's dense solvers, including singular systems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invjax.solvers._gmres import gmres


def _nonsymmetric(n, rng, dtype=np.float32):
    M = 2 * np.eye(n) + rng.standard_normal((n, n)) / np.sqrt(n)
    if np.issubdtype(dtype, np.complexfloating):
        M = M + 1j * rng.standard_normal((n, n)) / np.sqrt(n)
    return M.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
@pytest.mark.parametrize("restart", [5, 40])
def test_matches_a_dense_solve(dtype, restart):
    rng = np.random.default_rng(0)
    M = _nonsymmetric(40, rng, dtype)
    b = (rng.standard_normal(40) + (1j * rng.standard_normal(40) if dtype == np.complex64 else 0)).astype(dtype)
    x, rel = jax.jit(lambda b: gmres(lambda v: jnp.asarray(M) @ v, b, rtol=1e-6, restart=restart, max_iters=400))(b)
    ref = np.linalg.solve(M.astype(np.complex128), b.astype(np.complex128))
    assert x.dtype == dtype
    assert np.linalg.norm(np.asarray(x) - ref) <= 1e-5 * np.linalg.norm(ref)
    # the reported residual is the true one
    true_rel = np.linalg.norm(b - M @ np.asarray(x)) / np.linalg.norm(b)
    assert float(rel) == pytest.approx(true_rel, rel=1e-2, abs=1e-7)
    assert float(rel) <= 1e-6


def test_pytree_and_vmap():
    rng = np.random.default_rng(1)
    M1, M2 = _nonsymmetric(10, rng), _nonsymmetric(6, rng)
    b = (jnp.asarray(rng.standard_normal((3, 10)), jnp.float32), jnp.asarray(rng.standard_normal((3, 6)), jnp.float32))

    def one(b):
        return gmres(lambda v: (M1 @ v[0], M2 @ v[1] + 0.1 * v[0][:6]), b, rtol=1e-6, restart=8, max_iters=200)

    (x1, x2), rel = jax.vmap(one)(b)
    assert x1.shape == (3, 10) and x2.shape == (3, 6) and rel.shape == (3,)
    for k in range(3):
        r1 = np.linalg.solve(M1, np.asarray(b[0][k]))
        r2 = np.linalg.solve(M2, np.asarray(b[1][k]) - 0.1 * r1[:6])
        np.testing.assert_allclose(x1[k], r1, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(x2[k], r2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("restart", [5, 10, 50])
def test_singular_inconsistent_system_stays_finite_at_the_least_squares_residual(restart):
    # I - J of a fixed-point map with a continuum of fixed points, with a right-hand side slightly
    # outside its range (what a solve stopped at a finite tolerance gives): the Krylov space
    # becomes invariant before the residual reaches the tolerance (jax.scipy's gmres returns NaN
    # here for restart 50)
    rng = np.random.default_rng(0)
    n = 50
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    M = (Q @ np.diag(np.r_[np.linspace(0.01, 1, n - 3), 0, 0, 0]) @ Q.T).astype(np.float32)
    b = (M @ rng.standard_normal(n) + 1e-3 * Q[:, -1]).astype(np.float32)
    x, rel = gmres(lambda v: jnp.asarray(M) @ v, jnp.asarray(b), rtol=1e-6, restart=restart, max_iters=400)
    assert np.all(np.isfinite(np.asarray(x)))
    lsq = np.linalg.lstsq(M.astype(np.float64), b.astype(np.float64), rcond=1e-6)[0]
    best = np.linalg.norm(b - M.astype(np.float64) @ lsq) / np.linalg.norm(b)
    assert best > 1e-5  # inconsistent: no solution reaches rtol
    assert float(rel) == pytest.approx(best, rel=1e-2)
    # the least-squares optimality condition M^T r = 0 (relative to ||M|| ||r||)
    r = b - M @ np.asarray(x)
    assert np.linalg.norm(M.T @ r) <= 1e-2 * np.linalg.norm(r)


def test_zero_right_hand_side():
    x, rel = gmres(lambda v: 2 * v, jnp.zeros(5), rtol=1e-6, restart=5, max_iters=50)
    np.testing.assert_array_equal(x, 0)
    assert float(rel) == 0


def test_float64(x64):
    rng = np.random.default_rng(3)
    M = _nonsymmetric(30, rng, np.float64)
    b = rng.standard_normal(30)
    x, rel = gmres(lambda v: jnp.asarray(M) @ v, jnp.asarray(b), rtol=1e-12, restart=30, max_iters=300)
    assert x.dtype == jnp.float64 and float(rel) <= 1e-12
    np.testing.assert_allclose(x, np.linalg.solve(M, b), rtol=1e-10)
