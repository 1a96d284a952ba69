"""Restarted GMRES for the implicit-derivative systems, finite on singular systems.

``jax.scipy.sparse.linalg.gmres`` turns NaN when its Krylov space becomes invariant before the
residual reaches the tolerance (the Givens rotation of a zero column divides 0 by 0), which is
what happens on a singular, slightly inconsistent system: the fixed-point maps of ADMM and PDHG
have a whole set of fixed points where the dual of a TV problem is not unique (flat regions of
a piecewise-constant solution), so ``I - dT/dz`` is singular there, and a solve stopped at a
finite tolerance leaves a small component outside its range. This GMRES solves each cycle's
small least-squares problem by SVD (``jnp.linalg.lstsq``: the minimum-norm solution, zero on
the unexplored columns), stops a cycle on breakdown, and stops restarting when a cycle no longer
reduces the residual, so it always returns the best finite iterate it has seen.
"""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


def gmres(matvec, b, *, rtol, restart: int, max_iters: int):
    """Solve ``matvec(x) = b`` (``b`` a pytree) from ``x = 0`` by GMRES(``restart``).

    Stops when the residual is at most ``rtol * ||b||``, after ``max_iters`` matrix-vector
    products (rounded up to whole cycles), or when a whole cycle does not reduce the residual
    (an inconsistent singular system: GMRES cannot do better from there).

    Returns:
        ``(x, relative_residual)``: ``x`` like ``b``, ``||b - A x|| / ||b||`` (``0`` for ``b = 0``).
    """
    flat_b, unravel = ravel_pytree(b)
    dtype = flat_b.dtype
    real = jnp.finfo(dtype).dtype
    eps = jnp.finfo(real).eps
    n = flat_b.shape[0]

    def A(v):
        return ravel_pytree(matvec(unravel(v)))[0].astype(dtype)

    bnorm = jnp.linalg.norm(flat_b)
    target = rtol * bnorm
    rows = jnp.arange(restart + 1)

    def cycle(x, r, beta):
        V = jnp.zeros((restart + 1, n), dtype).at[0].set(r / jnp.where(beta > 0, beta, 1).astype(dtype))
        H = jnp.zeros((restart + 1, restart), dtype)
        e1 = jnp.zeros((restart + 1,), dtype).at[0].set(beta.astype(dtype))

        def cond(c):
            k, _, _, _, stop = c
            return (k < restart) & ~stop

        def body(c):
            k, V, H, _, _ = c
            w = A(V[k])
            w_norm = jnp.linalg.norm(w)
            h = jnp.zeros((restart + 1,), dtype)
            for _ in range(2):  # classical Gram-Schmidt, twice (as accurate as modified G-S)
                hk = jnp.where(rows <= k, V.conj() @ w, 0)
                w = w - hk @ V
                h = h + hk
            h_next = jnp.linalg.norm(w)
            broke = h_next <= 10 * eps * w_norm
            V = V.at[k + 1].set(jnp.where(broke, 0, w / jnp.where(broke, 1, h_next).astype(dtype)))
            H = H.at[:, k].set(h.at[k + 1].set(jnp.where(broke, 0, h_next).astype(dtype)))
            y = jnp.linalg.lstsq(H, e1)[0]
            estimate = jnp.linalg.norm(H @ y - e1)
            return k + 1, V, H, y, broke | (estimate <= target)

        y0 = jnp.zeros((restart,), dtype)
        _, V, _, y, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), V, H, y0, beta <= target))
        return x + y @ V[:restart]

    def outer_cond(c):
        _, _, res, its, stalled = c
        return (res > target) & (its < max_iters) & ~stalled

    def outer_body(c):
        x, r, res, its, _ = c
        x_new = cycle(x, r, res)
        r_new = flat_b - A(x_new)
        res_new = jnp.linalg.norm(r_new)
        better = res_new < res  # NaN compares False: keep the old iterate
        return (
            jnp.where(better, x_new, x), jnp.where(better, r_new, r), jnp.where(better, res_new, res),
            its + restart, ~better,
        )

    x0 = jnp.zeros_like(flat_b)
    state = (x0, flat_b, bnorm, jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    x, _, res, _, _ = jax.lax.while_loop(outer_cond, outer_body, state)
    rel = jnp.where(bnorm > 0, res / jnp.where(bnorm > 0, bnorm, 1), 0.0)
    return unravel(x), rel.astype(real)
