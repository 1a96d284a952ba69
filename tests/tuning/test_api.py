"""One argument order and one result type for every tuning rule: old call forms fail with a message
naming the new one; every rule returns a RuleResult."""

import jax
import jax.numpy as jnp
import pytest

import invjax as ij

KEY = jax.random.key(0)


@pytest.mark.parametrize(
    "call, match",
    [
        # solver passed positionally (the old form of every rule)
        (lambda t: ij.tuning.discrepancy(t.make, t.y[0], t.sigma, t.solver), r"discrepancy: takes 3 positional .* solver=\.\.\."),
        (lambda t: ij.tuning.sure(t.make, t.y[0], t.sigma, KEY, t.solver), r"sure: takes 4 positional .* solver=\.\.\."),
        (lambda t: ij.tuning.gcv(t.make, t.y[0], KEY, t.solver), r"gcv: takes 3 positional"),
        (lambda t: ij.tuning.lcurve(t.make, t.y[0], t.solver, jnp.ones(5)), r"lcurve: takes 2 positional .* weights=\.\.\."),
        (lambda t: ij.tuning.grid(t.make, t.x, t.y, jnp.ones(3), t.solver), r"grid: takes 3 positional .* weights=\.\.\."),
        (lambda t: ij.tuning.fit(t.make, t.x, t.y, 0.1, t.solver), r"fit: takes 3 positional .* init=\.\.\."),
        (lambda t: ij.tuning.sure_risk(t.make, 0.1, t.y[0], t.sigma, KEY, t.solver), r"sure_risk: takes 4 positional"),
        # return_info is gone, renamed settings are named
        (lambda t: ij.tuning.discrepancy(t.make, t.y[0], t.sigma, solver=t.solver, return_info=True), "`return_info` is gone"),
        (lambda t: ij.tuning.discrepancy(t.make, t.y[0], t.sigma, solver=t.solver, maxiter=3), "`maxiter` is now `max_iters`"),
        (lambda t: ij.tuning.discrepancy(t.make, t.y[0], t.sigma, solver=t.solver, rtol=0.1), "`rtol` is now `tol`"),
        (lambda t: ij.tuning.sure(t.make, t.y[0], t.sigma, KEY, solver=t.solver, iters=3), "`iters` is now `refine`"),
        (lambda t: ij.tuning.fit(t.make, t.x, t.y, init=0.1, solver=t.solver, steps=3), "`steps` is now `max_iters`"),
    ],
)
def test_old_call_forms_fail_naming_the_new_one(tik, call, match):
    with pytest.raises(TypeError, match=match):
        call(tik)


def test_every_rule_returns_a_rule_result(tik):
    assert issubclass(ij.tuning.GridResult, ij.tuning.RuleResult)
    assert issubclass(ij.tuning.SureGrid, ij.tuning.RuleResult)
    assert issubclass(ij.tuning.FitResult, ij.tuning.RuleResult)
    res = ij.tuning.RuleResult(weight=jnp.ones(()), value=jnp.zeros(()), converged=jnp.asarray(True),
                               at_bound=jnp.asarray(False))
    assert res.message.startswith("ok")
    bad = ij.tuning.RuleResult(weight=jnp.ones(()), value=jnp.zeros(()), converged=jnp.asarray(False),
                               at_bound=jnp.asarray(True))
    assert "did not reach the solver's tol" in bad.message and "widen `bounds`" in bad.message
    # a pytree: under vmap every field gains the batch axis
    batched = jax.vmap(lambda w: ij.tuning.RuleResult(weight=w, value=2 * w, converged=w > 0, at_bound=w < 0))(jnp.ones(3))
    assert batched.value.shape == (3,) and batched.message.startswith("ok")
