r"""Total variation: value, composite structure for splitting solvers, and its prox (TV denoising).

The prox is computed on the dual by the fast gradient projection (FGP) of Beck & Teboulle,
"Fast gradient-based algorithms for constrained total variation image denoising and
deblurring problems", IEEE Trans. Image Process. 18(11), 2009, with a duality-gap stopping
rule.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Inexact, Int

from ..operators.finite_difference import FiniteDifference
from ._validate import abs2, as_input, check_step, group_norm, safe_abs
from .base import Functional, Input, Output, Step, Value
from .l1 import L1
from .l21 import L21

_BOUNDARIES = ("neumann", "periodic")
_CHECK_EVERY = 10  # FGP iterations between duality-gap checks


class TVProxResult(NamedTuple):
    """Output of :meth:`TV.solve_prox` (a named tuple; its fields are its arguments).

    Arguments:
        x: the prox ``argmin_x ½||x - v||² + step TV(x)`` (shape and dtype of ``v``).
        dual: the dual variable ``q`` with ``x = v - D^H q`` and ``|q_j| <= step`` per pixel,
            shape ``(len(axes),) + v.shape``; pass it back as ``dual`` to warm-start.
        iterations: FGP iterations run (int32 scalar).
        gap: duality gap at the returned point, a certificate: ``||x - x*||_2 <= sqrt(2 gap)``.

    Example:
        >>> v = jnp.zeros((8, 8)).at[2:6, 2:6].set(1.0)
        >>> out = ij.functionals.TV().solve_prox(v, 0.05)
        >>> out.x.shape, out.dual.shape, bool(out.gap >= 0), bool(out.iterations > 0)
        ((8, 8), (2, 8, 8), True, True)
    """

    x: Inexact[Array, "*shape"]
    dual: Inexact[Array, "axes *shape"]
    iterations: Int[Array, ""]
    gap: Float[Array, ""]


class TV(Functional):
    r"""Total variation ``TV(x) = g(D x)`` with ``D`` the forward finite differences.

    .. math::
        \mathrm{TV}_{\mathrm{iso}}(x) = \sum_j \Big(\sum_k |(D_k x)_j|^2\Big)^{1/2}
        = \|D x\|_{2,1}, \qquad
        \mathrm{TV}_{\mathrm{aniso}}(x) = \sum_j \sum_k |(D_k x)_j| = \|D x\|_1 ,

    where ``(D_k x)_j = x_{j + e_k} - x_j`` along each differentiated axis ``k`` and ``j`` runs
    over pixels (:class:`~invjax.operators.FiniteDifference`; ``"neumann"``: the difference
    leaving the image is 0, ``"periodic"``: wrap around). Complex images use the modulus.

    **Composite structure** (for ADMM/PDHG, which then take exact prox steps):
    ``tv.operator(shape)`` is ``D`` (a ``FiniteDifference``), ``tv.inner`` is ``g``
    (``L21(axis=0)`` if isotropic, else ``L1()``), and ``tv.composite(shape)`` returns both,
    so ``tv(x) == tv.inner(tv.operator(x.shape)(x))``.

    **Prox** (TV denoising, no closed form):

    .. math:: \operatorname{prox}_{s\,\mathrm{TV}}(v) = \arg\min_x \tfrac12\|x - v\|_2^2 + s\,\mathrm{TV}(x)
              = v - D^H q^\star, \quad
              q^\star = \arg\min_{|q_j| \le s} \tfrac12 \|v - D^H q\|_2^2 ,

    with ``|q_j|`` the Euclidean norm over the direction axis (isotropic) or the modulus of
    each entry (anisotropic). The dual is solved by FGP (Beck & Teboulle 2009) with step
    ``1 / (4 d) <= 1 / ||D||^2`` (``d`` differentiated axes), from ``q = 0``. Every 10
    iterations the duality gap

    .. math:: G(q) = s\, \mathrm{TV}(x) - \mathrm{Re}\langle D x, q\rangle \ge 0, \quad x = v - D^H q,

    is evaluated; as the primal is 1-strongly convex, ``||x - x*|| <= sqrt(2 G)``. The loop
    stops after ``max_iters`` iterations (rounded up to a multiple of 10) or as soon as
    either ``sqrt(2 G) <= tol ||v||`` (a guaranteed relative accuracy) or the primal iterate
    changed by at most ``tol ||v||`` over the last 10 iterations. The second rule is what
    usually fires: the gap bound is pessimistic by one to two orders of magnitude, while on
    256x256 test images the true relative error at the stop was within a few times ``tol``.
    ``solve_prox`` returns the gap for a certificate.

    **Differentiation.** With ``unroll=False`` (default) the loop is a ``lax.while_loop``:
    ``jit``, ``vmap`` and forward mode (``jax.jvp``, ``jax.jacfwd``) work, reverse mode
    (``jax.grad``) does not (JAX cannot transpose a while loop). With ``unroll=True`` the loop
    is a ``lax.scan`` over ``max_iters`` iterations whose state freezes once the tolerance is
    met, so ``jax.grad`` backpropagates through the iterations (memory grows with
    ``max_iters``; the cost is always ``max_iters`` iterations). Splitting solvers avoid the
    inner loop altogether by using the composite structure.

    Arguments:
        isotropic: ``True`` (default) for the l2,1 (isotropic) TV, ``False`` for l1.
        boundary: ``"neumann"`` (default) or ``"periodic"``.
        axes: axes to differentiate along (default: all axes of the input); e.g. ``(1, 2)``
            for a ``(C, H, W)`` image with channels that are not differentiated.
        tol: relative accuracy of ``prox`` (default ``1e-4``, see above); must be ``> 0``.
        max_iters: cap on FGP iterations of ``prox`` (default 1000).
        unroll: reverse-mode differentiable fixed-length ``prox`` (default ``False``).

    Shapes and dtypes: inputs of any number of axes (``>= 1``), real or complex; the value is
    a real scalar of the input's precision; ``prox`` keeps the input's shape and dtype.

    Raises:
        TypeError: if ``isotropic`` or ``unroll`` is not a bool, ``axes`` not a tuple of ints
            or ``tol`` not a number.
        ValueError: for an unknown ``boundary``, repeated ``axes``, ``tol`` not finite and
            positive, or ``max_iters`` below 1.

    Example:
        >>> noisy = jax.random.uniform(jax.random.PRNGKey(0), (16, 16))
        >>> tv = ij.functionals.TV()
        >>> x = tv.prox(noisy, 0.1)                  # TV denoising
        >>> bool(tv(x) < tv(noisy))
        True
        >>> D, g = tv.composite(noisy.shape)         # for ADMM / PDHG: tv(x) == g(D(x))
        >>> type(D).__name__, type(g).__name__
        ('FiniteDifference', 'L21')
    """

    isotropic: bool = eqx.field(static=True)
    boundary: str = eqx.field(static=True)
    axes: tuple[int, ...] | None = eqx.field(static=True)
    tol: float = eqx.field(static=True)
    max_iters: int = eqx.field(static=True)
    unroll: bool = eqx.field(static=True)

    def __init__(
        self,
        isotropic: bool = True,
        boundary: str = "neumann",
        axes: tuple[int, ...] | None = None,
        tol: float = 1e-4,
        max_iters: int = 1000,
        unroll: bool = False,
    ):
        who = "TV"
        if not isinstance(isotropic, bool):
            raise TypeError(f"{who}: `isotropic` must be a bool, got {isotropic!r}")
        if boundary not in _BOUNDARIES:
            raise ValueError(f"{who}: `boundary` must be one of {_BOUNDARIES}, got {boundary!r}")
        if axes is not None:
            try:
                axes = tuple(int(a) for a in axes)
            except TypeError as err:
                raise TypeError(f"{who}: `axes` must be a tuple of ints or None, got {axes!r}") from err
            if not axes or len(set(axes)) != len(axes):
                raise ValueError(f"{who}: `axes` must be distinct axes, got {axes}")
        try:
            tol = float(tol)
        except TypeError as err:
            raise TypeError(f"{who}: `tol` must be a float, got {tol!r}") from err
        if not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"{who}: `tol` must be finite and > 0, got {tol!r}")
        if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(f"{who}: `max_iters` must be an int >= 1, got {max_iters!r}")
        if not isinstance(unroll, bool):
            raise TypeError(f"{who}: `unroll` must be a bool, got {unroll!r}")
        self.isotropic = isotropic
        self.boundary = boundary
        self.axes = axes
        self.tol = tol
        self.max_iters = max_iters
        self.unroll = unroll

    # ---- composite structure ------------------------------------------------------------------
    def operator(self, shape) -> FiniteDifference:
        """``D``: the stacked forward differences for images of shape ``shape``."""
        shape = tuple(shape)
        if len(shape) == 0:
            raise ValueError("TV: the input must have at least one axis, got shape ()")
        return FiniteDifference(shape, boundary=self.boundary, axes=self.axes)

    @property
    def inner(self) -> Functional:
        """``g`` with ``TV(x) = g(D x)``: ``L21(axis=0)`` (isotropic) or ``L1()``."""
        return L21(axis=0) if self.isotropic else L1()

    def composite(self, shape):
        return self.operator(shape), self.inner

    # ---- value and prox -------------------------------------------------------------------------
    def __call__(self, x: Input) -> Value:
        x = as_input(x, "TV")
        return self.inner(self.operator(x.shape).mv(x))

    def prox(self, v: Input, step: Step) -> Output:
        return self.solve_prox(v, step).x

    def prox_warm(self, v, step, state=None, max_iters=None):
        """The prox from the dual ``state`` of an earlier call (``None``: from 0); returns the
        prox and its dual ``q`` (``prox = v - D^H q``). With ``max_iters``, exactly that many FGP
        iterations in a reverse-mode differentiable scan (rounded up to a multiple of 10)."""
        if max_iters is None:
            out = self.solve_prox(v, step, dual=state)
        else:
            fixed = TV(self.isotropic, self.boundary, self.axes, self.tol, int(max_iters), unroll=True)
            out = fixed.solve_prox(v, step, dual=state)
        return out.x, out.dual

    def solve_prox(self, v: Input, step: Step, dual: Inexact[ArrayLike, "axes *shape"] | None = None) -> TVProxResult:
        """The prox with its dual variable and convergence information (see the class doc).

        Arguments:
            v: input image.
            step: ``s >= 0``, the TV weight of the denoising problem.
            dual: optional warm start for ``q`` (shape ``(len(axes),) + v.shape``; projected
                onto the feasible set first). Default zeros.
        """
        who = "TV.prox"
        v = as_input(v, who, "v")
        lam = check_step(step, v, who)
        D = self.operator(v.shape)
        if dual is None:
            q0 = jnp.zeros(D.out_shape, v.dtype)
        else:
            q0 = jnp.asarray(dual)
            if q0.shape != D.out_shape:
                raise ValueError(f"{who}: `dual` must have shape {D.out_shape}, got {q0.shape}")
            q0 = q0.astype(jnp.result_type(v.dtype, q0.dtype))
        return _fgp(D, self.isotropic, v, lam, q0, self.tol, self.max_iters, self.unroll)


def _project(q, lam, isotropic):
    """Project ``q`` onto ``{|q_j| <= lam}`` (safe when ``lam = 0`` and ``q = 0``)."""
    n = group_norm(q, 0, keepdims=True) if isotropic else safe_abs(q)
    denom = jnp.maximum(n, lam)
    pos = denom > 0
    return q * jnp.where(pos, lam / jnp.where(pos, denom, 1), 0)


@eqx.filter_jit  # cached: eager calls on same-shaped images compile once
def _fgp(D, isotropic, v, lam, q0, tol, max_iters, unroll):
    chunk = min(_CHECK_EVERY, max_iters)
    n_chunks = -(-max_iters // chunk)
    tau = 1.0 / (4 * len(D.axes))
    rdt = lam.dtype
    # stop when sqrt(2 gap) <= tol ||v||  or  ||x_k - x_{k-10}|| <= tol ||v||
    thresh = 0.5 * tol**2 * jnp.sum(abs2(v))
    inner = L21(axis=0) if isotropic else L1()

    def fgp_step(_, st):
        q, r, t = st
        q_new = _project(r + tau * D.mv(v - D.rmv(r)), lam, isotropic)
        t_new = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
        r_new = q_new + ((t - 1) / t_new) * (q_new - q)
        return q_new, r_new, t_new

    def certificate(q):
        x = v - D.rmv(q)
        dx = D.mv(x)
        gap = lam * inner(dx) - jnp.sum(jnp.real(jnp.conj(q) * dx))
        return x, jnp.maximum(gap, 0)

    def body(state):
        k, q, r, t, x_old, _, _ = state
        q, r, t = lax.fori_loop(0, chunk, fgp_step, (q, r, t))
        x, gap = certificate(q)
        return (k + chunk, q, r, t, x, gap, jnp.sum(abs2(x - x_old)))

    def running(state):
        k, gap, change2 = state[0], state[5], state[6]
        return (k < max_iters) & (gap > thresh) & (change2 > 2 * thresh)

    q0 = _project(q0, lam, isotropic)
    x0, gap0 = certificate(q0)
    state = (jnp.zeros((), jnp.int32), q0, q0, jnp.ones((), rdt), x0, gap0, jnp.full((), jnp.inf, rdt))
    if unroll:

        def scan_body(state, _):
            new = body(state)
            keep = ~running(state)
            return jax.tree.map(lambda a, b: jnp.where(keep, a, b), state, new), None

        state, _ = lax.scan(scan_body, state, None, length=n_chunks)
    else:
        state = lax.while_loop(running, body, state)
    k, q, _, _, x, gap, _ = state
    return TVProxResult(x=x, dual=q, iterations=k, gap=gap)
