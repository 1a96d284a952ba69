# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Sparse-view CT: FBP, TV, CRR-NN, learned primal-dual
#
# 30 equispaced projection angles of a 64x64 phantom, Gaussian noise of 5 % of the mean
# absolute sinogram value (the setting of Adler & Öktem, IEEE TMI 2018). Filtered
# back-projection streaks; TV (PDHG) removes them at the cost of a weight to choose; the
# shipped CRR-NN is a learned *convex* regulariser (trained on natural images, so its prior
# does not fit piecewise-constant phantoms well); the shipped learned primal-dual network
# (`lpd-ct64`) was trained on random ellipses for this exact geometry and reconstructs in one
# forward pass.

# %%
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import invjax as ij

SIZE = int(os.environ.get("INVJAX_NOTEBOOK_SIZE", 64))  # lpd-ct64 is trained at 64
x = ij.phantoms.shepp_logan(SIZE)
A = ij.operators.ParallelBeam2D((SIZE, SIZE), np.linspace(0, np.pi, 30, endpoint=False))
y = ij.learned.measure(A, x[None], key=jax.random.key(0), relative_noise=0.05)[0]
noise = 0.05 * float(jnp.mean(jnp.abs(A(x))))


def psnr(z):
    return float(ij.metrics.psnr(z, x, data_range=1.0))


rows = {}
t0 = time.perf_counter()
rows["FBP"] = (psnr(ij.operators.fbp(A, y)), time.perf_counter() - t0)

# %% [markdown]
# TV with the weight from the discrepancy principle (no ground truth needed: the noise level
# is known), with a non-negativity constraint.

# %%
pdhg = ij.solvers.PDHG(max_iters=1500, tol=1e-5)


def tv(w, y):
    return ij.Problem(A, y, ij.functionals.TV(), w, constraint=ij.functionals.NonNegative())


t0 = time.perf_counter()
res = ij.tuning.discrepancy(tv, y, noise, solver=pdhg, bounds=(1e-4, 1.0))  # a RuleResult
rows["TV (discrepancy)"] = (psnr(res.x), time.perf_counter() - t0)  # res.x: the reconstruction at res.weight

# %% [markdown]
# CRR-NN as the regulariser: the same problem with `TV()` replaced by the learned model,
# solved by FISTA (it is smooth, with a known gradient Lipschitz constant, so the step is
# safe). Its weight: the discrepancy principle again.

# %%
crr = ij.learned.pretrained("crr-nn")
fista = ij.solvers.FISTA(max_iters=1500, tol=1e-5)


def crr_problem(w, y):
    return ij.Problem(A, y, crr, w, constraint=ij.functionals.NonNegative())


t0 = time.perf_counter()
res = ij.tuning.discrepancy(crr_problem, y, noise, solver=fista, bounds=(1e-4, 1.0))
rows["CRR-NN (discrepancy)"] = (psnr(res.x), time.perf_counter() - t0)

# %% [markdown]
# Learned primal-dual: ten learned primal and dual updates with $A$ and $A^T$ in between;
# `jax.vmap` (or a batch axis) reconstructs many sinograms in one call.

# %%
if "lpd-ct64" in ij.learned.available():
    lpd = ij.learned.pretrained("lpd-ct64")
    if SIZE != 64:
        lpd = lpd.with_operator(A)  # the convolutions do not care; trained at 64
    run = jax.jit(lambda y: lpd(y))
    run(y).block_until_ready()
    t0 = time.perf_counter()
    x_lpd = run(y).block_until_ready()
    rows["learned primal-dual"] = (psnr(x_lpd), time.perf_counter() - t0)
    batch = jnp.stack([y] * 4)
    assert run(batch).shape == (4, SIZE, SIZE)

for name, (p, s) in rows.items():
    print(f"{name:24s} {p:6.2f} dB  {s:8.3f} s")
