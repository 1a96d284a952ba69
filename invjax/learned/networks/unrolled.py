r"""Learned primal-dual reconstruction: an unrolled network with the operator in every iteration.

Adler & Öktem, "Learned primal-dual reconstruction", IEEE Trans. Med. Imaging 37(6), 2018.
With :math:`K = A / \|A\|` (the operator scaled to norm 1) and :math:`g = y / \|A\|`, the
network keeps a primal memory :math:`f \in X^{N_p}` (``n_primal`` images) and a dual memory
:math:`h \in Y^{N_d}` (``n_dual`` data-space arrays), both starting at zero, and runs
``iterations`` times

.. math::
    h_i &= h_{i-1} + \Gamma_{\theta_i^d}\big(h_{i-1},\; K f_{i-1}^{(1)},\; g\big), \\
    f_i &= f_{i-1} + \Lambda_{\theta_i^p}\big(f_{i-1},\; K^* h_i^{(1)}\big),

returning :math:`f_I^{(1)}`. :math:`\Gamma` and :math:`\Lambda` are small CNNs (``depth`` 3x3
convolutions of ``width`` filters with PReLU between them; the paper: 3 layers of 32), with
their own parameters in every iteration (not shared), the inputs stacked as channels. The dual
network convolves in data space (a sinogram is an angles x detectors image).

Complex operators (:class:`~invjax.operators.CartesianMRI`) carry every complex image as two
real channels (real, imaginary); multi-coil data ``(coils, H, W)`` carry the coils as channels.
So the operator fixes the channel counts, and one trained network belongs to one operator
*kind* (its image and data sizes may change: the convolutions do not care).

Example:
    The shipped network (:func:`~invjax.learned.pretrained`) is bound to 64x64 parallel-beam CT
    with 30 angles and 91 detectors:

    >>> net = ij.learned.pretrained("lpd-ct64")
    >>> y = net.op(ij.phantoms.shepp_logan(64))
    >>> y.shape, net.iterations, net.n_primal, net.n_dual, net.channels
    ((30, 91), 10, 5, 5, (1, 1))
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from ..._misc import positive_int
from ...operators.base import LinearOperator, default_float
from ._conv import conv2d, hwio

__all__ = ["LearnedPrimalDual"]

_WHO = "LearnedPrimalDual"


def _is_complex(dtype) -> bool:
    return jnp.issubdtype(jnp.dtype(dtype), jnp.complexfloating)


def _layout(op: LinearOperator) -> tuple[int, int]:
    """(real channels of one image, real channels of one data array) for ``op``."""
    if not isinstance(op, LinearOperator):
        raise TypeError(f"{_WHO}: `op` must be an invjax LinearOperator, got {type(op).__name__}")
    if len(op.in_shape) != 2:
        raise ValueError(f"{_WHO}: `op` must act on 2-D images (H, W); its in_shape is {op.in_shape}")
    if len(op.out_shape) not in (2, 3):
        raise ValueError(
            f"{_WHO}: `op` data must be 2-D (e.g. angles x detectors) or 3-D (channels x H x W, e.g. coils); "
            f"its out_shape is {op.out_shape}"
        )
    image = 2 if _is_complex(op.dtype) else 1
    data = (op.out_shape[0] if len(op.out_shape) == 3 else 1) * (2 if _is_complex(op.out_dtype) else 1)
    return image, data


def _to_channels(z: jax.Array, sample_ndim: int, real) -> jax.Array:
    """A batch ``(B, *S)`` of images (S = (H, W)) or data arrays (S = (C, H, W)), real or
    complex, as real channels ``(B, c, H, W)``."""
    z = z if sample_ndim == 3 else z[:, None]
    if jnp.iscomplexobj(z):
        return jnp.concatenate([jnp.real(z), jnp.imag(z)], axis=1).astype(real)
    return z.astype(real)


def _from_channels(ch: jax.Array, shape, complex_: bool) -> jax.Array:
    """Inverse of :func:`_to_channels`: ``(B, c, H, W) -> (B, *shape)``."""
    if complex_:
        k = ch.shape[1] // 2
        ch = jax.lax.complex(ch[:, :k], ch[:, k:])
    return ch.reshape((ch.shape[0],) + tuple(shape))


def _block_params(key, c_in, c_out, width, depth, dtype):
    """Weights of one CNN block: He-initialised hidden layers, the last layer scaled by 0.1
    so that the untrained network makes small updates (the iterations start near zero)."""
    sizes = [c_in] + [width] * (depth - 1) + [c_out]
    keys = jax.random.split(key, depth)
    ws, bs = [], []
    for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        std = math.sqrt(2.0 / (9 * a)) * (0.1 if i == depth - 1 else 1.0)
        ws.append(std * jax.random.normal(k, (b, a, 3, 3), dtype))
        bs.append(jnp.zeros((b,), dtype))
    alphas = [jnp.full((width,), 0.25, dtype) for _ in range(depth - 1)]  # PReLU slopes
    return tuple(ws), tuple(bs), tuple(alphas)


def _block_apply(params, x):
    """One CNN block on ``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``, computed channels-last
    (:func:`~invjax.learned.networks._conv.conv2d`; kernels stored ``(C_out, C_in, 3, 3)``)."""
    ws, bs, alphas = params
    x = jnp.moveaxis(x, 1, -1)
    for i, (w, b) in enumerate(zip(ws, bs)):
        x = conv2d(x, hwio(w), b)
        if i < len(ws) - 1:
            a = alphas[i].astype(x.dtype)
            x = jnp.where(x >= 0, x, a * x)
    return jnp.moveaxis(x, -1, 1)


class LearnedPrimalDual(eqx.Module):
    r"""Learned primal-dual reconstruction (Adler & Öktem, IEEE TMI 2018) for any operator.

    See the module docstring for the iteration. The network stores the operator and its norm
    (the operator's array leaves, if any, e.g. an MRI mask, are not trained: gradients are
    stopped at them).

    Arguments:
        op: the forward :class:`~invjax.operators.LinearOperator`, images ``(H, W)`` real or
            complex, data 2-D or ``(C, H, W)``.
        iterations: unrolled iterations ``I`` (default 10, the paper's).
        n_primal, n_dual: memory channels (default 5 and 5).
        width: filters of the hidden convolutions (default 32).
        depth: convolutions per block (default 3).
        op_norm: :math:`\|A\|`; default: estimated with ``op.norm()`` (power iteration) at
            construction.
        dtype: real dtype of the parameters (default float32).
        key: ``jax.random`` key (keyword, required).

    Call ``model(y)`` with ``y`` of shape ``op.out_shape`` (or a batch ``(B, *op.out_shape)``,
    mapped with ``jax.vmap``) returns the image ``op.in_shape`` (or ``(B, *op.in_shape)``), of
    the operator's domain type (complex for MRI). Works under ``jit``, ``vmap`` and ``grad``.

    Raises:
        TypeError: ``op`` not an invjax ``LinearOperator``, or a ``dtype`` that is not a real
            floating dtype.
        ValueError: an ``op`` not acting on 2-D images (or with data neither 2-D nor 3-D), a
            non-positive size or ``op_norm``; at call, a ``y`` whose shape is neither
            ``op.out_shape`` nor ``(B, *op.out_shape)``.

    Example:
        A new network is ``LearnedPrimalDual(op, key=jax.random.key(0))`` (its random
        initialisation compiles for seconds, so this example uses the shipped one, trained for
        64x64 sparse-view CT with 30 angles):

        >>> net = ij.learned.pretrained("lpd-ct64")
        >>> x_true = ij.phantoms.shepp_logan(64)
        >>> x = eqx.filter_jit(net)(net.op(x_true))  # one compiled program (a few seconds)
        >>> x.shape, x.dtype
        ((64, 64), dtype('float32'))
        >>> bool(ij.metrics.psnr(x, x_true) > 30)  # filtered back-projection: 20 dB
        True
    """

    primal: tuple
    dual: tuple
    op: LinearOperator
    op_norm: float = eqx.field(static=True)
    iterations: int = eqx.field(static=True)
    n_primal: int = eqx.field(static=True)
    n_dual: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)

    def __init__(
        self,
        op: LinearOperator,
        *,
        iterations: int = 10,
        n_primal: int = 5,
        n_dual: int = 5,
        width: int = 32,
        depth: int = 3,
        op_norm: float | None = None,
        dtype=jnp.float32,
        key,
    ):
        img_c, data_c = _layout(op)
        self.iterations = positive_int(iterations, "iterations", _WHO)
        self.n_primal = positive_int(n_primal, "n_primal", _WHO)
        self.n_dual = positive_int(n_dual, "n_dual", _WHO)
        self.width = positive_int(width, "width", _WHO)
        self.depth = positive_int(depth, "depth", _WHO, 2)
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{_WHO}: `dtype` must be a real floating dtype, got {dtype.name}")
        if op_norm is None:
            op_norm = float(op.norm())
        op_norm = float(op_norm)
        if not (math.isfinite(op_norm) and op_norm > 0):
            raise ValueError(f"{_WHO}: `op_norm` must be finite and > 0, got {op_norm}")
        self.op, self.op_norm = op, op_norm
        kp, kd = jax.random.split(key)
        p_in, p_out = (self.n_primal + 1) * img_c, self.n_primal * img_c
        d_in, d_out = (self.n_dual + 2) * data_c, self.n_dual * data_c
        make_p = lambda k: _block_params(k, p_in, p_out, self.width, self.depth, dtype)  # noqa: E731
        make_d = lambda k: _block_params(k, d_in, d_out, self.width, self.depth, dtype)  # noqa: E731
        self.primal = jax.vmap(make_p)(jax.random.split(kp, self.iterations))
        self.dual = jax.vmap(make_d)(jax.random.split(kd, self.iterations))

    # channel bookkeeping ---------------------------------------------------------------------
    @property
    def channels(self) -> tuple[int, int]:
        """(real channels per image, real channels per data array) the operator implies."""
        return _layout(self.op)

    def check_operator(self, op: LinearOperator) -> LinearOperator:
        """``op`` if it gives the channel counts this network was built for, else ValueError."""
        got, want = _layout(op), (self.primal[0][0].shape[2] // (self.n_primal + 1),
                                  self.dual[0][0].shape[2] // (self.n_dual + 2))
        if got != want:
            raise ValueError(
                f"{_WHO}: `op` gives (image, data) channels {got}, but the network was built for {want} "
                "(real/complex images and the coil count must match the training operator)"
            )
        return op

    def with_operator(self, op: LinearOperator, op_norm: float | None = None) -> "LearnedPrimalDual":
        """The same network applied with another operator of the same kind (e.g. another size)."""
        self.check_operator(op)
        fresh = LearnedPrimalDual(
            op, iterations=self.iterations, n_primal=self.n_primal, n_dual=self.n_dual, width=self.width,
            depth=self.depth, op_norm=op_norm, dtype=self.primal[0][0].dtype, key=jax.random.key(0),
        )
        return eqx.tree_at(lambda m: (m.primal, m.dual), fresh, (self.primal, self.dual))

    # the network -------------------------------------------------------------------------------
    def __call__(self, y: jax.Array) -> jax.Array:
        y = jnp.asarray(y)
        shape = tuple(self.op.out_shape)
        if y.shape == shape:
            return self._batch(y[None])[0]
        if y.ndim == len(shape) + 1 and y.shape[1:] == shape:
            return self._batch(y)
        raise ValueError(f"{_WHO}: `y` must have shape {shape} (op.out_shape) or (B, *{shape}), got {y.shape}")

    def _batch(self, y):
        op = jax.lax.stop_gradient(self.op)
        real = jnp.promote_types(self.primal[0][0].dtype, default_float())
        img_complex, data_complex = _is_complex(op.dtype), _is_complex(op.out_dtype)
        in_shape, out_shape = tuple(op.in_shape), tuple(op.out_shape)
        scale = 1.0 / self.op_norm
        g = _to_channels(y, len(out_shape), real) * jnp.asarray(scale, real)
        img_c, data_c = self.channels
        b = y.shape[0]
        f = jnp.zeros((b, self.n_primal * img_c) + in_shape, real)
        h = jnp.zeros((b, self.n_dual * data_c) + tuple(g.shape[2:]), real)
        fwd, adj = jax.vmap(op.mv), jax.vmap(op.rmv)

        def forward(ch):
            x = _from_channels(ch, in_shape, img_complex).astype(op.dtype)
            return _to_channels(fwd(x), len(out_shape), real) * jnp.asarray(scale, real)

        def backward(ch):
            d = _from_channels(ch, out_shape, data_complex).astype(op.out_dtype)
            return _to_channels(adj(d), 2, real) * jnp.asarray(scale, real)

        def body(carry, params):
            f, h = carry
            p_params, d_params = params
            h = h + _block_apply(d_params, jnp.concatenate([h, forward(f[:, :img_c]), g], axis=1))
            f = f + _block_apply(p_params, jnp.concatenate([f, backward(h[:, :data_c])], axis=1))
            return (f, h), None

        # unrolled scan: XLA's CPU convolutions inside a rolled loop ran ~5x slower (measured,
        # 64x64 CT, batch 8); the parameters differ per iteration, so nothing is lost
        (f, _), _ = jax.lax.scan(body, (f, h), (self.primal, self.dual), unroll=self.iterations)
        out = _from_channels(f[:, :img_c], in_shape, img_complex)
        return out if img_complex else out.astype(real)
