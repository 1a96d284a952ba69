r"""Learned (weakly) convex ridge regularizers: CRR-NN and WCRR-NN.

.. math:: R(x) = \lambda \sum_{i=1}^{C} \sum_{p} \psi_{i,\mu}\big((W_i x)_p\big), \qquad
          \psi_{i,\mu}(t) = \psi_i(\mu t) / \mu^2 ,

with ``lambda > 0`` a learned strength and ``mu > 0`` a learned input scale (both stored as
logarithms and learned beside the filters, as in the CRR-NN paper: ``mu`` fits the splines' fixed
knot grid to the size of the filter responses, ``lambda`` sets the strength; ``psi_{i,mu}'' =
psi_i''(mu t)`` keeps the curvature bounds, so neither changes the constraints below),
``W = (W_1, ..., W_C)`` a learned multi-convolution and ``psi_i`` learned 1-D potentials
whose derivatives ``sigma_i = psi_i'`` are linear splines with bounded slopes
(:class:`~invjax.learned.priors.spline.LinearSpline`):

* **CRR-NN** (Goujon, Neumayer, Bohra, Ducotterd & Unser, "A neural-network-based convex
  regularizer for inverse problems", IEEE Trans. Comput. Imaging 9, 2023): slopes in
  ``[0, 1]``, so every ``psi_i`` is convex with ``psi_i'' <= 1`` and ``R`` is convex.
* **WCRR-NN** (Goujon, Neumayer & Unser, "Learning weakly convex regularizers for convergent
  image-reconstruction algorithms", SIAM J. Imaging Sci. 17, 2024): slopes in ``[-1, 1]``, so
  every ``psi_i`` is 1-weakly convex and ``R + (rho / 2) ||.||^2`` is convex for
  ``rho = lambda ||W^T B W|| <= lambda ||W||^2``, ``B = diag(max(0, -min slope of psi_i))``. Here the
  potentials are also kept non-decreasing in ``|t|`` (``t sigma_i(t) >= 0``, see
  :mod:`~invjax.learned.priors.spline`): a negative slope can bend ``psi_i`` down towards 0 but never
  below it, so ``R >= 0`` and a problem ``1/2 ||A x - y||^2 + lambda R`` stays bounded below
  (with free negative slopes, linear extrapolation would make ``psi_i -> -inf``).

In both, ``psi_i >= psi_i(0) = 0`` and the filters have zero mean, so ``R >= 0 = R(c 1)`` for
constant images.

The gradient is the one-hidden-layer network ``grad R(x) = (lambda / mu) W^T sigma(mu W x)``, Lipschitz with

.. math:: L = \lambda \sup_\omega \sum_i a_i |\hat w_i(\omega)|^2 \le \lambda \|W\|^2 \max_i a_i ,
          \qquad a_i = \max_t |\sigma_i'(t)| ,

because ``-W^T A W <= Hess R / lambda = W^T diag(sigma'(W x)) W <= W^T A W`` (almost everywhere;
``A = diag(a_i)``) and ``W^T A W`` is the circulant operator with symbol
``sum_i a_i |w_i^|^2``. WCRR-NN is smooth but not convex: ``1/2 ||A x - y||^2 + lambda R`` is
convex when ``lambda rho <= lambda_min(A^T A)``; otherwise gradient-based solvers (FISTA) reach a
critical point, and splitting solvers need ``step * rho < 1`` for every prox they take.

**The multi-convolution.** ``W`` composes ``len(channels) - 1`` convolutions (``channels[l] ->
channels[l+1]`` channels, ``kernel_size`` odd); the first layer's filters have zero mean (by
parametrisation: the mean is subtracted at every call), so every composed filter has zero
mean and ``R`` does not see constant images. Being linear, the layers compose into one bank
of ``C = channels[-1]`` filters of size ``K = (len(channels) - 1)(kernel_size - 1) + 1``
(:meth:`ConvexRidge.impulse_responses`), which is what is applied, with periodic boundaries
and by FFT: ``(W x)_i = F^{-1}(conj(w_i^) F x)`` and its exact adjoint ``W^T z = F^{-1}(sum_i
w_i^ F z_i)``, ``w_i^`` the DFT of ``w_i`` centred at the origin (one ``rfft2`` and ``C``
inverse ones for ``W``; the reverse for ``W^T``). The filters are composed once per call, so
gradients reach every layer.

**Norms (exact or guaranteed upper bounds).** For circular convolutions on an ``H x W`` grid,
``W^T A W`` is diagonalised by the DFT, so ``||W^T A W|| = max_k sum_i a_i |w_i^(omega_k)|^2``
over the ``H x W`` DFT frequencies: *exact*, and used inside :meth:`ConvexRidge.prox`. The
shape-free :attr:`ConvexRidge.lipschitz` must hold for every image size: it is the supremum
over *all* frequencies of the trigonometric polynomial ``f(omega) = sum_i a_i
|w_i^(omega)|^2`` (degree ``n = K - 1`` in each variable), evaluated on an ``N x N`` grid with
``N >= 32 n`` and corrected by Bernstein's inequality: at a maximiser ``omega*`` the gradient of
``f`` vanishes and ``|d^2 f| <= n^2 max f``, so the nearest grid point (at most ``pi / N`` away
per axis) has ``f >= max f (1 - 2 (n pi / N)^2)``; dividing the grid maximum by that factor
(at most 1.02) gives an upper bound. Gradient descent with step ``1 / lipschitz`` therefore
provably decreases ``R``.

**Proximal map** (:meth:`ConvexRidge.prox`): ``prox_{s R}(v) = argmin_x s R(x) + ||x - v||^2
/ 2`` is the root of ``x - v + s W^T sigma(W x) = 0``. The inner objective is ``mu``-strongly
convex and ``L_s``-smooth with ``mu = 1 - s rho``, ``L_s = 1 + s L`` (exact constants of the
image's grid); it is minimised by Nesterov's accelerated gradient with constant momentum
``(sqrt(L_s) - sqrt(mu)) / (sqrt(L_s) + sqrt(mu))`` and step ``1 / L_s`` in a
``lax.while_loop`` until ``||x - v + s grad R(x)|| <= prox_tol ||v||`` (or
``prox_max_iters``; an inner solve stopped by the limit returns its last iterate, unreported,
so raise it for large steps: each decade of the residual takes about ``2.3 sqrt(L_s / mu)``
iterations). Its derivatives (forward and reverse mode, with respect to ``v``, ``s``
and the module's parameters) come from the implicit function theorem at the returned point,
one conjugate-gradient solve with ``I + s W^T diag(sigma'(W x)) W`` (symmetric positive
definite; :func:`invjax.solvers.linear.cg`, to ``prox_tol`` in at most ``prox_max_iters``
iterations: one that stops above ``10 * prox_tol`` raises ``equinox.EquinoxRuntimeError``), not
from the iterations. For WCRR-NN the prox is defined (the inner problem
strongly convex) only for ``s rho < 1``: a concrete step violating it raises ``ValueError``, a
traced one fails at run time (``eqx.error_if``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..._misc import shape2
from ...functionals.base import Functional
from ...functionals._validate import as_input, check_step
from ...operators.base import concrete_or_none
from ...solvers import linear
from .._denoise import batched
from .spline import LinearSpline

_HIGHEST = jax.lax.Precision.HIGHEST
_DEFAULT_TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


class ConvexRidge(Functional):
    r"""Learned convex ridge regularizer (CRR-NN) or, with ``weakly_convex=True``, its weakly
    convex variant (WCRR-NN); see the module docstring for the mathematics.

    .. math:: R(x) = \frac{\lambda}{\mu^2} \sum_i \sum_p \psi_i(\mu (W_i x)_p), \qquad
              \nabla R(x) = \tfrac{\lambda}{\mu} W^T \sigma(\mu W x), \qquad
              \operatorname{prox}_{s R}(v) = \arg\min_x s R(x) + \tfrac12 \|x - v\|^2 .

    A ``Functional`` (``smooth = True``, ``differentiable = True``): it goes wherever ``TV()``
    goes, e.g. ``ij.Problem(A, y, ConvexRidge(key=key), weight)`` solved by FISTA (gradient
    steps), ADMM (its prox) or PDHG (the prox of its conjugate, by Moreau).

    Arguments:
        key: a ``jax.random`` key for the initial filters (keyword-only, required).
        channels: the channel counts of the convolution layers, ``channels[0] == 1`` (a
            grayscale image), at least two entries (default ``(1, 8, 32)``: ``1 -> 8 -> 32``).
        kernel_size: odd side length of every layer's filters (default 5).
        knots: number of uniform spline knots, odd (default 21).
        spline_range: the knots cover ``[-spline_range, spline_range]`` (default 0.1); the
            splines continue linearly outside.
        weakly_convex: ``False`` (CRR-NN, slopes in ``[0, 1]``) or ``True`` (WCRR-NN, slopes in
            ``[-1, 1]`` with ``t sigma_i(t) >= 0``).
        prox_tol: relative residual of the prox's inner solve and of its derivative's CG solve
            (``None``: 1e-5 for float32 inputs, 1e-10 for float64).
        prox_max_iters: iteration limit of each of those solves (default 1000).
        strength: the initial ``lambda > 0`` (default 1); learned as ``log_strength``.
        scale: the initial ``mu > 0`` (default 1); learned as ``log_scale``.
        noise_calibration: ``None`` or pairs ``((sigma_1, c_1), ...)`` with increasing
            ``sigma_k > 0`` and ``c_k > 0``: the factors of :meth:`denoise`'s step.

    Initialisation: normally distributed filters, the first layer made zero-mean, scaled so
    that ``||W|| = 1`` (as in the papers); every slope 1, i.e. ``psi_i(t) = t^2 / 2`` and
    ``R(x) = lambda ||W x||^2 / 2`` until trained. The parameters (``kernels``, a tuple of float32
    arrays of shapes ``(channels[l+1], channels[l], k, k)``, ``spline.raw_slopes`` and the scalars
    ``log_strength``, ``log_scale``) are
    the module's array leaves: train them with ``eqx.filter_grad`` and optax; the constraints
    (zero mean, slope bounds) are parametrisations, so every update stays valid.

    Shapes and dtypes: ``x`` is one real image of shape ``(H, W)`` (batch with ``jax.vmap``);
    the value is a real scalar of ``x``'s precision, ``grad`` and ``prox`` keep ``x``'s shape and
    dtype (the parameters are cast to it).

    Raises:
        ValueError: a bad constructor argument (naming it, the expected and the received
            value); an input that is not 2-D; for WCRR-NN a concrete prox step with
            ``step * rho >= 1``.
        TypeError: a complex input, or ``key`` not a PRNG key.

    Example:
        >>> import invjax as ij
        >>> from invjax.learned.priors.ridge import ConvexRidge
        >>> reg = ConvexRidge(key=jax.random.key(0))
        >>> x = ij.phantoms.shepp_logan(32)
        >>> reg(x).shape, reg.grad(x).shape, reg.prox(x, 0.5).shape
        ((), (32, 32), (32, 32))
    """

    kernels: tuple[jax.Array, ...]
    spline: LinearSpline
    log_strength: jax.Array
    log_scale: jax.Array
    channels: tuple[int, ...] = eqx.field(static=True)
    kernel_size: int = eqx.field(static=True)
    weakly_convex: bool = eqx.field(static=True)
    prox_tol: float | None = eqx.field(static=True)
    prox_max_iters: int = eqx.field(static=True)
    noise_calibration: tuple[tuple[float, float], ...] | None = eqx.field(static=True)

    smooth: ClassVar[bool] = True
    differentiable: ClassVar[bool] = True

    def __init__(
        self,
        *,
        key,
        channels=(1, 8, 32),
        kernel_size: int = 5,
        knots: int = 21,
        spline_range: float = 0.1,
        weakly_convex: bool = False,
        prox_tol: float | None = None,
        prox_max_iters: int = 1000,
        strength: float = 1.0,
        scale: float = 1.0,
        noise_calibration=None,
    ):
        channels = tuple(channels) if isinstance(channels, (tuple, list)) else channels
        _check_config(channels, kernel_size, knots, spline_range, weakly_convex, prox_tol, prox_max_iters)
        key = _check_key(key)
        self.channels = tuple(int(c) for c in channels)
        self.kernel_size = int(kernel_size)
        self.weakly_convex = bool(weakly_convex)
        self.prox_tol = None if prox_tol is None else float(prox_tol)
        self.prox_max_iters = int(prox_max_iters)
        lower = -1.0 if weakly_convex else 0.0
        self.spline = LinearSpline(self.channels[-1], knots=knots, spline_range=spline_range, lower=lower, upper=1.0)
        self.kernels = _initial_kernels(key, self.channels, self.kernel_size)
        for name, value in (("strength", strength), ("scale", scale)):
            known = concrete_or_none(jnp.asarray(value))
            if known is None or np.ndim(known) != 0 or not np.isfinite(known) or known <= 0:
                raise ValueError(f"ConvexRidge: `{name}` must be a finite scalar > 0, got {value!r}")
        self.log_strength = jnp.asarray(math.log(float(strength)), jnp.float32)
        self.log_scale = jnp.asarray(math.log(float(scale)), jnp.float32)
        self.noise_calibration = _check_calibration(noise_calibration)

    def __check_init__(self):
        _check_config(
            self.channels, self.kernel_size, self.spline.knots, self.spline.spline_range, self.weakly_convex,
            self.prox_tol, self.prox_max_iters,
        )
        k = self.kernel_size
        want = [(c_out, c_in, k, k) for c_in, c_out in zip(self.channels[:-1], self.channels[1:])]
        got = [tuple(getattr(kern, "shape", ())) for kern in self.kernels]
        if got != want:
            raise ValueError(f"ConvexRidge: `kernels` must have shapes {want}, got {got}")
        for name in ("log_strength", "log_scale"):
            if jnp.shape(getattr(self, name)) != ():
                raise ValueError(f"ConvexRidge: `{name}` must be a scalar, got shape {jnp.shape(getattr(self, name))}")
        if self.spline.channels != self.channels[-1]:
            raise ValueError(
                f"ConvexRidge: the spline must have channels[-1] = {self.channels[-1]} channels, "
                f"got {self.spline.channels}"
            )
        lower = -1.0 if self.weakly_convex else 0.0
        if (self.spline.lower, self.spline.upper) != (lower, 1.0):
            raise ValueError(
                f"ConvexRidge: the spline's slope bounds must be ({lower}, 1.0) for "
                f"weakly_convex={self.weakly_convex}, got ({self.spline.lower}, {self.spline.upper})"
            )

    @property
    def strength(self) -> jax.Array:
        """``lambda = exp(log_strength)``, the learned strength multiplying the ridge sum."""
        return jnp.exp(self.log_strength)

    @property
    def scale(self) -> jax.Array:
        """``mu = exp(log_scale)``, the learned input scale of the potentials."""
        return jnp.exp(self.log_scale)

    # ---- the multi-convolution ------------------------------------------------------------------
    @property
    def filter_size(self) -> int:
        """``K``: side length of the composed filters."""
        return (len(self.channels) - 1) * (self.kernel_size - 1) + 1

    def impulse_responses(self, dtype=None) -> jax.Array:
        """The composed filters ``w_i`` (impulse responses of ``W_i``, zero mean), shape
        ``(C, K, K)``; ``(W x)_i`` is the circular cross-correlation of ``x`` with ``w_i``."""
        dtype = self.kernels[0].dtype if dtype is None else dtype
        return _jit_compose(self.kernels, np.dtype(dtype))

    def conv(self, x: jax.Array) -> jax.Array:
        """``W x``: shape ``(H, W) -> (C, H, W)`` (circular boundary)."""
        x = self._image(x, "ConvexRidge.conv")
        return _jit_conv(self, x)

    def conv_adjoint(self, z: jax.Array) -> jax.Array:
        """``W^T z``: shape ``(C, H, W) -> (H, W)``, the exact adjoint of :meth:`conv`."""
        z = as_input(z, "ConvexRidge.conv_adjoint", "z", real=True)
        if z.ndim != 3 or z.shape[0] != self.channels[-1]:
            raise ValueError(
                f"ConvexRidge.conv_adjoint: `z` must have shape (C, H, W) with C = {self.channels[-1]}, got {z.shape}"
            )
        return _jit_conv_adjoint(self, z)

    # ---- norms ----------------------------------------------------------------------------------
    def operator_norm(self, shape=None) -> jax.Array:
        """``||W||``: exact for circular convolution on images of ``shape`` ``(H, W)``; with
        ``shape=None`` an upper bound valid for every image size (module docstring)."""
        shape = None if shape is None else shape2(shape, "shape", "ConvexRidge.operator_norm")
        return jnp.sqrt(_jit_bounds(self, shape, self.kernels[0].dtype)[0])

    @property
    def lipschitz(self) -> jax.Array:
        r"""Upper bound of the Lipschitz constant of ``grad R`` valid for every image size:
        ``lambda sup_omega sum_i a_i |w_i^(omega)|^2 <= lambda ||W||^2 max_i a_i`` with ``a_i = max |sigma_i'|``
        (a Bernstein-corrected grid maximum, at most 2 % above the supremum over all
        frequencies; module docstring). A real scalar in the parameters' precision."""
        return _jit_bounds(self, None, self.kernels[0].dtype)[1]

    @property
    def weak_convexity(self) -> jax.Array:
        r"""Upper bound of ``rho``, the modulus of weak convexity (``R + rho ||.||^2 / 2`` is
        convex) valid for every image size: ``lambda sup_omega sum_i b_i |w_i^(omega)|^2`` with ``b_i =
        max(0, -min sigma_i')``; 0 for CRR-NN."""
        return _jit_bounds(self, None, self.kernels[0].dtype)[2]

    # ---- value, gradient, prox --------------------------------------------------------------------
    def _image(self, x, who, name="x"):
        x = as_input(x, who, name, real=True)
        if x.ndim != 2:
            raise ValueError(
                f"{who}: `{name}` must be one 2-D image of shape (H, W), got shape {tuple(x.shape)}"
                + (" (batch with jax.vmap)" if x.ndim > 2 else "")
            )
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self._image(x, "ConvexRidge")
        return _jit_value(self, x)

    def grad(self, x: jax.Array) -> jax.Array:
        r"""``grad R(x) = (lambda / mu) W^T sigma(mu W x)``, shape and dtype of ``x``."""
        x = self._image(x, "ConvexRidge.grad")
        return _jit_grad(self, x)

    def prox(self, v: jax.Array, step) -> jax.Array:
        r"""``argmin_x step R(x) + ||x - v||^2 / 2`` by an accelerated inner solve with implicit
        derivatives (module docstring); shape and dtype of ``v``.

        Raises:
            ValueError: ``v`` not 2-D, a concrete negative/non-finite ``step``, or (WCRR-NN) a
                concrete ``step * rho >= 1`` (the prox is not defined).
        """
        who = "ConvexRidge.prox"
        v = self._image(v, who, "v")
        s = check_step(step, v, who)
        # exact constants of the image's grid (rho = 0 for CRR-NN): they set the inner solver's steps
        _, lip, rho = _jit_bounds(self, v.shape, v.dtype)
        if self.weakly_convex:
            known_s, known_rho = concrete_or_none(s), concrete_or_none(rho)
            if known_s is None or known_rho is None:
                v = eqx.error_if(v, s * rho >= 1, f"{who}: `step` * rho >= 1: the weakly convex prox is not defined")
            elif not known_s * known_rho < 1:
                raise ValueError(
                    f"{who}: the weakly convex regulariser has rho = {float(known_rho):.6g} on {v.shape} images, so "
                    f"`step` must be < 1 / rho = {1 / float(known_rho):.6g} for the prox to be defined; got step = "
                    f"{float(known_s):.6g}"
                )
        return _jit_prox(self, v, s, lip, rho)

    def _tol(self, dtype) -> float:
        return _DEFAULT_TOL.get(np.dtype(dtype), 1e-5) if self.prox_tol is None else self.prox_tol

    # ---- conveniences -------------------------------------------------------------------------
    def denoise(self, y: jax.Array, sigma) -> jax.Array:
        r"""MAP denoising under white Gaussian noise of standard deviation ``sigma`` with the
        prior ``exp(-R)``: ``argmin_x ||x - y||^2 / (2 sigma^2) + c(sigma) R(x) = prox_{c(sigma)
        sigma^2 R}(y)``, to the prox's tolerance (:meth:`prox`).

        ``c(sigma)`` is 1 unless the model carries a ``noise_calibration`` (the shipped models do:
        factors fitted on training images at a few noise levels, interpolated linearly in
        ``log sigma`` and held constant beyond the ends), since a regulariser trained at one noise
        level is not exactly a log-prior at the others.

        Shapes: ``y`` is one image ``(H, W)`` or a batch ``(B, H, W)`` (real, e.g. in ``[0, 1]``);
        ``sigma`` a scalar ``> 0`` or one per image ``(B,)``, on the scale of ``y``. Returns the
        shape and dtype of ``y``. Works under ``jit``, ``vmap`` and ``grad``.

        Raises:
            ValueError: ``y`` not 2-D or 3-D; a concrete ``sigma <= 0`` or non-finite, or of the
                wrong shape; for WCRR-NN a noise level whose prox is undefined.
        """
        return batched(self._denoise_one, y, sigma, image_ndim=2, who="ConvexRidge.denoise")

    def _denoise_one(self, y, sigma):
        s = sigma.astype(y.dtype) if jnp.issubdtype(y.dtype, jnp.floating) else sigma
        return self.prox(y, s**2 * self.calibration_factor(s))

    def calibration_factor(self, sigma) -> jax.Array:
        """``c(sigma)`` of :meth:`denoise` (1 without a ``noise_calibration``)."""
        sigma = jnp.asarray(sigma)
        dtype = sigma.dtype if jnp.issubdtype(sigma.dtype, jnp.floating) else jnp.float32
        if self.noise_calibration is None:
            return jnp.ones((), dtype)
        levels, factors = (np.asarray(v, np.float64) for v in zip(*self.noise_calibration))
        t = jnp.log(jnp.maximum(sigma.astype(dtype), np.finfo(np.float32).tiny))
        return jnp.interp(t, jnp.asarray(np.log(levels), dtype), jnp.asarray(factors, dtype))

    def denoise_unrolled(self, y: jax.Array, sigma, steps: int) -> jax.Array:
        r"""The ``t``-step denoiser the CRR-NN paper trains with: ``steps`` iterations of
        Nesterov's accelerated gradient on ``||x - y||^2 / 2 + sigma^2 R(x)`` from ``x_0 = y``
        (step ``1 / (1 + sigma^2 L)``, ``L`` = :attr:`lipschitz`; momentum for the strong
        convexity ``1 - sigma^2 rho``), differentiated through the iterations (``lax.scan``,
        memory linear in ``steps``). As ``steps`` grows it tends to :meth:`denoise`; training
        with a few tens of steps costs a fixed, small number of gradients per image, where
        :meth:`denoise` runs to convergence. Shapes as :meth:`denoise`: one ``(H, W)`` image."""
        y = self._image(y, "ConvexRidge.denoise_unrolled", "y")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"ConvexRidge.denoise_unrolled: `steps` must be an int >= 1, got {steps!r}")
        s = jnp.asarray(sigma, y.dtype) ** 2
        return _unrolled(self, y, s, int(steps))

    def project(self) -> "ConvexRidge":
        """The same regulariser with its raw spline slopes clipped into their bounds (a
        projection step for projected-gradient training; the function is unchanged)."""
        return eqx.tree_at(lambda m: m.spline, self, self.spline.project())

    def plot_filters(self, *, figsize=None):
        """Draw the composed filters ``w_i`` (impulse responses of ``W_i``) and the learned
        profiles ``sigma_i`` and ``psi_i``; returns the matplotlib ``Figure``."""
        import matplotlib.pyplot as plt

        g = np.asarray(jax.device_get(self.impulse_responses()))
        c = g.shape[0]
        ncols = min(c, 8)
        nrows = -(-c // ncols)
        fig = plt.figure(figsize=figsize or (max(1.3 * ncols, 6.0), 1.3 * nrows + 3.0), layout="constrained")
        outer = fig.add_gridspec(2, 1, height_ratios=[1.3 * nrows, 3.0])
        top = outer[0].subgridspec(nrows, ncols)
        for i in range(c):
            ax = fig.add_subplot(top[i // ncols, i % ncols])
            vmax = float(np.max(np.abs(g[i]))) or 1.0
            ax.imshow(g[i], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
            ax.set_title(f"w{i}", fontsize=7)
            ax.set_axis_off()
        bottom = outer[1].subgridspec(1, 2)
        r = self.spline.spline_range
        t = np.linspace(-1.5 * r, 1.5 * r, 301).astype(g.dtype)
        tt = jnp.broadcast_to(jnp.asarray(t), (c, t.size))
        profiles = (
            (self.spline(tt), r"activations $\sigma_i = \psi_i'$"),
            (self.spline.potential(tt), r"potentials $\psi_i$"),
        )
        for j, (values, title) in enumerate(profiles):
            ax = fig.add_subplot(bottom[0, j])
            ax.plot(t, np.asarray(values).T, lw=0.8)
            for edge in (-r, r):
                ax.axvline(edge, color="0.6", lw=0.5, ls="--")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("t")
        kind = "WCRR-NN" if self.weakly_convex else "CRR-NN"
        fig.suptitle(f"{kind}: {c} filters of size {self.filter_size}", fontsize=10)
        return fig


# ---- pure implementation (jitted entry points: one compiled program per call, also eagerly) -------
def _compose(kernels, dtype):
    """The composed filter bank ``(C, K, K)`` of the layers (first layer made zero-mean)."""
    first = kernels[0].astype(dtype)
    first = first - jnp.mean(first, axis=(2, 3), keepdims=True)
    g = first[:, 0]  # (c_1, k, k)
    for kern in kernels[1:]:
        pad = kern.shape[-1] - 1
        # correlating with g and then with h is correlating with the full convolution g * h
        g = jax.lax.conv_general_dilated(
            g[None], jnp.flip(kern.astype(dtype), (2, 3)), (1, 1), [(pad, pad), (pad, pad)], precision=_HIGHEST
        )[0]
    return g


def _symbols(g, shape):
    """DFT of the filters ``g`` ``(C, K, K)`` centred at the origin of the ``shape`` grid (folded
    onto it, as a circular convolution does, when larger): ``(C, H, W // 2 + 1)``, complex."""
    h, w = shape
    size = g.shape[-1]
    p = (size - 1) // 2
    if size <= h and size <= w:
        placed = jnp.roll(jnp.pad(g, ((0, 0), (0, h - size), (0, w - size))), (-p, -p), axis=(1, 2))
    else:
        rows, cols = (np.arange(size) - p) % h, (np.arange(size) - p) % w
        placed = jnp.zeros((g.shape[0], h, w), g.dtype).at[:, rows[:, None], cols[None, :]].add(g)
    return jnp.fft.rfft2(placed)


# W and W^T are applied by FFTs rather than by lax.conv_general_dilated: XLA's CPU convolutions
# ran the C -> 1 correlation of W^T anywhere between 23 and 430 ms on 256² images (C = 32,
# K = 9), depending on the padding mode and on whether it sat inside a loop; the FFTs took a
# steady 60-80 ms for a whole gradient (spline included), in or out of loops.
def _apply(symbols, x):
    """``W x``: circular cross-correlation of ``x`` ``(H, W)`` with each filter, ``(C, H, W)``."""
    return jnp.fft.irfft2(jnp.conj(symbols) * jnp.fft.rfft2(x)[None], s=x.shape)


def _adjoint(symbols, z):
    """``W^T z``: circular convolution of each channel of ``z`` with its filter, summed."""
    return jnp.fft.irfft2(jnp.sum(symbols * jnp.fft.rfft2(z), axis=0), s=z.shape[1:])


def _power_spectra(g, shape):
    """``|w_i^(omega)|^2`` on the ``shape`` DFT grid, ``(C, H, W // 2 + 1)``."""
    spec = _symbols(g, shape)
    return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2


def _sup(g, weights, shape, bound=True):
    r"""``sup_omega sum_i weights_i |w_i^(omega)|^2``: exact on the ``shape`` DFT grid, or
    (``shape=None``) over all frequencies, as an upper bound (``bound=True``: the Bernstein
    correction of an ``N x N`` grid maximum, module docstring) or the grid maximum itself."""
    if shape is not None:
        return jnp.max(jnp.tensordot(weights, _power_spectra(g, shape), axes=1))
    n = g.shape[-1] - 1  # degree of the trigonometric polynomial in each variable
    if n == 0:
        size, factor = 1, 1.0
    else:
        size = 1 << math.ceil(math.log2(32 * n))
        factor = 1.0 / (1.0 - 2.0 * (n * math.pi / size) ** 2) if bound else 1.0
    grid_max = jnp.max(jnp.tensordot(weights, _power_spectra(g, (size, size)), axes=1))
    rounding = 1 + 100 * float(jnp.finfo(g.dtype).eps) if bound else 1.0
    return grid_max * jnp.asarray(factor * rounding, g.dtype)


@eqx.filter_jit
def _initial_kernels(key, channels, kernel_size):
    """Normal filters, scaled so that ``||W|| = 1`` (each layer takes an equal share)."""
    keys = jax.random.split(key, len(channels) - 1)
    k = kernel_size
    kernels = [
        jax.random.normal(kk, (c_out, c_in, k, k), jnp.float32) / math.sqrt(c_in * k * k)
        for kk, c_in, c_out in zip(keys, channels[:-1], channels[1:])
    ]
    g = _compose(kernels, jnp.float32)
    norm = jnp.sqrt(_sup(g, jnp.ones((channels[-1],), jnp.float32), None, bound=False))
    share = norm ** (1.0 / len(kernels))
    return tuple(kern / share for kern in kernels)


@eqx.filter_jit
def _jit_compose(kernels, dtype):
    return _compose(kernels, dtype)


@eqx.filter_jit
def _jit_conv(model, x):
    return _apply(_symbols(_compose(model.kernels, x.dtype), x.shape), x)


@eqx.filter_jit
def _jit_conv_adjoint(model, z):
    return _adjoint(_symbols(_compose(model.kernels, z.dtype), z.shape[1:]), z)


@eqx.filter_jit
def _jit_value(model, x):
    ridge = jnp.sum(model.spline.potential(_apply(_symbols(_effective(model, x.dtype), x.shape), x)))
    return _outer(model, x.dtype) * ridge


def _effective(model, dtype):
    """``mu W``'s filters: what the splines see."""
    return jnp.exp(model.log_scale.astype(dtype)) * _compose(model.kernels, dtype)


def _outer(model, dtype):
    """``lambda / mu^2``: the factor on the sum of potentials of ``mu W x``."""
    return jnp.exp((model.log_strength - 2 * model.log_scale).astype(dtype))


def _grad_with(model, symbols, x, tables=None):
    """``(lambda / mu^2) G^T sigma(G x)`` with ``symbols`` the DFT of ``G = mu W``'s filters (and the
    spline's tables, if known): ``grad R(x)``."""
    z = _apply(symbols, x)
    sigma = model.spline._sigma(z.reshape(z.shape[0], -1), tables).reshape(z.shape)
    return _outer(model, x.dtype) * _adjoint(symbols, sigma)


@eqx.filter_jit
def _jit_grad(model, x):
    return _grad_with(model, _symbols(_effective(model, x.dtype), x.shape), x)


@eqx.filter_jit
def _jit_bounds(model, shape, dtype):
    return _bounds(model, shape, dtype)


def _bounds(model, shape, dtype):
    """``sup_omega sum_i c_i |w_i^(omega)|^2`` for ``c_i = 1`` (``||W||^2``), ``c_i = max
    |sigma_i'|`` (the Lipschitz constant) and ``c_i = max(0, -min sigma_i')`` (``rho``): exact on
    the ``shape`` grid, or bounds for every size (``shape=None``); the last two times ``lambda``;
    a tuple of three scalars."""
    lo, hi = model.spline.slope_range(dtype)
    weights = jnp.stack([jnp.ones_like(lo), jnp.maximum(jnp.abs(lo), jnp.abs(hi)), jnp.maximum(-lo, 0)])
    g = _compose(model.kernels, dtype)
    norm2, lip, rho = jax.vmap(lambda w: _sup(g, w, shape))(weights)
    lam = jnp.exp(model.log_strength.astype(dtype))
    return norm2, lam * lip, lam * rho


def _prox_residual(model, v, s, x):
    """``x - v + s grad R(x)``: zero exactly at ``prox_{s R}(v)``."""
    return x - v + s * _grad_with(model, _symbols(_effective(model, x.dtype), x.shape), x)


def _prox_iterate(model, v, s, lip, rho):
    """Nesterov's accelerated gradient (constant momentum, strongly convex case) on
    ``s R(x) + ||x - v||^2 / 2`` from ``v``, until the residual is below ``tol ||v||``."""
    lip, rho = jax.lax.stop_gradient((lip, rho))
    g = _symbols(_effective(model, v.dtype), v.shape)  # loop invariants
    tables = model.spline._tables(v.dtype)
    smooth = 1 + s * lip
    strong = jnp.maximum(1 - s * rho, jnp.finfo(v.dtype).eps)
    root = jnp.sqrt(strong / smooth)
    momentum = (1 - root) / (1 + root)
    tau = 1 / smooth
    target = model._tol(v.dtype) * jnp.linalg.norm(v)

    def body(c):
        k, x, x_old, _ = c
        y = x + momentum * (x - x_old)
        r = y - v + s * _grad_with(model, g, y, tables)
        # the step from y does not increase the residual (I - tau Hess has norm <= 1)
        return k + 1, y - tau * r, x, jnp.linalg.norm(r)

    def cond(c):
        return (c[0] < model.prox_max_iters) & (c[3] > target)

    start = (jnp.zeros((), jnp.int32), v, v, jnp.asarray(jnp.inf, target.dtype))
    return jax.lax.while_loop(cond, body, start)[1]


@eqx.filter_jit
def _unrolled(model, y, s, steps):
    _, lip, rho = _bounds(model, y.shape, y.dtype)
    lip, rho = jax.lax.stop_gradient((lip, rho))
    g = _symbols(_effective(model, y.dtype), y.shape)
    smooth = 1 + s * lip
    root = jnp.sqrt(jnp.maximum(1 - s * rho, jnp.finfo(y.dtype).eps) / smooth)
    momentum = (1 - root) / (1 + root)

    def body(c, _):
        x, x_old = c
        z = x + momentum * (x - x_old)
        return (z - (z - y + s * _grad_with(model, g, z)) / smooth, x), None

    return jax.lax.scan(body, (y, y), None, length=steps)[0][0]


@jax.custom_jvp
def _prox(model, v, s, lip, rho):
    return _prox_iterate(model, v, s, lip, rho)


@_prox.defjvp
def _prox_jvp(primals, tangents):
    # x(theta) solves F(x, theta) = x - v + s grad R(x) = 0, so dx = -(dF/dx)^{-1} dF/dtheta [dtheta];
    # dF/dx = I + s W^T diag(sigma'(W x)) W is symmetric positive definite (s rho < 1). lip and
    # rho only set the inner solver's steps: their tangents do not enter.
    model, v, s, lip, rho = primals
    dmodel, dv, ds, _, _ = tangents
    x = _prox(model, v, s, lip, rho)
    _, rhs = jax.jvp(lambda m, vv, ss: _prox_residual(m, vv, ss, x), (model, v, s), (dmodel, dv, ds))
    _, hvp = jax.linearize(lambda xx: _prox_residual(model, v, s, xx), x)
    tol, iters = model._tol(v.dtype), model.prox_max_iters
    # the one linear-solve layer; a derivative solve that stops above 10 * prox_tol raises (its
    # reverse-mode solve too) instead of returning its last iterate
    dx, _ = linear.cg(hvp, -rhs, tol=tol, max_iters=iters, check=False, failure="raise", messages=_derivative_message(tol, iters))
    return x, dx


def _derivative_message(tol, iters):
    def message(k):
        return (
            f"ConvexRidge.prox: the conjugate-gradient solve of the prox's derivative stopped at a relative residual "
            f"of about 1e{k} (at least 1e{k}, below 1e{k + 1}; NaN: 1e2), above 10 * prox_tol = {10 * tol:.2g}, after "
            f"at most prox_max_iters={iters} iterations: raise prox_max_iters or loosen prox_tol"
        )

    return message


@eqx.filter_jit
def _jit_prox(model, v, s, lip, rho):
    return _prox(model, v, s, lip, rho)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_config(channels, kernel_size, knots, spline_range, weakly_convex, prox_tol, prox_max_iters):
    who = "ConvexRidge"
    if (
        not isinstance(channels, tuple)
        or len(channels) < 2
        or not all(_is_int(c) and c >= 1 for c in channels)
        or channels[0] != 1
    ):
        raise ValueError(
            f"{who}: `channels` must be a tuple of at least two ints >= 1 starting with 1 (one grayscale input "
            f"channel), e.g. (1, 8, 32); got {channels!r}"
        )
    if not _is_int(kernel_size) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{who}: `kernel_size` must be an odd int >= 1, got {kernel_size!r}")
    if not _is_int(knots) or knots < 3 or knots % 2 == 0:
        raise ValueError(f"{who}: `knots` must be an odd int >= 3 (0 is the middle knot), got {knots!r}")
    if (
        isinstance(spline_range, bool)
        or not isinstance(spline_range, (int, float, np.integer, np.floating))
        or not (np.isfinite(spline_range) and spline_range > 0)
    ):
        raise ValueError(f"{who}: `spline_range` must be a finite number > 0, got {spline_range!r}")
    if not isinstance(weakly_convex, (bool, np.bool_)):
        raise ValueError(f"{who}: `weakly_convex` must be a bool, got {weakly_convex!r}")
    if prox_tol is not None and (
        isinstance(prox_tol, bool) or not isinstance(prox_tol, (int, float, np.floating)) or not 0 < prox_tol < 1
    ):
        raise ValueError(f"{who}: `prox_tol` must be None or a number in (0, 1), got {prox_tol!r}")
    if not _is_int(prox_max_iters) or prox_max_iters < 1:
        raise ValueError(f"{who}: `prox_max_iters` must be an int >= 1, got {prox_max_iters!r}")


def _check_calibration(table):
    if table is None:
        return None
    try:
        pairs = tuple((float(a), float(b)) for a, b in table)
    except (TypeError, ValueError):
        raise ValueError(f"ConvexRidge: `noise_calibration` must be None or pairs (sigma, factor), got {table!r}") from None
    levels = [a for a, _ in pairs]
    if not pairs or any(not (np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0) for a, b in pairs) or any(
        b <= a for a, b in zip(levels, levels[1:])
    ):
        raise ValueError(
            "ConvexRidge: `noise_calibration` must be pairs (sigma, factor) with finite sigma > 0 increasing and "
            f"factor > 0, got {table!r}"
        )
    return pairs


def _check_key(key):
    try:
        arr = jnp.asarray(key)
    except TypeError as err:
        raise TypeError(f"ConvexRidge: `key` must be a jax.random key, got {key!r}") from err
    if jax.dtypes.issubdtype(arr.dtype, jax.dtypes.prng_key):
        if arr.shape != ():
            raise TypeError(f"ConvexRidge: `key` must be a single jax.random key, got an array of shape {arr.shape}")
        return arr
    if arr.dtype != jnp.uint32 or arr.shape != (2,):
        raise TypeError(
            f"ConvexRidge: `key` must be a jax.random key (jax.random.key(0) or PRNGKey(0)), got dtype {arr.dtype} "
            f"and shape {arr.shape}"
        )
    return arr


