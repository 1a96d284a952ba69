"""The four problems of ``invjax demo``: what is measured, the noise, and how each method is set up.

Every task is built from shipped or generated data (nothing downloads), from one seed:

* ``deblur``: scikit-image's *camera*, 9x9 Gaussian blur (std 1.5 px, circular), noise 0.01;
* ``inpaint``: *camera* with 40 % of the pixels seen (a random mask), noise 0.03 on those;
* ``ct``: the Shepp-Logan phantom, ``ParallelBeam2D`` with 30 equispaced angles in [0, pi),
  noise 5 % of the mean ``|A x|`` (the setting the shipped learned primal-dual ``lpd-ct64`` was
  trained for, drawn by :func:`invjax.learned.measure`); FBP, TV and the learned primal-dual
  (CRR-NN is left out of the default run, see :func:`ct`);
* ``mri``: matplotlib's head slice (:func:`invjax.phantoms.mri_slice`), single-coil Cartesian
  k-space with a 4x variable-density line mask (the centre 1/16 fully sampled, the other lines
  drawn with density falling off quadratically), complex noise 0.03 on the sampled lines.

Each method's iteration count is fixed (``tol=0``): one compiled program per method and task,
and the reconstruction is a fixed, smooth function of the data, which SURE's finite-difference
divergence needs (see :mod:`invjax.tuning.sure`). Weight grids are multiples of ``sigma**2``, the
scale of the data term's curvature against the noise; no grid uses the ground truth.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import functionals as fn
from .. import learned, noise, operators, phantoms, solvers

TASKS = ("deblur", "inpaint", "ct", "mri")
"""The demo's task names, in the order :func:`~invjax.demo.run_demo` runs them by default (each is
described in the module docstring)."""
GRID_POINTS = 12
CRR_POINTS = 6


@dataclasses.dataclass(frozen=True)
class Variational:
    """A regularised reconstruction swept over a weight grid.

    Attributes:
        label: the method's name in the table (``"TV"``, ``"CRR-NN"``).
        regularizer: the functional ``R`` of ``Problem(op, y, R, weight)``.
        solver: the solver, with a fixed iteration count.
        grid: the weights tried, ``(G,)``.
        constraint: an indicator functional or ``None``.
        note: how it is solved, for the table and the JSON.
    """

    label: str
    regularizer: object
    solver: solvers.IterativeSolver
    grid: np.ndarray
    constraint: object = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class PlugAndPlay:
    """PnP-ADMM with a fixed penalty: the denoiser runs at ``sigma_d`` in every iteration,
    started from the automatically tuned TV reconstruction."""

    denoiser: object
    sigma_d: float
    iterations: int
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Task:
    """One problem: data, noise, and the methods to run.

    Attributes:
        name, title: short name and a one-line description.
        op: the forward operator ``A``.
        x_true: the ground truth, real, in ``[0, 1]``.
        y: the measurements.
        sigma: the noise standard deviation (complex data: ``E|n|^2 = sigma^2``).
        measured: how many entries of ``y`` are measured (``op.n_measurements``: a mask's zeros
            are not).
        baseline: ``(name, (op, y) -> image)``, the reconstruction without a prior.
        variational: the swept reconstructions, TV first.
        pnp: plug-and-play settings or ``None``.
        lpd: whether to run the shipped learned primal-dual network.
        show: ``x -> real image`` for metrics and figures (the modulus for MRI).
        weighting: ``None`` (SURE of the measurement-domain error) or ``eps`` (SURE of the image
            error seen through the Tikhonov inverse ``(A^T A + eps ||A||^2 I)^{-1} A^T``; see
            :func:`invjax.tuning.regularized_inverse`).
        notes: lines printed under the task's table.
    """

    name: str
    title: str
    op: operators.LinearOperator
    x_true: jax.Array
    y: jax.Array
    sigma: float
    measured: float
    baseline: tuple[str, Callable]
    variational: tuple[Variational, ...]
    pnp: PlugAndPlay | None = None
    lpd: bool = False
    show: Callable = lambda x: x  # noqa: E731
    weighting: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def complex(self) -> bool:
        return bool(jnp.iscomplexobj(self.y))


def adjoint(op, y):
    return op.T(y)


def fbp(op, y):
    return operators.fbp(op, y)


def _grid(sigma, low, high, points=GRID_POINTS):
    """``points`` log-spaced weights ``sigma^2 * [low, high]``."""
    return (sigma**2 * np.geomspace(low, high, points)).astype(np.float32)


def _key(seed: int, task: str):
    # one stream per task, the same whichever tasks run together
    return jax.random.fold_in(jax.random.key(seed), TASKS.index(task))


def _learned(name):
    return learned.pretrained(name) if name in learned.available() else None


def _crr(task_sigma, low, high, solver, constraint=None, note=""):
    """CRR-NN on a coarser grid than TV (6 weights, a factor 2 apart): its gradient costs ~30
    FFTs, and the sweep is what the demo spends most of its solving time on."""
    model = _learned("crr-nn")
    if model is None:
        return ()
    return (Variational("CRR-NN", model, solver, _grid(task_sigma, low, high, CRR_POINTS), constraint, note),)


def deblur(n: int, seed: int) -> Task:
    sigma = 0.01
    x = phantoms.camera(n)
    op = operators.Convolution(operators.gaussian_psf(9, 1.5), (n, n))
    y = noise.gaussian(_key(seed, "deblur"), op(x), sigma)
    # the penalty is fixed (adapt_iters=0) so that the solve is the same smooth map of the data
    # at y and at y + eps b; the x-step is an exact FFT solve (periodic TV, circular blur)
    tv = Variational("TV", fn.TV(boundary="periodic"), solvers.ADMM(max_iters=150, tol=0.0, adapt_iters=0),
                     _grid(sigma, 0.5, 50), note="ADMM, 150 iterations, FFT x-step")
    crr = _crr(sigma, 0.25, 8, solvers.FISTA(max_iters=100, tol=0.0, restart=False),
               note="FISTA, 100 iterations")
    dncnn = _learned("dncnn")
    pnp = None
    if dncnn is not None:
        # sigma_d and the iterations were chosen on two other images (scikit-image's coins and moon
        # at this size and blur): 8 sigma beat 2-6 sigma on both, 8 iterations as good as 12 or 20
        pnp = PlugAndPlay(dncnn, 8 * sigma, 8, note="ADMM, rho = sigma^2 / sigma_d^2, 8 iterations from TV (SURE)")
    return Task("deblur", f"deblurring: camera {n}x{n}, 9x9 Gaussian blur (std 1.5 px), noise 0.01",
                op, x, y, sigma, float(op.n_measurements), ("adjoint A^T y", adjoint), (tv,) + crr, pnp)


def inpaint(n: int, seed: int) -> Task:
    sigma, seen = 0.03, 0.4
    k_mask, k_noise = jax.random.split(_key(seed, "inpaint"))
    mask = jax.random.bernoulli(k_mask, seen, (n, n)).astype(jnp.float32)
    x = phantoms.camera(n)
    op = operators.Mask(mask)
    y = mask * noise.gaussian(k_noise, op(x), sigma)
    tv = Variational("TV", fn.TV(), solvers.PDHG(max_iters=200, tol=0.0), _grid(sigma, 1, 100),
                     note="PDHG, 200 iterations")
    crr = _crr(sigma, 0.25, 8, solvers.FISTA(max_iters=150, tol=0.0, restart=False), note="FISTA, 150 iterations")
    return Task("inpaint", f"inpainting: camera {n}x{n}, {seen:.0%} of the pixels seen, noise {sigma}",
                op, x, y, sigma, float(op.n_measurements), ("adjoint (unseen = 0)", adjoint), (tv,) + crr)


CT_ANGLES, CT_NOISE = 30, 0.05
CT_CRR = False  # see ct()


def ct_operator(n: int) -> operators.ParallelBeam2D:
    return operators.ParallelBeam2D((n, n), np.linspace(0, np.pi, CT_ANGLES, endpoint=False))


def ct(n: int, seed: int) -> Task:
    x = phantoms.shepp_logan(n)
    op = ct_operator(n)
    y = learned.measure(op, x[None], key=_key(seed, "ct"), relative_noise=CT_NOISE)[0]
    sigma = CT_NOISE * float(jnp.mean(jnp.abs(op(x))))
    nonneg = fn.NonNegative()
    # fewer measurements than pixels (30 x 91 < 64^2): the measurement-domain risk that plain SURE
    # estimates wants about two grid steps more smoothing than the image error does (measured on
    # three seeds: 0.27-0.51 dB below the oracle); the image error seen through the Tikhonov
    # inverse agrees with it (0.05-0.18 dB), so SURE is taken of that (``weighting``)
    # a finer grid than elsewhere (ratio 1.29): PSNR falls 0.6 dB per step of 1.5 to the right
    # of the optimum (which sat at 3.5 sigma^2 at sizes 64, 96 and 128)
    tv = Variational("TV", fn.TV(), solvers.PDHG(max_iters=200, tol=0.0), _grid(sigma, 1, 16), nonneg,
                     note="PDHG, 200 iterations, x >= 0")
    # No CRR-NN row here: trained on natural images, on this phantom it reached 24.95 dB (FISTA,
    # 100 iterations, weight by SURE), 4.4 dB below TV's oracle and 6 below the learned
    # primal-dual, and its sweep cost 12-16 s of the demo's CPU time (with the model's load), the
    # margin that keeps `invjax demo` under a minute on two cores. `CT_CRR` brings it back.
    crr = _crr(sigma, 0.03, 1, solvers.FISTA(max_iters=100, tol=0.0, restart=False), nonneg,
               note="FISTA, 100 iterations, x >= 0") if CT_CRR else ()
    notes = () if CT_CRR else ("CRR-NN: not run on this phantom (24.95 dB at 64x64, 4.4 dB below TV's oracle; "
                               "see invjax.demo.tasks.CT_CRR)",)
    return Task("ct", f"sparse-view CT: Shepp-Logan {n}x{n}, {CT_ANGLES} angles, noise {CT_NOISE:.0%} of mean |Ax|",
                op, x, y, sigma, float(op.n_measurements), ("FBP (ramp)", fbp), (tv,) + crr,
                lpd=True, weighting=1e-3, notes=notes)


def mri_mask(n: int, seed: int, acceleration: int = 4) -> np.ndarray:
    """A Cartesian line mask (DC at index 0): ``n // acceleration`` phase-encoding rows, the
    central ``n // 16`` (at least 2) always, the others drawn without replacement with density
    ``(1 - |k| / (n/2))^2``."""
    rng = np.random.default_rng([seed, TASKS.index("mri")])
    k = np.abs(np.arange(n) - n // 2)
    centre = k < max(2, n // 16) / 2 + 0.5
    total = max(n // acceleration, int(centre.sum()))
    density = (1 - k / (n / 2)) ** 2 + 1e-6
    density[centre] = 0
    picked = rng.choice(n, size=total - int(centre.sum()), replace=False, p=density / density.sum())
    rows = centre.copy()
    rows[picked] = True
    mask = np.zeros((n, n), np.float32)
    mask[np.fft.ifftshift(rows), :] = 1
    return mask


def mri(n: int, seed: int) -> Task:
    sigma = 0.03
    mask = jnp.asarray(mri_mask(n, seed))
    x = phantoms.mri_slice(n)
    op = operators.CartesianMRI(mask, dtype=jnp.complex64)
    y = mask * noise.gaussian(_key(seed, "mri"), op(x.astype(jnp.complex64)), sigma)
    tv = Variational("TV", fn.TV(), solvers.PDHG(max_iters=200, tol=0.0), _grid(sigma, 1, 100),
                     note="PDHG, 200 iterations, complex image")
    return Task("mri", f"MRI: head slice {n}x{n}, 4x variable-density Cartesian lines, complex noise {sigma}",
                op, x, y, sigma, float(op.n_measurements), ("zero-filled |A^H y|", adjoint), (tv,), show=jnp.abs)


BUILDERS = {"deblur": deblur, "inpaint": inpaint, "ct": ct, "mri": mri}


def build(name: str, n: int, seed: int) -> Task:
    """The task ``name`` (one of :data:`TASKS`) at size ``n x n`` from ``seed``."""
    if name not in BUILDERS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return BUILDERS[name](n, seed)
