"""Proximal maps against cvxpy solves, conjugate proxes and values against closed forms."""

import cvxpy as cp
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

import invjax.functionals as F

N = 24
TOL = 1e-5


def _cvx_prox(term, v, step, constraints=(), complex_=False):
    """``argmin_x step * term(x) + ||x - v||^2 / 2`` with cvxpy/Clarabel at tight tolerances."""
    x = cp.Variable(v.shape, complex=complex_)
    obj = step * term(x) + 0.5 * cp.sum_squares(x - v)
    prob = cp.Problem(cp.Minimize(obj), [c(x) for c in constraints])
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9, max_iter=500)
    assert prob.status == cp.OPTIMAL, prob.status
    return x.value


@pytest.mark.parametrize("step", [0.3, 2.0])
def test_squared_l2_prox(step, rng, x64):
    v, d, w = 2 * rng.standard_normal(N), rng.standard_normal(N), rng.random(N) + 0.1
    ours = F.SquaredL2(data=d, weights=w).prox(jnp.asarray(v), step)
    ref = _cvx_prox(lambda x: 0.5 * cp.sum(cp.multiply(w, cp.square(x - d))), v, step)
    np.testing.assert_allclose(ours, ref, atol=TOL)
    # closed form, and the conjugate prox: f*(u) = ½ sum u²/w + <u, d>
    np.testing.assert_allclose(ours, (v + step * w * d) / (1 + step * w), atol=1e-12)
    conj = F.SquaredL2(data=d, weights=w).prox_conj(jnp.asarray(v), step)
    np.testing.assert_allclose(conj, (v - step * d) / (1 + step / w), atol=1e-12)


@pytest.mark.parametrize("step", [0.3, 2.0])
def test_l1_prox(step, rng, x64):
    v, w = 2 * rng.standard_normal(N), rng.random(N) + 0.1
    ours = F.L1(weights=w).prox(jnp.asarray(v), step)
    np.testing.assert_allclose(ours, _cvx_prox(lambda x: w @ cp.abs(x), v, step), atol=TOL)
    # conjugate: indicator of |u| <= w, so prox_conj clips
    np.testing.assert_allclose(F.L1(weights=w).prox_conj(jnp.asarray(v), step), np.clip(v, -w, w), atol=1e-12)


def test_l1_prox_complex(rng, x64):
    v = rng.standard_normal(N) + 1j * rng.standard_normal(N)
    ours = F.L1().prox(jnp.asarray(v), 0.7)
    ref = _cvx_prox(lambda x: cp.sum(cp.abs(x)), v, 0.7, complex_=True)
    np.testing.assert_allclose(ours, ref, atol=TOL)
    # soft threshold of the modulus keeps the phase
    big = np.abs(v) > 0.7
    np.testing.assert_allclose(np.angle(np.asarray(ours)[big]), np.angle(v[big]), atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1])
def test_l21_prox(axis, rng, x64):
    v = 1.5 * rng.standard_normal((3, 8))
    v[:, 2] = 0.0  # a zero group
    ours = F.L21(axis=axis).prox(jnp.asarray(v), 0.9)
    ref = _cvx_prox(lambda x: cp.sum(cp.norm(x, 2, axis=axis)), v, 0.9)
    np.testing.assert_allclose(ours, ref, atol=TOL)
    # conjugate: indicator of the unit balls, so prox_conj projects each group
    norms = np.linalg.norm(v, axis=axis, keepdims=True)
    conj = F.L21(axis).prox_conj(jnp.asarray(v), 0.9)
    np.testing.assert_allclose(conj, v / np.maximum(norms, 1), atol=1e-12)
    assert float(F.L21(axis)(v)) == pytest.approx(np.linalg.norm(v, axis=axis).sum(), rel=1e-12)


@pytest.mark.parametrize("step", [0.3, 2.0])
def test_huber_prox_and_value(step, rng, x64):
    delta = 0.6
    v = 2 * rng.standard_normal(N)
    ours = F.Huber(delta).prox(jnp.asarray(v), step)
    # cvxpy's huber(x, M) is x^2 for |x| <= M and 2M|x| - M^2 beyond: twice ours
    ref = _cvx_prox(lambda x: 0.5 * cp.sum(cp.huber(x, delta)), v, step)
    np.testing.assert_allclose(ours, ref, atol=TOL)
    assert float(F.Huber(delta)(v)) == pytest.approx(scipy.special.huber(delta, v).sum(), rel=1e-12)
    # conjugate: ½u² + indicator(|u| <= delta)
    conj = F.Huber(delta).prox_conj(jnp.asarray(v), step)
    np.testing.assert_allclose(conj, np.clip(v / (1 + step), -delta, delta), atol=1e-12)


def test_nonnegative_and_box_prox(rng, x64):
    v = 2 * rng.standard_normal(N)
    lo, hi = -rng.random(N), rng.random(N)
    ref = _cvx_prox(lambda x: 0, v, 1.0, constraints=[lambda x: x >= 0])
    np.testing.assert_allclose(F.NonNegative().prox(jnp.asarray(v), 1.0), ref, atol=TOL)
    np.testing.assert_allclose(F.NonNegative().prox_conj(jnp.asarray(v), 3.0), np.minimum(v, 0), atol=1e-12)
    ref = _cvx_prox(lambda x: 0, v, 1.0, constraints=[lambda x: x >= lo, lambda x: x <= hi])
    np.testing.assert_allclose(F.Box(lo, hi).prox(jnp.asarray(v), 1.0), ref, atol=TOL)
    assert float(F.Box(lo, hi)(np.clip(v, lo, hi))) == 0.0
    assert float(F.Box(lo, hi)(v)) == np.inf
    assert float(F.NonNegative()(np.abs(v))) == 0.0 and float(F.NonNegative()(v)) == np.inf


@pytest.mark.parametrize("step", [0.2, 3.0])
def test_poisson_prox(step, rng, x64):
    y = rng.poisson(3.0, N).astype(float)
    y[:4] = 0.0
    b = 0.4
    v = 3 * rng.standard_normal(N) + 2
    ours = F.PoissonLikelihood(y, background=b).prox(jnp.asarray(v), step)
    ref = _cvx_prox(lambda x: cp.sum(x + b) - y @ cp.log(x + b), v, step, constraints=[lambda x: x + b >= 0])
    np.testing.assert_allclose(ours, ref, atol=TOL)
    assert np.all(np.asarray(ours) + b >= 0)


def test_poisson_value(rng, x64):
    y = rng.poisson(3.0, N).astype(float)
    y[:3] = 0.0
    b = 0.25
    x = rng.random(N) * 5
    z = x + b
    nll = -scipy.stats.poisson.logpmf(y, z).sum()
    raw = F.PoissonLikelihood(y, background=b, normalized=False)
    assert float(raw(x)) == pytest.approx(nll - scipy.special.gammaln(y + 1).sum(), rel=1e-12)
    kl = np.sum(z - y + scipy.special.xlogy(y, y) - scipy.special.xlogy(y, z))
    assert float(F.PoissonLikelihood(y, background=b)(x)) == pytest.approx(kl, rel=1e-12)
    assert float(F.PoissonLikelihood(y, background=b)(y - b)) == pytest.approx(0.0, abs=1e-12)
    # outside the domain
    bad = x.copy()
    bad[np.argmax(y)] = -b  # mean 0 where y > 0
    assert float(raw(bad)) == np.inf
    bad = x.copy()
    bad[0] = -b - 0.1  # negative mean where y = 0
    assert float(raw(bad)) == np.inf
    ok = x.copy()
    ok[0] = -b  # mean 0 where y = 0 is allowed
    assert np.isfinite(float(raw(ok)))
    np.testing.assert_allclose(raw.grad(x), 1 - y / z, rtol=1e-12)


def test_scaled_prox(rng, x64):
    v = 2 * rng.standard_normal(N)
    f = 0.7 * F.L1()
    ref = _cvx_prox(lambda x: 0.7 * cp.norm1(x), v, 2.0)
    np.testing.assert_allclose(f.prox(jnp.asarray(v), 2.0), ref, atol=TOL)
    np.testing.assert_allclose(f.prox(jnp.asarray(v), 2.0), F.L1().prox(jnp.asarray(v), 1.4), atol=1e-14)
    assert float(f(v)) == pytest.approx(0.7 * np.abs(v).sum(), rel=1e-12)
