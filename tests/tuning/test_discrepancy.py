"""The discrepancy principle against its closed-form root for Tikhonov deconvolution."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq

import invjax as ij


def _root(tik, y, tau=1.0):
    target = tau * y.size * tik.sigma**2
    return float(np.exp(brentq(lambda t: np.log(tik.residual2(np.exp(t), y) / target), np.log(1e-8), np.log(1e3), xtol=1e-10)))


@pytest.mark.parametrize("bounds", [(1e-6, 1e2), (1e-5, 1e-4)])  # the second must be pushed out
def test_discrepancy_matches_closed_form_root(tik, bounds):
    rule = jax.jit(jax.vmap(lambda y: ij.tuning.discrepancy(tik.make, y, tik.sigma, tik.solver, bounds=bounds, return_info=True)))
    w, info = rule(tik.y)
    for b in range(2):
        exact = _root(tik, tik.y[b])
        assert float(w[b]) == pytest.approx(exact, rel=0.02)
        # the residual of the solve at the returned weight meets the target
        sol = ij.solve(tik.make(w[b], tik.y[b]), tik.solver)
        r2 = float(jnp.sum((tik.A(sol.x) - tik.y[b]) ** 2))
        assert r2 / (tik.y[b].size * tik.sigma**2) == pytest.approx(1.0, abs=2e-3)
    assert np.all(np.abs(info.value - 1) <= 1e-3)
    assert not np.any(info.at_bound)


def test_discrepancy_tau_and_unreachable_targets(tik):
    y = tik.y[0]
    w_tau = ij.tuning.discrepancy(tik.make, y, tik.sigma, tik.solver, tau=1.5)
    assert float(w_tau) == pytest.approx(_root(tik, y, 1.5), rel=0.02)
    # a noise level far above the data's energy: no weight leaves that large a residual
    w, info = ij.tuning.discrepancy(tik.make, y, 100.0, tik.solver, bounds=(1e-3, 1e-1), expand=2, return_info=True)
    assert bool(info.at_bound) and float(w) == pytest.approx(1e-1 * 100**2, rel=1e-4)
    assert int(info.solves) == 4  # two ends, two expansions
    # a tiny noise level: even the smallest weight leaves too large a residual
    w, info = ij.tuning.discrepancy(tik.make, y, 1e-6, tik.solver, bounds=(1e-3, 1e-1), expand=1, return_info=True)
    assert bool(info.at_bound) and float(w) == pytest.approx(1e-5, rel=1e-4)


@pytest.mark.parametrize("sigma", [0.0, -0.01, np.nan, np.inf])
def test_discrepancy_rejects_bad_sigma(tik, sigma):
    with pytest.raises(ValueError, match="`sigma` must be finite and > 0"):
        ij.tuning.discrepancy(tik.make, tik.y[0], sigma, tik.solver)


def test_discrepancy_traced_bad_sigma_raises_at_run_time(tik):
    f = eqx.filter_jit(lambda s: ij.tuning.discrepancy(tik.make, tik.y[0], s, tik.solver, maxiter=2))
    with pytest.raises(eqx.EquinoxRuntimeError, match="`sigma` must be finite and > 0"):
        f(jnp.asarray(-1.0))


def test_discrepancy_bad_settings(tik):
    y = tik.y[0]
    with pytest.raises(ValueError, match="`tau`"):
        ij.tuning.discrepancy(tik.make, y, 0.01, tik.solver, tau=0.0)
    with pytest.raises(ValueError, match="`rtol`"):
        ij.tuning.discrepancy(tik.make, y, 0.01, tik.solver, rtol=2.0)
    with pytest.raises(ValueError, match="scalar noise"):
        ij.tuning.discrepancy(tik.make, y, jnp.ones(3), tik.solver)
