"""Every rule without ground truth reports, and warns about, lower-level solves stopped early."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij

RULES = {
    "gcv": lambda t, s: ij.tuning.gcv(t.make, t.y[0], jax.random.key(0), s, grid_points=5, iters=2, return_info=True),
    "sure": lambda t, s: ij.tuning.sure(t.make, t.y[0], t.sigma, jax.random.key(0), s, grid_points=5, iters=2, return_info=True),
    "discrepancy": lambda t, s: ij.tuning.discrepancy(t.make, t.y[0], t.sigma, s, return_info=True),
    "lcurve": lambda t, s: ij.tuning.lcurve(t.make, t.y[0], s, jnp.logspace(-4, 0, 5), return_info=True),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_rule_on_a_solver_stopped_early_says_so(tik, rule):
    short = ij.solvers.CG(max_iters=2, tol=1e-12)  # two CG steps cannot reach 1e-12 here
    with pytest.warns(ij.tuning.TuningWarning, match="did not reach the solver's tol"):
        _, info = RULES[rule](tik, short)
    assert not bool(info.converged)
    # the same rule with a solver that converges stays silent and says converged
    _, info = RULES[rule](tik, tik.solver)
    assert bool(info.converged) and np.isfinite(float(info.value))
