"""Registry of every public operator with a small example instance.

Cross-cutting tests (tests/operators/test_registry_checks.py) run each entry through the same
checks. A new operator joins by adding one factory here. Factories take a numpy Generator and
build the operator at call time so that a test can enable float64 first.
"""

import numpy as np

import invjax as ij

ops = ij.operators


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
    "Composed": lambda rng: ops.Mask(rng.random((12, 10)) > 0.5) @ ops.Convolution(_gauss_psf(3), (12, 10)),
    "ChannelScaled": lambda rng: ops.ChannelScaled(ops.FiniteDifference((9, 8)), rng.random(2) + 0.5),
    "Sum": lambda rng: ops.Convolution(_gauss_psf(3), (10, 10)) + 0.5 * ops.Identity((10, 10)),
}

if hasattr(ops, "ParallelBeam2D"):
    OPERATORS["ParallelBeam2D"] = lambda rng: ops.ParallelBeam2D(
        (16, 12), np.linspace(0, np.pi, 7, endpoint=False)
    )
