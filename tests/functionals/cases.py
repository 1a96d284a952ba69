"""Registry of every public functional with a small example instance.

The cross-cutting tests (test_registry_checks.py) run each entry through the same checks. A
new functional joins by adding one entry here. Factories take a numpy Generator and the input
shape and build the functional at call time, so that a test can enable float64 first.
"""

from typing import Callable, NamedTuple

import jax.numpy as jnp
import numpy as np

import invjax.functionals as F


class Case(NamedTuple):
    make: Callable  # (rng, shape) -> Functional
    complex_ok: bool = True  # accepts complex inputs
    restricted: bool = False  # value is +inf somewhere (indicators, Poisson)


TV_TIGHT = dict(tol=1e-10, max_iters=20000)  # the generic checks compare with exact conditions

FUNCTIONALS = {
    "SquaredL2": Case(
        lambda rng, shape: F.SquaredL2(data=rng.standard_normal(shape), weights=rng.random(shape) + 0.1)
    ),
    "L1": Case(lambda rng, shape: F.L1(weights=rng.random(shape) + 0.1)),
    "L21": Case(lambda rng, shape: F.L21(axis=-1)),
    "TV": Case(lambda rng, shape: F.TV(**TV_TIGHT)),
    "TV-anisotropic-periodic": Case(
        lambda rng, shape: F.TV(isotropic=False, boundary="periodic", **TV_TIGHT)
    ),
    "Huber": Case(lambda rng, shape: F.Huber(0.5)),
    "NonNegative": Case(lambda rng, shape: F.NonNegative(), complex_ok=False, restricted=True),
    "Box": Case(
        lambda rng, shape: F.Box(-rng.random(shape), np.where(rng.random(shape) > 0.5, np.inf, 0.5)),
        complex_ok=False,
        restricted=True,
    ),
    "PoissonLikelihood": Case(
        lambda rng, shape: F.PoissonLikelihood(rng.poisson(2.0, shape).astype(float), background=0.3),
        complex_ok=False,
        restricted=True,
    ),
    "Scaled-L1": Case(lambda rng, shape: 0.7 * F.L1()),
}


def random_input(rng, shape, dtype=None, complex_=False, scale=1.0):
    """A random input array (complex when ``complex_``) of the default or given dtype."""
    x = rng.standard_normal(shape)
    if complex_:
        x = x + 1j * rng.standard_normal(shape)
    if dtype is None:
        dtype = jnp.result_type(complex) if complex_ else jnp.result_type(float)
    return jnp.asarray(scale * x, dtype)


def real_inner(a, b):
    """``Re <a, b>`` for real or complex arrays."""
    return jnp.sum(jnp.real(jnp.conj(a) * b))
