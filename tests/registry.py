"""One registry of every public operator, functional and solver, with small example instances.

Cross-cutting tests run each entry through the same checks: tests/operators/test_registry_checks.py
(adjoint, jit, vmap, grad, dtypes), tests/functionals/test_registry_checks.py (prox optimality,
Moreau, jit, vmap, grad) and tests/solvers/test_matrix.py (every solver x every regulariser it
accepts x real/complex x float32/float64: jit, vmap, grad and jvp against central differences,
and a clear TypeError for each combination it does not accept). A new operator, functional or
solver joins by adding one entry here; tests/test_registry.py checks that every public name of
each subpackage is covered. Factories build at call time, so that a test can enable float64
first.
"""

from typing import Callable, NamedTuple

import jax.numpy as jnp
import numpy as np

import invjax as ij

ops = ij.operators
F = ij.functionals


# ---- operators ---------------------------------------------------------------------------------


def _gauss_psf(size=5, sigma=1.0):
    r = np.arange(size) - size // 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def _coils(rng, c, shape):
    return rng.standard_normal((c,) + shape) + 1j * rng.standard_normal((c,) + shape)


OPERATORS = {
    "Convolution": lambda rng: ops.Convolution(_gauss_psf(5), shape=(12, 10)),
    "Mask": lambda rng: ops.Mask(rng.random((9, 11)) > 0.4),
    "Downsample": lambda rng: ops.Downsample((12, 8), 2),
    "FiniteDifference-periodic": lambda rng: ops.FiniteDifference((9, 7)),
    "FiniteDifference-neumann": lambda rng: ops.FiniteDifference((9, 7), boundary="neumann"),
    "CartesianMRI": lambda rng: ops.CartesianMRI(rng.random((8, 12)) > 0.5),
    "CartesianMRI-multicoil": lambda rng: ops.CartesianMRI(
        rng.random((8, 8)) > 0.5, _coils(rng, 3, (8, 8)), centered=True
    ),
    "Dense": lambda rng: ops.Dense(rng.standard_normal((7, 5))),
    "Identity": lambda rng: ops.Identity((6, 5)),
    "Identity-complex": lambda rng: ops.Identity((6, 5), dtype=jnp.result_type(complex)),
    "Composed": lambda rng: ops.Mask(rng.random((12, 10)) > 0.5) @ ops.Convolution(_gauss_psf(3), (12, 10)),
    "Adjoint": lambda rng: ops.Downsample((12, 8), 2).T,
    "Scaled": lambda rng: 1.5 * ops.Convolution(_gauss_psf(3), (10, 10)),
    "ChannelScaled": lambda rng: ops.ChannelScaled(ops.FiniteDifference((9, 8)), rng.random(2) + 0.5),
    "Sum": lambda rng: ops.Convolution(_gauss_psf(3), (10, 10)) + 0.5 * ops.Identity((10, 10)),
    "ParallelBeam2D": lambda rng: ops.ParallelBeam2D((16, 12), np.linspace(0, np.pi, 7, endpoint=False)),
}

# public operator names that are not operator classes with an instance above, and why
OPERATOR_EXEMPT = {
    "LinearOperator": "the abstract base",
    "check_adjoint": "a function: applied to every registered operator",
    "fbp": "a function: tests/operators/test_tomography.py",
    "gaussian_psf": "a function: tests/operators/test_convolution.py",
    "coil_sensitivities": "a function: tests/learned/test_modl.py (normalisation, determinism, errors)",
    "variable_density_mask": "a function: tests/learned/test_modl.py (rate, centre, density, errors)",
    "weighted": "a function: builds ChannelScaled or Mask @ K (tests/solvers/test_matrix.py weights)",
}


# ---- functionals -------------------------------------------------------------------------------


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

FUNCTIONAL_EXEMPT = {
    "Functional": "the abstract base",
    "TVProxResult": "a result record of TV.solve_prox (tests/functionals/test_tv.py)",
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


# ---- solvers and the problems of the solver matrix ---------------------------------------------

# small settings that converge on the matrix's 8x8 problems; the float64 gradient checks tighten
# tol (see tests/solvers/test_matrix.py)
SOLVERS = {
    "CG": lambda **kw: ij.solvers.CG(**{"max_iters": 500, **kw}),
    "Landweber": lambda **kw: ij.solvers.Landweber(**{"max_iters": 20000, **kw}),
    "FISTA": lambda **kw: ij.solvers.FISTA(**{"max_iters": 20000, **kw}),
    "ADMM": lambda **kw: ij.solvers.ADMM(**{"max_iters": 50000, **kw}),
    "PDHG": lambda **kw: ij.solvers.PDHG(**{"max_iters": 20000, **kw}),
}

SOLVER_EXEMPT = {
    "IterativeSolver": "the abstract base",
    "AbstractAdjoint": "the abstract base of the derivative policies",
    "ImplicitAdjoint": "the default adjoint of every matrix case; tests/solvers/test_adjoint.py",
    "UnrollAdjoint": "diff='unroll' in the matrix; tests/solvers/test_adjoint.py",
    "Problem": "every matrix case builds one",
    "Term": "a record of Problem.terms()",
    "Solution": "returned by every solve",
    "Stats": "returned by every solve",
    "Dual": "a record of IterativeSolver.duals(), exercised by every implicit derivative",
    "solve": "the entry point of every matrix case",
    "solve_batch": "tests/solvers/test_batch.py",
    "HQS": "plug-and-play only (a DenoiserPrior regulariser); tests/learned/test_pnp.py",
    "anderson": "a fixed-point routine, not a problem solver; tests/solvers/test_fixed_point.py",
    "fixed_point": "a fixed-point routine with implicit derivatives; tests/solvers/test_fixed_point.py",
    "FixedPointStats": "returned by fixed_point",
}


class Regularized(NamedTuple):
    """A problem family of the solver matrix: ``make(A) -> (regularizer, constraint)``, the
    weight, whether complex images can use it, and which solvers accept it."""

    make: Callable
    weight: float
    complex_ok: bool
    solvers: tuple


_ALL = ("CG", "Landweber", "FISTA", "ADMM", "PDHG")
REGULARIZERS = {
    "SquaredL2": Regularized(lambda: (F.SquaredL2(), None), 0.05, True, _ALL),
    "Huber": Regularized(lambda: (F.Huber(0.3), None), 0.1, True, ("Landweber", "FISTA", "ADMM", "PDHG")),
    "L1": Regularized(lambda: (F.L1(), None), 0.02, True, ("FISTA", "ADMM", "PDHG")),
    "TV": Regularized(lambda: (F.TV(tol=1e-10, max_iters=5000), None), 0.02, True, ("FISTA", "ADMM", "PDHG")),
    "TV-aniso-periodic": Regularized(
        lambda: (F.TV(isotropic=False, boundary="periodic", tol=1e-10, max_iters=5000), None), 0.02, True,
        ("FISTA", "ADMM", "PDHG"),
    ),
    "TV+Box": Regularized(lambda: (F.TV(), F.Box(0.0, 0.7)), 0.02, False, ("ADMM", "PDHG")),
    "SquaredL2+NonNegative": Regularized(
        lambda: (F.SquaredL2(), F.NonNegative()), 0.05, False, ("Landweber", "FISTA", "ADMM", "PDHG")
    ),
}
