"""Closed forms for Langevin chains on Gaussian targets (shared by the sampling tests).

On ``N(m, P^{-1})`` every sampler here is a linear recursion ``x' - m = R(delta P)(x - m) +
noise`` acting on each eigenvector of ``P`` separately, so its stationary law, its
autocorrelation and hence the Monte-Carlo error of its running moments are closed forms.
"""

import numpy as np

from invjax.sampling.skrock import skrock_coefficients


def ula_factors(dp):
    """ULA on precision ``p`` with ``dp = delta p``: ``(stationary var * p, lag-1 coefficient)``."""
    dp = np.asarray(dp, float)
    return 1 / (1 - dp / 2), 1 - dp


def skrock_factors(dp, stages, damping=0.05):
    """SK-ROCK's recursion on ``x' = a x + b sqrt(2 delta) z`` along an eigenvector:
    ``(stationary var * p, a)``, from the stage recurrence written out independently."""
    dp = np.asarray(dp, float)
    (mu1, nu1, k1), (mu, nu, ka), _ = skrock_coefficients(stages, damping)
    a0, b0 = np.ones_like(dp), np.zeros_like(dp)
    a1, b1 = 1 - mu1 * dp, k1 - mu1 * dp * nu1
    for j in range(len(mu)):
        c = nu[j] - mu[j] * dp
        a0, b0, a1, b1 = a1, b1, c * a1 + ka[j] * a0, c * b1 + ka[j] * b0
    return b1**2 * 2 * dp / (1 - a1**2), a1


def chain_law(P, delta, factors):
    """Per-coordinate stationary variance of the chain and the standard deviations of its
    n-sample mean and variance estimators (times sqrt(n)), for a Gaussian target of precision P.

    With eigenpairs ``(p_k, u_k)``, stationary variances ``c_k`` and lag coefficients ``r_k``:
    ``var_i = sum_k u_ik^2 c_k``; ``n Var(mean_i) -> sum_k u_ik^2 c_k (1 + r_k) / (1 - r_k)``;
    ``n Var(var_i) -> 2 sum_{k,l} u_ik^2 u_il^2 c_k c_l (1 + r_k r_l) / (1 - r_k r_l)`` (the
    Gaussian formula ``2 sum_t gamma_t^2``).
    """
    ev, U = np.linalg.eigh(P)
    f, r = factors(delta * ev)
    c = f / ev
    W = U**2
    var = W @ c
    mean_sd = np.sqrt(W @ (c * (1 + r) / (1 - r)))
    rr = np.outer(r, r)
    cc = np.outer(c, c) * (1 + rr) / (1 - rr)
    var_sd = np.sqrt(2 * np.einsum("ik,kl,il->i", W, cc, W))
    return var, mean_sd, var_sd
