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
# # Accelerated MRI: 4x variable-density Cartesian sampling, single and multi-coil
#
# The forward model is $y = M F (S \odot x) + n$: coil sensitivities $S$ (none for single
# coil), the 2-D Fourier transform $F$, and a mask $M$ keeping a quarter of the phase-encode
# lines (the centre fully sampled). Images are complex and stay complex throughout. The
# zero-filled reconstruction $A^H y$ aliases; TV (PDHG, complex-aware) removes the aliasing.
# The TV weight here is the oracle on a small grid (one batched solve over the weights) and
# the discrepancy principle's choice beside it.

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np

import invjax as ij
from invjax.learned import coil_sensitivities, variable_density_mask

SIZE = int(os.environ.get("INVJAX_NOTEBOOK_SIZE", 128))
x = ij.phantoms.mri_slice(SIZE).astype(jnp.complex64)
mask = variable_density_mask(SIZE, 4, key=jax.random.key(0))
sigma = 0.01
pdhg = ij.solvers.PDHG(max_iters=1000, tol=1e-4)


def psnr(z):
    return float(ij.metrics.psnr(jnp.abs(z), jnp.abs(x), data_range=1.0))


for coils in (None, 4):
    S = None if coils is None else coil_sensitivities(SIZE, coils, key=jax.random.key(1))
    A = ij.operators.CartesianMRI(mask, sensitivities=S)
    clean = A(x)
    k1, k2 = jax.random.split(jax.random.key(2))
    # complex Gaussian noise of standard deviation sigma per sample (on the sampled entries)
    y = clean + sigma / np.sqrt(2) * (jax.random.normal(k1, clean.shape) + 1j * jax.random.normal(k2, clean.shape))

    def tv(w, y):
        return ij.Problem(A, y, ij.functionals.TV(), w)

    weights = jnp.geomspace(1e-4, 1e-1, 7)
    sols = ij.solve_batch(tv(1.0, y), pdhg, data=jnp.stack([y] * len(weights)), weight=weights)
    scores = [psnr(s) for s in sols.x]
    rows = {"zero-filled": psnr(A.adjoint(y)), "TV (oracle)": max(scores)}
    res = ij.tuning.discrepancy(tv, y, sigma, solver=pdhg, bounds=(1e-5, 1.0))  # a RuleResult
    rows["TV (discrepancy)"] = psnr(res.x)  # the reconstruction at res.weight
    print(f"--- {'single coil' if coils is None else f'{coils} coils'} ---")
    for name, p in rows.items():
        print(f"{name:24s} {p:6.2f} dB")
