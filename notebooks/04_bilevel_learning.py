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
# # Bilevel learning: a weight per direction, then a whole regulariser
#
# The *upper level* fits parameters $\theta$ to training pairs $(x_b, y_b)$ by gradient descent
# on $\sum_b \|\hat x(\theta, y_b) - x_b\|^2$; the *lower level* is the reconstruction
# $\hat x(\theta, y) = \arg\min_x \tfrac12\|Ax-y\|^2 + R_\theta(x)$, solved by an invjax
# solver. The gradient of $\hat x$ comes from the optimality conditions at the solution
# (implicit differentiation: one linear solve, memory independent of the solver's iterations).
#
# 1. $R_\theta = \mathrm{TV}$ with a separate weight for horizontal and vertical differences
#    (`ij.tuning.fit`): a blur that is stronger along one axis wants different weights.
# 2. $R_\theta$ = a CRR-NN whose filters, splines and strength are all learned
#    (`ij.learned.reconstruction_loss` + `ij.learned.train`).

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

import invjax as ij

SIZE = int(os.environ.get("INVJAX_NOTEBOOK_SIZE", 64))
STEPS = int(os.environ.get("INVJAX_NOTEBOOK_STEPS", 30))
sigma = 0.01

# motion-like blur: 7 pixels along the rows, none along the columns
psf = np.zeros((7, 7))
psf[3, :] = 1 / 7
A = ij.operators.Convolution(jnp.asarray(psf), shape=(SIZE, SIZE))
images = ij.phantoms.random_ellipses(jax.random.key(0), SIZE, 6, mean_ellipses=20)
x_train, x_test = images[:4], images[4:]
y_train = jax.vmap(A)(x_train) + sigma * jax.random.normal(jax.random.key(1), (4, SIZE, SIZE))
y_test = jax.vmap(A)(x_test) + sigma * jax.random.normal(jax.random.key(2), (2, SIZE, SIZE))
admm = ij.solvers.ADMM(max_iters=500, tol=1e-4)


def tv(w, y):
    # an array weight multiplies TV's inner functional elementwise: shape (2, 1, 1) is one
    # weight for each direction of the discrete gradient (rows, columns)
    return ij.Problem(A, y, ij.functionals.TV(boundary="periodic"), w)


def test_psnr(w, make=tv, solver=admm):
    out = jax.vmap(lambda y: ij.solve(make(w, y), solver).x)(y_test)
    return float(jnp.mean(jax.vmap(lambda a, b: ij.metrics.psnr(a, b, data_range=1.0))(out, x_test)))


# %%
scalar = ij.tuning.fit(tv, x_train, y_train, init=1e-3, solver=admm, max_iters=STEPS, progress=False).weight
res = ij.tuning.fit(tv, x_train, y_train, init=jnp.full((2, 1, 1), float(scalar)), solver=admm,
                    optimizer=optax.adam(0.1), max_iters=STEPS, progress=False)
per_direction, hist = res.weight, res.history
print(f"one weight       {float(scalar):.2e}: test {test_psnr(scalar):.2f} dB")
print(f"per direction    {np.ravel(per_direction)}: test {test_psnr(per_direction):.2f} dB")

# %% [markdown]
# The learned regulariser: a small CRR-NN (convex, so every lower-level problem has one
# solution and FISTA converges), trained end to end through the FISTA solve together with its
# weight (log-parametrised).

# %%
crr = ij.learned.ConvexRidge(channels=(1, 4, 8), key=jax.random.key(3))
fista = ij.solvers.FISTA(max_iters=500, tol=1e-4)


def crr_problem(theta, y):
    model, log_w = theta
    return ij.Problem(A, y, model, jnp.exp(log_w))


loss = ij.learned.reconstruction_loss(crr_problem, fista, A, sigma)
theta0 = (crr, jnp.log(jnp.asarray(float(scalar))))
data = lambda key, step: x_train  # noqa: E731  (fresh noise every step, from the loss's key)
theta, history = ij.learned.train(theta0, loss, data, optax.adam(3e-2), STEPS, key=jax.random.key(4),
                                  progress=False)
print(f"loss {history.loss[0]:.2e} -> {history.loss[-1]:.2e}")
print(f"CRR-NN (bilevel) test {test_psnr(theta, crr_problem, fista):.2f} dB")
