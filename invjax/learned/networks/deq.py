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

**Forward**: Anderson acceleration (:func:`invjax.solvers.anderson`; type II, Walker & Ni,
SIAM J. Numer. Anal. 49(4), 2011) of the fixed-point iteration, in one ``lax.while_loop``; it
stops when the relative residual ``||f(x) - x|| / ||x||`` is at most ``tol`` or after
``max_iters`` updates, and :meth:`DEQ.solve` returns that ``x`` with its residual
(:class:`DEQStats`). A solve that ends above ``10 * tol`` follows the ``failure`` policy
(raise by default), never silently.

**Derivatives** (implicit differentiation, as in Bai, Kolter & Koltun, NeurIPS 2019), through
the solvers' fixed-point layer :func:`invjax.solvers.fixed_point`: at the fixed point
``dx* = (I - J_x)^{-1} J_theta dtheta``, one linear solve (``lineax.GMRES``, one Jacobian
product of ``f`` per iteration) per derivative; forward mode (``jax.jvp``) solves with
``I - J_x``, reverse mode (``jax.grad``) with its transpose. Nothing of the forward iterations
is stored: memory does not grow with ``max_iters``. The derivative is exact only at an exact
fixed point; with ``tol`` it is accurate to about ``tol``. ``stats`` are not differentiated.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from ..._misc import positive_int, real_in
from ...solvers.fixed_point import fixed_point
from ...operators.base import LinearOperator, default_float
from ._conv import conv2d, hwio
from .dncnn import DnCNN

__all__ = ["DEQ", "DEQStats"]

_WHO = "DEQ"
_FAILURES = ("raise", "nan", "ignore")
_NORM_MARGIN = 1.01  # power iteration approaches ||A|| from below


class DEQStats(NamedTuple):
    """Statistics of one equilibrium solve (arrays; one entry per item under ``vmap``), the
    second output of :meth:`DEQ.solve`.

    Arguments:
        iterations: updates of the iterate, int32 ``()`` (``f`` was evaluated
            ``iterations + 1`` times).
        residual: ``||f(x) - x|| / ||x||`` at the returned ``x`` (``||f(x) - x||`` if
            ``x = 0``), a real scalar ``()``.
        converged: ``residual <= tol``, bool ``()`` (``False`` for a non-finite residual).

    Example:
        >>> op = ij.operators.Mask(jnp.ones((16, 16)).at[::2].set(0.0))
        >>> model = ij.learned.DEQ(op, width=4, depth=2, op_norm=1.0, key=jax.random.key(0))
        >>> x, stats = model.solve(op(ij.phantoms.shepp_logan(16)))
        >>> stats.iterations.dtype, bool(stats.residual <= model.tol), bool(stats.converged)
        (dtype('int32'), True, True)
    """

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


# ---- the iteration map ---------------------------------------------------------------------------
class _Config(NamedTuple):
    """Static settings of the map (hashable)."""

    relaxation: float
    lipschitz: float


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


# ---- the model ----------------------------------------------------------------------------------


class DEQ(eqx.Module):
    r"""Deep equilibrium reconstruction (Gilton, Ongie & Willett, IEEE TCI 2021), gradient-descent
    variant: ``x* = R(x* - eta A^T (A x* - y))`` with ``R(z) = (1 - tau) z + tau N(z)``.

    See the module docstring for the map, the contraction certificate
    (``Lip(f) <= 1 - tau (1 - c) < 1`` for every parameter value), the Anderson forward solve and
    the implicit backward pass (memory independent of the forward iterations).

    Arguments:
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
        backward_max_iters: most Jacobian products of each derivative's linear solve (default
            ``max_iters``).
        backward_tol: relative residual of each derivative's linear solve (default ``tol``).
        init: the start ``x0``: ``"adjoint"`` (default, ``eta A^T y``, the first gradient step
            from zero), ``"zeros"``, or a callable ``(op, y) -> x0`` (e.g.
            :func:`~invjax.operators.fbp`). The fixed point does not depend on it (only the
            number of iterations does) and no gradient flows through it.
        failure: what a forward solve whose residual ends above ``10 * tol``, or a derivative
            solve above ``10 * backward_tol``, does: ``"raise"`` (default;
            ``equinox.EquinoxRuntimeError`` at run time, naming the residual reached), ``"nan"``
            (a NaN reconstruction or derivative) or ``"ignore"`` (the last iterate). Whatever the
            policy, :meth:`solve` reports the forward residual and ``converged``.
        power_iters, spectral_grid: settings of the spectral normalisation (defaults 30, 16;
            see :func:`~invjax.learned.networks.dncnn.conv_operator_norm`).
        dtype: parameter dtype (default float32). At call time parameters are cast to the data's
            precision: float64 data give a float64 solve under ``jax_enable_x64``.
        key: ``jax.random`` key for the initialisation (keyword, required).

    Call: ``model(y)`` with ``y`` of shape ``op.out_shape`` returns ``x*`` of shape
    ``op.in_shape`` in ``y``'s floating dtype; ``model.solve(y, x0=None)`` returns
    ``(x, DEQStats)``. Batches: ``jax.vmap(model)(ys)``. Works under ``jit``, ``vmap``, ``grad``
    and ``jax.jvp`` (implicit derivatives, :func:`invjax.solvers.fixed_point`).

    Training with :func:`~invjax.learned.train` on batches of clean images ``(B, H, W)``:
    ``train(model, supervised_loss(op, relative_noise=0.05), data, optax.adam(1e-3), steps,
    key=k)``.

    Raises:
        TypeError: ``op`` not a real ``LinearOperator``; non-float settings.
        ValueError: ``op`` not on 2-D images; ``lipschitz`` not in (0, 1) (a bound ``>= 1``
            certifies nothing); ``relaxation`` not in (0, 1]; ``step`` not in
            ``(0, 2 / ||A||^2)``; bad sizes or tolerances; at call, ``y`` or ``x0`` of the wrong
            shape.

    Example:
        >>> op = ij.operators.Mask(jnp.ones((16, 16)).at[::2].set(0.0))
        >>> model = ij.learned.DEQ(op, width=4, depth=2, op_norm=1.0, key=jax.random.key(0))
        >>> x, stats = model.solve(op(ij.phantoms.shepp_logan(16)))
        >>> x.shape, bool(stats.converged)
        ((16, 16), True)
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
    failure: str = eqx.field(static=True, default="raise")

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
        failure: str = "raise",
        power_iters: int = 30,
        spectral_grid: int = 16,
        dtype=jnp.float32,
        key,
    ):
        _check_operator(op)
        lipschitz = real_in(lipschitz, "lipschitz", _WHO, 0.0, 1.0, high_open=True)
        self.relaxation = real_in(relaxation, "relaxation", _WHO, 0.0, 1.0)
        self.max_iters = positive_int(max_iters, "max_iters", _WHO)
        self.tol = real_in(tol, "tol", _WHO, 0.0, math.inf, low_open=False, high_open=True)
        self.memory = positive_int(memory, "memory", _WHO)
        self.mixing = real_in(mixing, "mixing", _WHO, 0.0, 1.0)
        self.regularization = real_in(regularization, "regularization", _WHO, 0.0, math.inf, low_open=False,
                                       high_open=True)
        self.backward_max_iters = self.max_iters if backward_max_iters is None else positive_int(
            backward_max_iters, "backward_max_iters", _WHO)
        self.backward_tol = self.tol if backward_tol is None else real_in(
            backward_tol, "backward_tol", _WHO, 0.0, math.inf, low_open=False, high_open=True)
        if not (callable(init) or init in ("adjoint", "zeros")):
            raise ValueError(f"{_WHO}: `init` must be 'adjoint', 'zeros' or a callable (op, y) -> x0, got {init!r}")
        self.init = init
        if failure not in _FAILURES:
            raise ValueError(f"{_WHO}: `failure` must be one of {_FAILURES}, got {failure!r}")
        self.failure = failure
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{_WHO}: `dtype` must be a real floating dtype, got {dtype.name}")
        if op_norm is None:
            op_norm = _NORM_MARGIN * float(op.norm(iters=100))
        self.op_norm = real_in(op_norm, "op_norm", _WHO, 0.0, math.inf, high_open=True)
        step_max = 2.0 / self.op_norm**2
        step = 0.5 * step_max if step is None else real_in(step, "step", _WHO, 0.0, step_max, high_open=True)
        p = step / step_max
        self.step_logit = jnp.asarray(math.log(p / (1 - p)), dtype)
        self.network = DnCNN(1, positive_int(depth, "depth", _WHO), positive_int(width, "width", _WHO), spectral_norm=True,
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
        return _Config(self.relaxation, self.lipschitz)

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
    cfg = model._config()
    x, stats = fixed_point(lambda diff, x: _map(diff[0], x, diff[1], op, cfg), (params, y), x0, memory=model.memory,
                           max_iters=model.max_iters, tol=model.tol, mixing=model.mixing,
                           regularization=model.regularization, adjoint_tol=model.backward_tol,
                           adjoint_max_iters=model.backward_max_iters, failure=model.failure, who=_WHO)
    return x, DEQStats(iterations=stats.iterations, residual=stats.residual, converged=stats.converged)
