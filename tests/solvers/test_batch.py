"""solve_batch shards a batch over host devices and equals separate solves."""

import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import invjax as ij
    assert len(jax.devices()) == 8, jax.devices()
    A = ij.operators.Convolution(np.ones((3, 3), np.float32) / 9, (16, 16))
    ys = jax.random.uniform(jax.random.PRNGKey(0), (11, 16, 16))
    ws = jnp.linspace(0.005, 0.05, 11)
    problem = ij.Problem(A, ys[0], ij.functionals.TV(boundary="periodic"), 0.01)
    solver = ij.solvers.ADMM(max_iters=200, tol=1e-4)
    sol = ij.solve_batch(problem, solver, data=ys, weight=ws)
    assert sol.x.shape == (11, 16, 16)
    err = 0.0
    single = jax.jit(lambda y, w: ij.solve(ij.Problem(A, y, ij.functionals.TV(boundary="periodic"), w), solver))
    for i in range(11):
        one = single(ys[i], ws[i])
        err = max(err, float(jnp.abs(one.x - sol.x[i]).max()))
        assert int(one.stats.iterations) == int(sol.stats.iterations[i])
    print("MAXERR", err)
    print("DEVICES", len(sol.x.sharding.device_set) if hasattr(sol.x, "sharding") else 1)
    """
)


def test_solve_batch_sharded_over_8_host_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    err = float(out.stdout.split("MAXERR")[1].split()[0])
    assert err < 1e-6
    assert int(out.stdout.split("DEVICES")[1].split()[0]) == 8


def test_solve_batch_rejects_bad_batch():
    import pytest

    import invjax as ij

    A = ij.operators.Convolution(np.ones((3, 3), np.float32) / 9, (8, 8))
    problem = ij.Problem(A, np.zeros((8, 8), np.float32), ij.functionals.TV(), 0.01)
    with pytest.raises(ValueError, match=r"`data` must have shape \(B,\) \+ \(8, 8\), got \(8, 8\)"):
        ij.solve_batch(problem, ij.solvers.PDHG(), data=np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"`weight` must have leading batch axis 3"):
        ij.solve_batch(problem, ij.solvers.PDHG(), data=np.zeros((3, 8, 8)), weight=np.ones(4))
