r"""Deep equilibrium reconstruction: the fixed point of a learned denoiser and a gradient step.

Gilton, Ongie & Willett, "Deep equilibrium architectures for inverse problems in imaging",
IEEE Trans. Comput. Imaging 7, 2021 (the gradient-descent variant). For data ``y = A x + n``
the reconstruction is the fixed point

.. math:: x^\star = f_\theta(x^\star), \qquad
          f_\theta(x) = R_\theta\big(x - \eta\, A^T (A x - y)\big), \qquad
          R_\theta(z) = (1 - \tau)\, z + \tau\, N_\theta(z),

with ``N`` a spectrally normalised CNN (:class:`~invjax.learned.networks.dncnn.DnCNN`'s convolution
stack, ``depth`` 3x3 convolutions of ``width`` filters with ReLU between them, no residual
connection) whose Lipschitz constant is at most ``c = lipschitz``, ``tau = relaxation`` in
``(0, 1]``, and ``eta`` a learned step in ``(0, 2 / ||A||^2)``.

**Contraction** (why the fixed point exists and is unique). For ``0 < eta <= 2 / ||A||^2`` the
gradient step ``G(x) = x - eta A^T (A x - y)`` has Lipschitz constant
``||I - eta A^T A|| = max(|1 - eta mu|, |1 - eta L|) <= 1`` (``mu``, ``L`` the extreme
eigenvalues of ``A^T A``), and it equals 1 whenever ``A`` has a nullspace (``mu = 0``; sparse-view
CT does): the data-consistency step cannot contract, so the denoiser must. ``R`` is
``(1 - tau + tau c)``-Lipschitz, hence

.. math:: \mathrm{Lip}(f_\theta) \le \big(1 - \tau (1 - c)\big)\, \|I - \eta A^T A\|
          \le 1 - \tau (1 - c) < 1 ,

and by Banach's theorem ``f`` has exactly one fixed point and every start converges to it
linearly at that rate, for all values of the trained parameters: ``eta`` is parametrised as
``(2 / ||A||^2) sigmoid(s)`` and every convolution of ``N`` is divided by its operator norm at
every call. :meth:`DEQ.lipschitz_bound` returns ``1 - tau (1 - c)``. Why this form of ``R``:
a plain residual denoiser ``z - N(z)`` is ``(1 + c)``-Lipschitz and cannot be certified below 1;
``R = N`` (``tau = 1``) contracts fastest but must learn to pass the image through a chain of
norm-1 layers; the convex combination keeps an identity path (with ``N = 0`` the fixed point is
the Tikhonov solution ``(A^T A + \lambda I)^{-1} A^T y``, ``lambda = tau / ((1 - tau) eta)``) at
the price of a slower certified rate. The certificate holds up to the accuracy of the two
estimates it rests on, both approached from below: the convolutions' norms
(:func:`~invjax.learned.networks.dncnn.conv_operator_norm`, within 0.7 % per layer on random kernels)
and ``||A||`` (power iteration, which is why the stored norm is inflated by 1 %).

**Choosing the bound** (``lipschitz``, ``relaxation``). The certificate has a price: two
noiseless images ``x1, x2`` differing only in the nullspace of ``A`` cannot both be fixed points,
since ``||f(x1) - f(x2)|| <= q ||x1 - x2||`` with ``q = lipschitz_bound()``; the reconstruction
of nullspace content is shrunk by up to a factor ``q``. A bound closer to 1 (say 0.98-0.99)
lets the network reproduce more of it, and costs forward and adjoint iterations (about
``log(tol) / log(q)`` for the plain iteration; Anderson needs far fewer).

**Forward**: Anderson acceleration (type II, Walker & Ni, SIAM J. Numer. Anal. 49(4), 2011) of
the fixed-point iteration, in one ``lax.while_loop``: with the last ``m = memory`` iterates
``x_i`` and values ``f_i = f(x_i)``, the next iterate is ``sum_i alpha_i f_i`` with ``alpha``
minimising ``||sum_i alpha_i (f_i - x_i)||`` subject to ``sum_i alpha_i = 1`` (a Tikhonov-
regularised ``m x m`` system); ``memory=1`` is the plain iteration ``x <- f(x)``. It stops when
the relative residual ``||f(x) - x|| / ||x||`` is at most ``tol`` or after ``max_iters`` updates,
and returns that ``x`` with its residual (:class:`DEQStats`).

**Backward** (implicit differentiation, as in Bai, Kolter & Koltun, NeurIPS 2019): at the fixed
point ``dx* = (I - J_x)^{-1} J_theta dtheta``, so a cotangent ``g`` of ``x*`` becomes
``J_theta^T u`` with ``u`` the solution of the adjoint fixed-point equation
``u = g + J_x^T u``. ``J_x`` is a contraction like ``f``, so this linear fixed point is solved by
the same Anderson iteration (on a linear map Anderson with full memory is equivalent to GMRES,
Walker & Ni 2011), one vector-Jacobian product per iteration. Nothing of the forward iterations
is stored: memory does not grow with ``max_iters``. The derivative is exact only at an exact
fixed point; with ``tol`` it is accurate to about ``tol``. ``stats`` are not differentiated.
Reverse mode only: the equilibrium solve has a custom VJP (no ``jax.jvp``).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ...operators.base import LinearOperator, default_float
from ._conv import conv2d, hwio
from .dncnn import DnCNN

__all__ = ["DEQ", "DEQStats", "anderson"]

_WHO = "DEQ"
_NORM_MARGIN = 1.01  # power iteration approaches ||A|| from below


class DEQStats(NamedTuple):
    """Statistics of one equilibrium solve (arrays; one entry per item under ``vmap``).

    Attributes:
        iterations: updates of the iterate (int32; ``f`` was evaluated ``iterations + 1`` times).
        residual: ``||f(x) - x|| / ||x||`` at the returned ``x`` (``||f(x) - x||`` if ``x = 0``).
        converged: ``residual <= tol`` (bool; ``False`` for a non-finite residual).
    """

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


# ---- Anderson acceleration ----------------------------------------------------------------------
def _relative_residual(x, fx):
    diff = jnp.linalg.norm((fx - x).ravel())
    scale = jnp.linalg.norm(x.ravel())
    return jnp.where(scale > 0, diff / jnp.where(scale > 0, scale, 1), diff)


def anderson(
    fn: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    *,
    memory: int = 5,
    max_iters: int = 100,
    tol: float = 1e-3,
    mixing: float = 1.0,
    regularization: float = 1e-4,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Fixed point of ``fn`` by Anderson-accelerated iteration (type II), in one ``while_loop``.

    With the last ``m`` iterates ``x_i`` and ``f_i = fn(x_i)``, ``G`` the ``m x n`` matrix of
    residuals ``f_i - x_i``, the weights are ``alpha = w / sum(w)`` with
    ``(G G^T + lambda I) w = 1`` (the minimiser of ``||G^T alpha||`` over ``sum alpha = 1``,
    regularised by ``lambda = regularization * max_i ||f_i - x_i||^2``), and the next iterate is
    ``mixing * sum_i alpha_i f_i + (1 - mixing) * sum_i alpha_i x_i``. Before ``m`` iterates exist
    the missing ones get weight 0. ``memory=1`` is the (damped) plain iteration.

    Args:
        fn: ``x -> fn(x)``, an array of ``x0``'s shape and dtype.
        x0: the start.
        memory: ``m >= 1`` (static, default 5).
        max_iters: most updates (static, default 100).
        tol: stop when ``||fn(x) - x|| / ||x|| <= tol`` (default 1e-3).
        mixing: ``beta`` in ``(0, 1]`` (default 1).
        regularization: relative Tikhonov weight of the least-squares system (default 1e-4).

    Returns:
        ``(x, residual, iterations)``: the last iterate, its relative residual
        ``||fn(x) - x|| / ||x||`` and the number of updates (int32).
    """
    x0 = jnp.asarray(x0)
    dtype = x0.dtype
    f0 = fn(x0)
    X = jnp.zeros((memory, x0.size), dtype).at[0].set(x0.ravel())
    F = jnp.zeros((memory, x0.size), dtype).at[0].set(f0.ravel())

    def cond(state):
        k, _, res, _, _ = state
        return (k < max_iters) & (res > tol)  # False for a NaN residual: a failed solve stops

    def body(state):
        k, _, _, X, F = state
        if memory == 1:
            alpha = jnp.ones((1,), dtype)
        else:
            valid = jnp.arange(memory) < jnp.minimum(k + 1, memory)
            G = (F - X) * valid[:, None].astype(dtype)
            H = G @ G.T
            scale = jnp.max(jnp.diag(H))
            lam = regularization * jnp.where(scale > 0, scale, 1)
            # missing entries: an identity row and a zero right-hand side give them weight 0
            H = H + jnp.diag(lam + (~valid).astype(dtype))
            w = jnp.linalg.solve(H, valid.astype(dtype))
            alpha = w / jnp.sum(w)
        x_new = mixing * (alpha @ F) + (1 - mixing) * (alpha @ X) if mixing != 1 else alpha @ F
        x_new = x_new.reshape(x0.shape).astype(dtype)
        f_new = fn(x_new)
        slot = (k + 1) % memory
        X = X.at[slot].set(x_new.ravel())
        F = F.at[slot].set(f_new.ravel())
        return k + 1, x_new, _relative_residual(x_new, f_new), X, F

    state = (jnp.asarray(0, jnp.int32), x0, _relative_residual(x0, f0), X, F)
    k, x, res, _, _ = jax.lax.while_loop(cond, body, state)
    return x, res, k


# ---- the iteration map and its implicit derivative ----------------------------------------------
class _Config(NamedTuple):
    """Static settings of the solve (hashable)."""

    relaxation: float
    lipschitz: float
    memory: int
    max_iters: int
    tol: float
    mixing: float
    regularization: float
    backward_max_iters: int
    backward_tol: float


def _map(params, x, y, op, cfg: _Config):
    """``f(x) = (1 - tau) z + tau c N(z)``, ``z = x - eta A^T (A x - y)``, with ``params`` the
    normalised weights, biases and ``eta`` (already in ``x``'s dtype)."""
    ws, bs, eta = params
    z = x - eta * op.rmv(op.mv(x) - y).astype(x.dtype)
    h = z[None, :, :, None]
    for i, (w, b) in enumerate(zip(ws, bs)):
        h = conv2d(h, w, b)
        if i < len(ws) - 1:
            h = jax.nn.relu(h)
    return (1 - cfg.relaxation) * z + (cfg.relaxation * cfg.lipschitz) * h[0, :, :, 0]


def _forward(diff, x0, op, cfg: _Config):
    params, y = diff
    return anderson(lambda x: _map(params, x, y, op, cfg), x0, memory=cfg.memory, max_iters=cfg.max_iters,
                    tol=cfg.tol, mixing=cfg.mixing, regularization=cfg.regularization)


@eqx.filter_custom_vjp
def _equilibrium(diff, x0, op, cfg):
    return _forward(diff, x0, op, cfg)


@_equilibrium.def_fwd
def _equilibrium_fwd(perturbed, diff, x0, op, cfg):
    out = _forward(diff, x0, op, cfg)
    return out, out[0]


@_equilibrium.def_bwd
def _equilibrium_bwd(x_star, grad_obj, perturbed, diff, x0, op, cfg):
    params, y = diff
    g = grad_obj[0]
    if g is None:
        return jax.tree_util.tree_map(lambda _: None, perturbed)
    _, vjp_x = jax.vjp(lambda x: _map(params, x, y, op, cfg), x_star)
    # the adjoint equation u = g + J_x^T u: a fixed point of a linear contraction
    u, _, _ = anderson(lambda u: g + vjp_x(u)[0], g, memory=cfg.memory, max_iters=cfg.backward_max_iters,
                       tol=cfg.backward_tol, mixing=cfg.mixing, regularization=cfg.regularization)
    _, vjp_theta = jax.vjp(lambda p, yy: _map(p, x_star, yy, op, cfg), params, y)
    grads = vjp_theta(u)
    return jax.tree_util.tree_map(lambda d, p: d if p else None, grads, perturbed)


# ---- the model ----------------------------------------------------------------------------------
def _positive_int(value, name, minimum=1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{_WHO}: `{name}` must be an int >= {minimum}, got {value!r}")
    return int(value)


def _real_in(value, name, low, high, *, low_open=True, high_open=False) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{_WHO}: `{name}` must be a float, got {value!r}") from err
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    if not ok:
        interval = ("(" if low_open else "[") + f"{low}, {high}" + (")" if high_open else "]")
        raise ValueError(f"{_WHO}: `{name}` must lie in {interval}, got {value!r}")
    return value


class DEQ(eqx.Module):
    r"""Deep equilibrium reconstruction (Gilton, Ongie & Willett, IEEE TCI 2021), gradient-descent
    variant: ``x* = R(x* - eta A^T (A x* - y))`` with ``R(z) = (1 - tau) z + tau N(z)``.

    See the module docstring for the map, the contraction certificate
    (``Lip(f) <= 1 - tau (1 - c) < 1`` for every parameter value), the Anderson forward solve and
    the implicit backward pass (memory independent of the forward iterations).

    Args:
        op: the forward :class:`~invjax.operators.LinearOperator`, real, on images ``(H, W)``
            (e.g. :class:`~invjax.operators.ParallelBeam2D`). Its array leaves, if any, are held
            but not differentiated (zero gradient).
        width: filters of the hidden convolutions of ``N`` (default 32).
        depth: convolutions of ``N`` (default 5).
        lipschitz: ``c``, the Lipschitz bound of ``N`` in ``(0, 1)`` (default 0.9).
        relaxation: ``tau`` in ``(0, 1]`` (default 0.5); ``R = N`` for ``tau = 1``.
        step: initial ``eta`` in ``(0, 2 / ||A||^2)`` (default ``1 / ||A||^2``); trained.
        op_norm: ``||A||`` (default: 1.01 times ``op.norm(iters=100)``, at construction).
        max_iters: most forward updates (default 100).
        tol: forward tolerance on ``||f(x) - x|| / ||x||`` (default 1e-3).
        memory: Anderson memory (default 5; 1 = plain iteration).
        mixing: Anderson damping ``beta`` in ``(0, 1]`` (default 1).
        regularization: relative Tikhonov weight of Anderson's least squares (default 1e-4).
        backward_max_iters: most iterations of the adjoint solve (default ``max_iters``).
        backward_tol: tolerance of the adjoint solve (default ``tol``).
        init: the start ``x0``: ``"adjoint"`` (default, ``eta A^T y``, the first gradient step
            from zero), ``"zeros"``, or a callable ``(op, y) -> x0`` (e.g.
            :func:`~invjax.operators.fbp`). The fixed point does not depend on it (only the
            number of iterations does) and no gradient flows through it.
        power_iters, spectral_grid: settings of the spectral normalisation (defaults 30, 16;
            see :func:`~invjax.learned.networks.dncnn.conv_operator_norm`).
        dtype: parameter dtype (default float32). At call time parameters are cast to the data's
            precision: float64 data give a float64 solve under ``jax_enable_x64``.
        key: ``jax.random`` key for the initialisation (keyword, required).

    Call: ``model(y)`` with ``y`` of shape ``op.out_shape`` returns ``x*`` of shape
    ``op.in_shape`` in ``y``'s floating dtype; ``model.solve(y, x0=None)`` returns
    ``(x, DEQStats)``. Batches: ``jax.vmap(model)(ys)``. Works under ``jit``, ``vmap`` and
    reverse-mode ``grad`` (through the implicit backward pass; forward mode is not supported).

    Training with :func:`~invjax.learned.train`: on batches of clean images ``(B, H, W)``,

    >>> model = DEQ(op, key=jax.random.key(0))
    >>> model, hist = train(model, supervised_loss(op, 0.05), data, optax.adam(1e-3), steps, key=k)

    Raises:
        TypeError: ``op`` not a real ``LinearOperator``; non-float settings.
        ValueError: ``op`` not on 2-D images; ``lipschitz`` not in (0, 1) (a bound ``>= 1``
            certifies nothing); ``relaxation`` not in (0, 1]; ``step`` not in
            ``(0, 2 / ||A||^2)``; bad sizes or tolerances; at call, ``y`` or ``x0`` of the wrong
            shape.

    Example:
        >>> op = ij.operators.ParallelBeam2D((64, 64), np.linspace(0, np.pi, 30, endpoint=False))
        >>> model = DEQ(op, key=jax.random.key(0))
        >>> x, stats = model.solve(op(ij.phantoms.shepp_logan(64)))
        >>> stats.residual, stats.iterations
    """

    network: DnCNN
    step_logit: jax.Array
    op: LinearOperator
    op_norm: float = eqx.field(static=True)
    relaxation: float = eqx.field(static=True)
    max_iters: int = eqx.field(static=True)
    tol: float = eqx.field(static=True)
    memory: int = eqx.field(static=True)
    mixing: float = eqx.field(static=True)
    regularization: float = eqx.field(static=True)
    backward_max_iters: int = eqx.field(static=True)
    backward_tol: float = eqx.field(static=True)
    init: str | Callable = eqx.field(static=True)

    def __init__(
        self,
        op: LinearOperator,
        *,
        width: int = 32,
        depth: int = 5,
        lipschitz: float = 0.9,
        relaxation: float = 0.5,
        step: float | None = None,
        op_norm: float | None = None,
        max_iters: int = 100,
        tol: float = 1e-3,
        memory: int = 5,
        mixing: float = 1.0,
        regularization: float = 1e-4,
        backward_max_iters: int | None = None,
        backward_tol: float | None = None,
        init: str | Callable = "adjoint",
        power_iters: int = 30,
        spectral_grid: int = 16,
        dtype=jnp.float32,
        key,
    ):
        _check_operator(op)
        lipschitz = _real_in(lipschitz, "lipschitz", 0.0, 1.0, high_open=True)
        self.relaxation = _real_in(relaxation, "relaxation", 0.0, 1.0)
        self.max_iters = _positive_int(max_iters, "max_iters")
        self.tol = _real_in(tol, "tol", 0.0, math.inf, low_open=False, high_open=True)
        self.memory = _positive_int(memory, "memory")
        self.mixing = _real_in(mixing, "mixing", 0.0, 1.0)
        self.regularization = _real_in(regularization, "regularization", 0.0, math.inf, low_open=False,
                                       high_open=True)
        self.backward_max_iters = self.max_iters if backward_max_iters is None else _positive_int(
            backward_max_iters, "backward_max_iters")
        self.backward_tol = self.tol if backward_tol is None else _real_in(
            backward_tol, "backward_tol", 0.0, math.inf, low_open=False, high_open=True)
        if not (callable(init) or init in ("adjoint", "zeros")):
            raise ValueError(f"{_WHO}: `init` must be 'adjoint', 'zeros' or a callable (op, y) -> x0, got {init!r}")
        self.init = init
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{_WHO}: `dtype` must be a real floating dtype, got {dtype.name}")
        if op_norm is None:
            op_norm = _NORM_MARGIN * float(op.norm(iters=100))
        self.op_norm = _real_in(op_norm, "op_norm", 0.0, math.inf, high_open=True)
        step_max = 2.0 / self.op_norm**2
        step = 0.5 * step_max if step is None else _real_in(step, "step", 0.0, step_max, high_open=True)
        p = step / step_max
        self.step_logit = jnp.asarray(math.log(p / (1 - p)), dtype)
        self.network = DnCNN(1, _positive_int(depth, "depth"), _positive_int(width, "width"), spectral_norm=True,
                             lipschitz=lipschitz, power_iters=power_iters, spectral_grid=spectral_grid, dtype=dtype,
                             key=key)
        self.op = op

    # ---- properties ---------------------------------------------------------------------------
    @property
    def lipschitz(self) -> float:
        """``c``, the Lipschitz bound of the network ``N``."""
        return self.network.lipschitz

    @property
    def step(self) -> jax.Array:
        """``eta = (2 / ||A||^2) sigmoid(step_logit)``, in ``(0, 2 / ||A||^2)``."""
        return (2.0 / self.op_norm**2) * jax.nn.sigmoid(self.step_logit)

    def lipschitz_bound(self) -> float:
        r"""The certified Lipschitz constant of ``f``: ``1 - tau (1 - c) < 1`` (``R``'s bound times
        ``||I - eta A^T A|| <= 1``, which holds for every ``eta`` in ``(0, 2 / ||A||^2)``)."""
        return 1.0 - self.relaxation * (1.0 - self.lipschitz)

    def _config(self) -> _Config:
        return _Config(self.relaxation, self.lipschitz, self.memory, self.max_iters, self.tol, self.mixing,
                       self.regularization, self.backward_max_iters, self.backward_tol)

    def _params(self, dtype):
        """The parameters as applied: normalised kernels (channels-last, ``(kh, kw, C_in, C_out)``),
        biases and ``eta``, in ``dtype``."""
        # channels-last for the loop (see invjax/learned/networks/_conv.py)
        ws = tuple(hwio(w) for w in self.network.normalised_weights(dtype))
        bs = tuple(b.astype(dtype) for b in self.network.biases)
        return ws, bs, self.step.astype(dtype)

    # ---- input checks -------------------------------------------------------------------------
    def _data(self, y):
        y = jnp.asarray(y)
        if jnp.issubdtype(y.dtype, jnp.complexfloating):
            raise TypeError(f"{_WHO}: `y` must be real, got dtype {y.dtype.name}")
        expected = tuple(self.op.out_shape)
        if tuple(y.shape) != expected:
            hint = " (map a batch with jax.vmap)" if y.ndim > len(expected) else ""
            raise ValueError(f"{_WHO}: `y` must have shape op.out_shape = {expected}, got {tuple(y.shape)}{hint}")
        return y if jnp.issubdtype(y.dtype, jnp.floating) else y.astype(default_float())

    def _start(self, x0, y):
        if x0 is None:
            return None
        x0 = jnp.asarray(x0)
        expected = tuple(self.op.in_shape)
        if tuple(x0.shape) != expected:
            raise ValueError(f"{_WHO}: `x0` must have shape op.in_shape = {expected}, got {tuple(x0.shape)}")
        return x0.astype(y.dtype)

    # ---- application --------------------------------------------------------------------------
    def fixed_point_map(self, x, y) -> jax.Array:
        """``f(x) = R(x - eta A^T (A x - y))`` for one image ``x`` (``op.in_shape``) and data ``y``
        (``op.out_shape``), in ``y``'s dtype."""
        y = self._data(y)
        x = self._start(x, y)
        if x is None:
            raise ValueError(f"{_WHO}: `x` must be an array of shape op.in_shape = {tuple(self.op.in_shape)}")
        return _apply_map(self, x, y)

    def solve(self, y, x0=None) -> tuple[jax.Array, DEQStats]:
        """``(x*, stats)`` for data ``y`` of shape ``op.out_shape`` (batch with ``jax.vmap``);
        ``x0`` overrides ``init``. See :class:`DEQStats`."""
        y = self._data(y)
        return _solve(self, y, self._start(x0, y))

    def __call__(self, y) -> jax.Array:
        """The reconstruction ``x*`` (shape ``op.in_shape``, ``y``'s dtype) of data ``y``."""
        return self.solve(y)[0]


def _check_operator(op):
    if not isinstance(op, LinearOperator):
        raise TypeError(f"{_WHO}: `op` must be an invjax LinearOperator, got {type(op).__name__}")
    if len(tuple(op.in_shape)) != 2:
        raise ValueError(
            f"{_WHO}: `op` must act on single-channel images: expected in_shape (H, W), got {tuple(op.in_shape)}"
        )
    for what, dt in (("dtype", op.dtype), ("out_dtype", op.out_dtype)):
        if jnp.issubdtype(jnp.dtype(dt), jnp.complexfloating):
            raise TypeError(f"{_WHO}: `op` must be real (one image channel); its {what} is {jnp.dtype(dt).name}")


@eqx.filter_jit  # outside jit one compiled program (op by op, the spectral normalisation is slow)
def _apply_map(model: DEQ, x, y):
    return _map(model._params(y.dtype), x, y, model.op, model._config())


@eqx.filter_jit  # outside jit: one compiled program per model and data shape
def _solve(model: DEQ, y, x0):
    params = model._params(y.dtype)
    if x0 is None:
        if model.init == "zeros":
            x0 = jnp.zeros(model.op.in_shape, y.dtype)
        elif model.init == "adjoint":
            x0 = params[2] * model.op.rmv(y).astype(y.dtype)
        else:
            x0 = jnp.asarray(model.init(model.op, y)).astype(y.dtype)
    x0 = jax.lax.stop_gradient(x0)
    # the operator is held, not learned: its array leaves (a mask, a matrix) get zero gradient
    op = jax.tree_util.tree_map(lambda leaf: jax.lax.stop_gradient(leaf) if eqx.is_array(leaf) else leaf, model.op)
    x, res, iters = _equilibrium((params, y), x0, op, model._config())
    res = jax.lax.stop_gradient(res)
    return x, DEQStats(iterations=iters, residual=res, converged=res <= model.tol)
