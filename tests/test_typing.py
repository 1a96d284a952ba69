"""The jaxtyping annotations of the public signatures hold at run time.

A subprocess imports invjax under ``jaxtyping.install_import_hook(..., "beartype.beartype")``,
which wraps every function and module of the listed packages in
``jaxtyping.jaxtyped(typechecker=beartype.beartype)``: each call then checks its arguments and
return value against the annotations, shapes included (a dimension name binds within one
call). The subprocess runs a set of calls under ``jit``, ``vmap``, ``grad``, complex inputs,
float64 and inside solvers (which call the operators and functionals with tracers), and (slow
test) the doctests of those modules, so an annotation that is wrong for a real use fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("beartype")

ROOT = Path(__file__).resolve().parents[1]

# The packages whose signatures are checked: the leaf layers.
CHECKED = ["invjax.operators", "invjax.functionals", "invjax.metrics", "invjax.noise", "invjax.phantoms"]

SCRIPT = textwrap.dedent(
    """
    import sys
    import jaxtyping

    with jaxtyping.install_import_hook({checked!r}, "beartype.beartype"):
        import invjax as ij

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    # the hook is active: a call against its annotation fails in the type check, before the
    # function's own validation (which would raise ValueError)
    try:
        ij.metrics.psnr(jnp.ones(3), jnp.ones(4))
    except jaxtyping.TypeCheckError:
        pass
    else:
        sys.exit("the import hook did not check ij.metrics.psnr")
    try:
        ij.noise.poisson(jax.random.key(0), jnp.ones(2, jnp.complex64), 10.0)
    except jaxtyping.TypeCheckError:
        pass
    else:
        sys.exit("the import hook accepted complex data for ij.noise.poisson")

    FULL = {full!r}
    key = jax.random.key(0)
    x = ij.phantoms.shepp_logan(16)
    ops = [
        ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (16, 16)),
        ij.operators.Mask(np.arange(256).reshape(16, 16) % 3 > 0),
        ij.operators.Downsample((16, 16), 2),
        ij.operators.FiniteDifference((16, 16), boundary="neumann"),
        ij.operators.ParallelBeam2D((16, 16), np.linspace(0, np.pi, 6, endpoint=False)),
        ij.operators.Identity((16, 16)),
        ij.operators.Dense(np.ones((3, 256)) / 16) @ ij.operators.Identity((256,)),
    ]
    for A in ops[:-1]:
        y = A(x)
        A.T(y)
        eqx.filter_jit(lambda A, v: A.T(A(v)))(A, x)
        if FULL:
            jax.vmap(A)(jnp.stack([x, 2 * x]))
            jax.grad(lambda v: jnp.sum(A(v) ** 2))(x)
            float(ij.operators.check_adjoint(A, key))
            float(A.norm(iters=3))
            (2.0 * A + A)(x)
    ij.operators.fbp(ops[4], ops[4](x), filter="hann")
    ij.operators.weighted(ops[3], jnp.ones((2, 16, 16)))
    ij.operators.ChannelScaled(ops[3], jnp.array([1.0, 2.0]))(x)

    # complex: MRI single and multi-coil, functionals on complex arrays
    mask = jnp.zeros((16, 16)).at[:, ::2].set(1.0)
    coils = jnp.ones((2, 16, 16), jnp.complex64)
    z = x.astype(jnp.complex64) * (1 + 1j)
    for A in (ij.operators.CartesianMRI(mask), ij.operators.CartesianMRI(mask, coils)):
        A.T(A(z))
        jax.vmap(A)(jnp.stack([z, z]))
    F = ij.functionals
    for f in (F.L1(), F.L21(), F.SquaredL2(data=z), F.Huber(0.1), F.TV(), 0.5 * F.TV(isotropic=False)):
        f(z)
        f.prox(z, 0.1)
        if FULL:
            f.prox_conj(z, 0.1)
            eqx.filter_jit(lambda f, v, s: f.prox(v, s))(f, z, jnp.asarray(0.1))
    for f in (F.NonNegative(), F.Box(0.0, 1.0), F.PoissonLikelihood(data=x + 0.1), F.L1(weights=x)):
        f(x)
        jax.vmap(f.prox, in_axes=(0, None))(jnp.stack([x, -x]), 0.5)
    jax.grad(lambda w: F.SquaredL2(data=x, weights=w * jnp.ones_like(x))(2 * x))(1.0)
    F.TV().solve_prox(x, 0.1)

    # metrics and noise, traced and batched
    jax.jit(ij.metrics.psnr)(x + 0.1, x, 1.0)
    jax.vmap(ij.metrics.mse)(jnp.stack([x, z.real]), jnp.stack([x, x]))
    ij.metrics.ssim(x, x + 0.01, data_range=1.0)
    ij.metrics.nmse(z, z + 1e-3)
    ij.noise.gaussian(key, z, 0.1)
    ij.noise.gaussian(jax.random.PRNGKey(0), x, jnp.full((16, 16), 0.1))
    jax.vmap(ij.noise.gaussian, in_axes=(0, None, None))(jax.random.split(key, 3), x, 0.1)
    ij.noise.poisson_gaussian(key, x, 100.0, 0.01)
    ij.phantoms.random_ellipses(key, 8, 2)
    ij.phantoms.radon_ellipses(ij.phantoms.shepp_logan_ellipses(), np.linspace(0, 3, 4), np.linspace(-1, 1, 5))

    # inside solvers: the operators and functionals called with tracers, under jit and grad
    A = ops[0]
    y = A(x)
    solvers = [(ij.solvers.ADMM(max_iters=20), F.NonNegative())]
    if FULL:
        solvers += [(ij.solvers.PDHG(max_iters=20), F.Box(0.0, 1.0)), (ij.solvers.FISTA(max_iters=20), None)]
    for solver, constraint in solvers:
        problem = ij.Problem(op=A, data=y, regularizer=F.TV(), weight=0.01, constraint=constraint)
        ij.solve(problem, solver)

    if FULL:  # float64
        jax.config.update("jax_enable_x64", True)
        x64 = ij.phantoms.shepp_logan(16, dtype=jnp.float64)
        ops[0](x64), F.TV().prox(x64, 0.1), ij.metrics.psnr(x64, x64 + 0.1), ij.noise.gaussian(key, x64, 0.1)
        jax.config.update("jax_enable_x64", False)

    if not FULL:
        print("typed calls ok")
        sys.exit(0)

    # the doctests of the checked modules, under the hook
    sys.path.insert(0, {root!r})
    from tests.test_doctests import run_module_doctests

    failed = []
    for name in {modules!r}:
        failures, _, _ = run_module_doctests(name)
        failed += failures
    if failed:
        sys.exit("doctests failed under the type checker:\\n" + "\\n".join(failed))
    print("typed calls ok")
    """
)


def _leaf_modules() -> list[str]:
    import pkgutil

    import invjax

    names = []
    for info in pkgutil.walk_packages(invjax.__path__, prefix="invjax."):
        if info.name.startswith(tuple(CHECKED)):
            names.append(info.name)
    return sorted(names)


def _run(full: bool) -> subprocess.CompletedProcess:
    script = SCRIPT.format(checked=CHECKED, root=str(ROOT), modules=_leaf_modules(), full=full)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def test_annotations_hold_under_beartype():
    """Each operator, functional, metric, noise model and phantom, real and complex, under
    ``jit`` and inside an ADMM solve, type-checks."""
    proc = _run(full=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    assert "typed calls ok" in proc.stdout


@pytest.mark.slow
def test_annotations_hold_everywhere_under_beartype():
    """The same under vmap and grad, float64, three solvers, and every example of the checked
    modules."""
    proc = _run(full=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    assert "typed calls ok" in proc.stdout


def test_modules_to_check_are_found():
    names = _leaf_modules()
    assert "invjax.operators.tomography" in names and "invjax.functionals.tv" in names
    assert "invjax.metrics" in names and "invjax.noise" in names and "invjax.phantoms" in names
