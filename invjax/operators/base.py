"""Linear operator base: forward, exact adjoint, algebra, norm and the dot test.

A linear operator ``A`` maps arrays of shape ``A.in_shape`` to arrays of shape ``A.out_shape``.
It is an equinox module (a frozen pytree): its arrays are leaves, so an operator can be passed
through ``jax.jit``, ``jax.vmap`` and ``jax.grad`` like any other argument.

Subclasses implement ``mv(x)`` (the forward map on one unbatched input) and may implement
``rmv(y)`` (the adjoint). Where ``rmv`` is not written by hand it is derived from ``mv`` with
``jax.linear_transpose``, which is exact by construction.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Sequence
from typing import Any, SupportsIndex

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Inexact, Num, PRNGKeyArray, Real

Shape = tuple[int, ...]
# what a constructor accepts as a shape: a sequence of ints (Python or NumPy)
ShapeLike = Sequence[SupportsIndex]


def _is_complex(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.complexfloating)


def default_float() -> Any:
    """The default floating dtype: float32, or float64 under ``jax_enable_x64``."""
    return jnp.result_type(float)


def default_complex() -> Any:
    """The default complex dtype: complex64, or complex128 under ``jax_enable_x64``."""
    return jnp.result_type(complex)


def _check_array(x, shape: Shape, dtype, name: str, who: str) -> jax.Array:
    """Validate shape (at trace time) and dtype kind of an operator input."""
    x = jnp.asarray(x)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(
            f"{who}: argument `{name}` must have shape {tuple(shape)}, got {tuple(x.shape)}"
            + (" (batch with jax.vmap)" if x.ndim > len(shape) else "")
        )
    if _is_complex(x.dtype) and not _is_complex(dtype):
        raise TypeError(
            f"{who}: argument `{name}` must be real ({jnp.dtype(dtype).name}), got {x.dtype.name}"
        )
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(dtype)
    return x


class LinearOperator(eqx.Module):
    """Abstract linear operator ``A: R^in_shape -> R^out_shape`` (or complex).

    Attributes:
        in_shape: shape of one input ``x``.
        out_shape: shape of one output ``A(x)``.
        dtype: dtype of the input space (``float32`` by default, ``complex64`` for MRI).
        out_dtype: dtype of the output space.

    Algebra: ``A @ B`` (composition, ``(A @ B)(x) = A(B(x))``), ``A + B``, ``A - B``,
    ``c * A``, ``-A``; ``A @ x`` with an array applies ``A``. ``A.T`` is the adjoint
    (conjugate transpose for complex operators), ``A.T.T is A``.

    A subclass defines ``in_shape`` and ``out_shape`` (static fields or properties) and the
    abstract ``mv`` (the forward map on one unbatched input); ``rmv`` (the adjoint) defaults
    to the exact ``jax.linear_transpose`` of ``mv``. A subclass that lacks any of them raises
    ``TypeError`` at construction. Calling ``A(x)`` checks ``x``'s shape (``ValueError``)
    and that a real operator gets real input (``TypeError``); batch with ``jax.vmap``.

    Example:
        >>> class Flip(ij.operators.LinearOperator):
        ...     n: int = eqx.field(static=True)
        ...     in_shape = property(lambda self: (self.n,))
        ...     out_shape = property(lambda self: (self.n,))
        ...     def mv(self, x):
        ...         return x[::-1]
        >>> A = 2.0 * Flip(3)
        >>> A(jnp.array([1.0, 2.0, 3.0])), A.T(jnp.array([1.0, 0.0, 0.0]))
        (Array([6., 4., 2.], dtype=float32), Array([0., 0., 2.], dtype=float32))
    """

    # Subclasses provide ``in_shape`` and ``out_shape`` as static fields or properties, and
    # ``mv``; a subclass without them fails at construction (TypeError).
    def __check_init__(self):
        missing = [name for name in ("in_shape", "out_shape") if not hasattr(type(self), name)
                   and name not in {f.name for f in dataclasses.fields(self)}]
        if missing:
            raise TypeError(
                f"{type(self).__name__}: a LinearOperator must define {' and '.join(missing)} "
                "(a static field or a property)"
            )

    # ---- to implement ---------------------------------------------------------------------
    @abc.abstractmethod
    def mv(self, x: jax.Array) -> jax.Array:
        """Forward map on one input of shape ``in_shape`` (no validation)."""

    def rmv(self, y: jax.Array) -> jax.Array:
        """Adjoint map on one input of shape ``out_shape`` (no validation).

        Default: the exact transpose of ``mv`` from ``jax.linear_transpose``, conjugated for
        complex operators.
        """
        dtype = jnp.result_type(self.dtype, y.dtype)
        if _is_complex(y.dtype) and not _is_complex(self.dtype):
            raise TypeError("real-input operator received complex data in its adjoint")
        primal = jax.ShapeDtypeStruct(self.in_shape, dtype)
        (xt,) = jax.linear_transpose(self.mv, primal)(jnp.conj(y))
        return jnp.conj(xt)

    @property
    def dtype(self):
        return default_float()

    @property
    def out_dtype(self):
        return self.dtype

    # ---- public application -----------------------------------------------------------------
    def __call__(self, x: Num[ArrayLike, "*in_shape"]) -> Inexact[Array, "*out_shape"]:
        """Apply ``A`` to ``x`` of shape ``in_shape`` (integers promote to ``dtype``)."""
        x = _check_array(x, self.in_shape, self.dtype, "x", type(self).__name__)
        return _mv(self, x)

    def adjoint(self, y: Num[ArrayLike, "*out_shape"]) -> Inexact[Array, "*in_shape"]:
        """Apply ``A^H`` to ``y`` of shape ``out_shape`` (same as ``A.T(y)``)."""
        y = _check_array(y, self.out_shape, self.out_dtype, "y", type(self).__name__ + ".T")
        return _rmv(self, y)

    @property
    def T(self) -> "LinearOperator":
        return Adjoint(self)

    @property
    def H(self) -> "LinearOperator":
        return Adjoint(self)

    def gram(self, x: jax.Array) -> jax.Array:
        """``A^H A x``."""
        return self.rmv(self.mv(x))

    @property
    def n_measurements(self):
        """How many entries of ``A x`` are really measured (the count ``m`` of a noise level's
        ``E||n||^2 = m sigma^2``, used by the discrepancy principle and SURE).

        Default ``prod(out_shape)`` (a Python int). Operators that keep unobserved entries as
        zeros to keep shapes static (:class:`Mask`, :class:`CartesianMRI`) count only the
        observed ones (a scalar array then: their mask may be traced).
        """
        return math.prod(self.out_shape)

    def gram_diagonal(self) -> jax.Array | None:
        """The diagonal of ``A^H A`` (shape ``in_shape``, real), or ``None`` where it is not cheap.

        Solvers use it to scale (precondition) linear systems; it is exact where given.
        """
        return None

    # ---- algebra ----------------------------------------------------------------------------
    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            return Composed(self, other)
        return self(other)

    def __add__(self, other):
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Sum(self, other)

    def __sub__(self, other):
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Sum(self, Scaled(other, -1.0))

    def __mul__(self, scale):
        if isinstance(scale, LinearOperator):
            return NotImplemented
        return Scaled(self, scale)

    __rmul__ = __mul__

    def __neg__(self):
        return Scaled(self, -1.0)

    def __truediv__(self, scale):
        return Scaled(self, 1.0 / scale)

    # ---- norms ------------------------------------------------------------------------------
    def norm(self, key: PRNGKeyArray | None = None, iters: int = 50) -> Float[Array, ""]:
        """Operator 2-norm ``||A||`` (largest singular value) by power iteration on ``A^H A``.

        Arguments:
            key: ``jax.random`` key for the random start (default ``PRNGKey(0)``).
            iters: number of power iterations (static; default 50). The estimate approaches
                ``||A||`` from below; 50 iterations give a few digits on imaging operators.

        Returns:
            Scalar array (real) with the estimate of ``||A||`` (exact for circulant operators,
            from ``fourier_symbol()``, without iterating).
        """
        if iters < 1:
            raise ValueError(f"norm: `iters` must be >= 1, got {iters}")
        symbol = self.fourier_symbol()
        if symbol is not None:
            # circulant: the singular values are the moduli of the symbol (exact, no iteration)
            return jnp.sqrt(jnp.max(jnp.sum(jnp.abs(symbol) ** 2, axis=0)))
        key = jax.random.PRNGKey(0) if key is None else key
        return _power_norm(self, key, iters)

    def _power_norm(self, key, iters):
        dtype = self.dtype
        if _is_complex(dtype):
            kr, ki = jax.random.split(key)
            real = jnp.finfo(dtype).dtype
            v = jax.random.normal(kr, self.in_shape, real) + 1j * jax.random.normal(ki, self.in_shape, real)
            v = v.astype(dtype)
        else:
            v = jax.random.normal(key, self.in_shape, dtype)
        v = v / jnp.linalg.norm(v)

        def body(_, carry):
            v, _ = carry
            w = self.gram(v)
            n = jnp.linalg.norm(w)
            return (w / jnp.where(n > 0, n, 1.0), n)

        _, lam = jax.lax.fori_loop(0, iters, body, (v, jnp.zeros((), jnp.finfo(dtype).dtype)))
        return jnp.sqrt(lam)

    def fourier_symbol(self) -> jax.Array | None:
        """Eigenvalues of a circulant operator on real 2-D images, or ``None``.

        For an operator that is diagonalised by the 2-D real FFT (``rfft2``), returns the array
        ``s`` of shape ``(c, N, M // 2 + 1)`` with ``rfft2((A x)[k]) = s[k] * rfft2(x)`` for each
        of its ``c`` output channels (``c = 1`` and output shape ``(N, M)`` for ``c = 1``
        operators). Solvers use it for exact FFT solves of normal equations.
        """
        return None

    def as_matrix(self) -> jax.Array:
        """Dense matrix of shape ``(prod(out_shape), prod(in_shape))`` (small operators only)."""
        return _as_matrix(self)

    def _as_matrix(self):
        n = math.prod(self.in_shape)
        eye = jnp.eye(n, dtype=self.dtype).reshape((n,) + tuple(self.in_shape))
        cols = jax.vmap(self.mv)(eye)
        return cols.reshape(n, -1).T


# Outside ``jit`` each public application is one compiled program per operator and shape (op by
# op, the first call of a shape compiles every primitive on its own); inside a ``jit`` inlined.
_mv = eqx.filter_jit(lambda op, x: op.mv(x))
_rmv = eqx.filter_jit(lambda op, y: op.rmv(y))
_power_norm = eqx.filter_jit(lambda op, key, iters: op._power_norm(key, iters))
_as_matrix = eqx.filter_jit(lambda op: op._as_matrix())


class Adjoint(LinearOperator):
    """The adjoint ``A^H`` of an operator (``A.T``): ``in_shape`` and ``out_shape`` swapped.

    Arguments:
        op: the operator ``A``.

    Example:
        >>> A = ij.operators.Dense(jnp.array([[1.0, 2.0, 3.0]]))
        >>> A.T.in_shape, A.T(jnp.array([2.0])), A.T.T is A
        ((1,), Array([2., 4., 6.], dtype=float32), True)
    """

    op: LinearOperator

    @property
    def in_shape(self):
        return self.op.out_shape

    @property
    def out_shape(self):
        return self.op.in_shape

    @property
    def dtype(self):
        return self.op.out_dtype

    @property
    def out_dtype(self):
        return self.op.dtype

    def __call__(self, y):
        return self.op.adjoint(y)

    def adjoint(self, x):
        return self.op(x)

    def mv(self, x):
        return self.op.rmv(x)

    def rmv(self, y):
        return self.op.mv(y)

    @property
    def T(self):
        return self.op

    H = T


def _check_compatible(a: LinearOperator, b: LinearOperator, what: str):
    if tuple(a.in_shape) != tuple(b.out_shape):
        raise ValueError(
            f"{what}: the left operator's in_shape {tuple(a.in_shape)} must equal the right "
            f"operator's out_shape {tuple(b.out_shape)}"
        )


class Composed(LinearOperator):
    """Composition ``(A @ B)(x) = A(B(x))``; its adjoint is ``B^H A^H``. Written ``A @ B``.

    Arguments:
        left: the outer operator ``A``.
        right: the inner operator ``B``, with ``B.out_shape == A.in_shape``.

    Raises:
        ValueError: if ``B.out_shape`` differs from ``A.in_shape``.

    Example:
        >>> D = ij.operators.Downsample((4,), 2)
        >>> A = D @ ij.operators.Mask(jnp.array([1.0, 0.0, 1.0, 1.0]))
        >>> A(jnp.array([2.0, 2.0, 2.0, 2.0]))
        Array([1., 2.], dtype=float32)
    """

    left: LinearOperator
    right: LinearOperator

    def __check_init__(self):
        _check_compatible(self.left, self.right, "A @ B")

    @property
    def in_shape(self):
        return self.right.in_shape

    @property
    def out_shape(self):
        return self.left.out_shape

    @property
    def dtype(self):
        return self.right.dtype

    @property
    def out_dtype(self):
        return self.left.out_dtype

    @property
    def n_measurements(self):
        return self.left.n_measurements  # the outer operator takes the measurements

    def mv(self, x):
        return self.left.mv(self.right.mv(x))

    def rmv(self, y):
        return self.right.rmv(self.left.rmv(y))


class Sum(LinearOperator):
    """Sum ``(A + B)(x) = A(x) + B(x)`` of operators with equal shapes (``A + B``, ``A - B``).

    Arguments:
        a: the operator ``A``.
        b: the operator ``B``, with ``A``'s ``in_shape`` and ``out_shape``.

    Raises:
        ValueError: if the shapes differ.

    Example:
        >>> I = ij.operators.Identity((2,))
        >>> (I + 2.0 * I)(jnp.array([1.0, -1.0]))
        Array([ 3., -3.], dtype=float32)
    """

    a: LinearOperator
    b: LinearOperator

    def __check_init__(self):
        if tuple(self.a.in_shape) != tuple(self.b.in_shape) or tuple(self.a.out_shape) != tuple(self.b.out_shape):
            raise ValueError(
                "A + B: operators must have equal shapes, got "
                f"{tuple(self.a.in_shape)}->{tuple(self.a.out_shape)} and "
                f"{tuple(self.b.in_shape)}->{tuple(self.b.out_shape)}"
            )

    @property
    def in_shape(self):
        return self.a.in_shape

    @property
    def out_shape(self):
        return self.a.out_shape

    @property
    def dtype(self):
        return jnp.result_type(self.a.dtype, self.b.dtype)

    @property
    def out_dtype(self):
        return jnp.result_type(self.a.out_dtype, self.b.out_dtype)

    def mv(self, x):
        return self.a.mv(x) + self.b.mv(x)

    def rmv(self, y):
        return self.a.rmv(y) + self.b.rmv(y)


class _Rescaled(LinearOperator):
    """An operator ``op`` times a scale: the shapes and dtypes of ``op``."""

    op: LinearOperator

    @property
    def in_shape(self):
        return self.op.in_shape

    @property
    def out_shape(self):
        return self.op.out_shape

    @property
    def dtype(self):
        return self.op.dtype

    @property
    def out_dtype(self):
        return self.op.out_dtype

    @property
    def n_measurements(self):
        return self.op.n_measurements


class Scaled(_Rescaled):
    """Scalar multiple ``(c A)(x) = c A(x)``; adjoint ``conj(c) A^H``. Written ``c * A``.

    Arguments:
        op: the operator ``A``.
        scale: the scalar ``c`` (real or complex; may be traced).

    Raises:
        ValueError: if ``scale`` is not a scalar.

    Example:
        >>> A = 1j * ij.operators.Dense(jnp.eye(2, dtype=jnp.complex64))
        >>> A(jnp.array([1.0 + 0j, 2.0])), A.T(jnp.array([1.0 + 0j, 2.0]))     # c x, conj(c) y
        (Array([0.+1.j, 0.+2.j], dtype=complex64), Array([0.-1.j, 0.-2.j], dtype=complex64))
    """

    scale: Inexact[Array, ""]

    def __init__(self, op: LinearOperator, scale: Num[ArrayLike, ""]):
        self.op = op
        self.scale = jnp.asarray(scale)
        if self.scale.ndim != 0:
            raise ValueError(f"c * A: `scale` must be a scalar, got shape {self.scale.shape}")

    def mv(self, x):
        return _apply_scale(self.op.mv(x), self.scale)

    def rmv(self, y):
        return _apply_scale(self.op.rmv(y), jnp.conj(self.scale))

    def fourier_symbol(self):
        sym = self.op.fourier_symbol()
        return None if sym is None else sym * self.scale

    def gram(self, x):
        return _apply_scale(self.op.gram(x), jnp.abs(self.scale) ** 2)

    def gram_diagonal(self):
        d = self.op.gram_diagonal()
        return None if d is None else d * (jnp.abs(self.scale) ** 2).astype(d.dtype)


class ChannelScaled(_Rescaled):
    """Per-channel multiple ``(D_c A)(x)[k] = c[k] A(x)[k]`` of an operator with a leading
    channel axis (``out_shape = (C, N, M)``, e.g. the stacked directions of a finite
    difference), ``c`` real of shape ``(C,)``. Unlike a general elementwise weight (``Mask``)
    it keeps ``A``'s Fourier symbol (``c[k] s[k]``), so FFT solves still apply.

    Arguments:
        op: the operator ``A``, with ``out_shape = (C, ...)`` of at least two axes.
        scale: real array ``(C,)``, one factor per channel.

    Raises:
        ValueError: if ``scale`` is not of shape ``(C,)`` or ``A`` has no channel axis.
        TypeError: if ``scale`` is complex.

    Example:
        >>> D = ij.operators.FiniteDifference((3, 3))               # out_shape (2, 3, 3)
        >>> W = ij.operators.ChannelScaled(D, jnp.array([1.0, 0.0]))  # keep the first axis
        >>> x = jnp.arange(9.0).reshape(3, 3)
        >>> bool(jnp.all(W(x)[1] == 0)), bool(jnp.all(W(x)[0] == D(x)[0]))
        (True, True)
    """

    scale: Float[Array, " C"]

    def __init__(self, op: LinearOperator, scale: Real[ArrayLike, " C"]):
        scale = jnp.asarray(scale)
        c = tuple(op.out_shape)[:1]
        if len(op.out_shape) < 2 or scale.shape != c:
            raise ValueError(
                f"ChannelScaled: `scale` must have shape (channels,) = {c} for an operator with out_shape "
                f"{tuple(op.out_shape)}, got {scale.shape}"
            )
        if _is_complex(scale.dtype):
            raise TypeError(f"ChannelScaled: `scale` must be real, got {scale.dtype}")
        self.op = op
        self.scale = scale

    def _per_channel(self, v):
        return self.scale.reshape((-1,) + (1,) * (v.ndim - 1)).astype(jnp.finfo(v.dtype).dtype)

    def mv(self, x):
        y = self.op.mv(x)
        return y * self._per_channel(y)

    def rmv(self, y):
        return self.op.rmv(y * self._per_channel(y))

    def fourier_symbol(self):
        sym = self.op.fourier_symbol()
        if sym is None or sym.shape[0] != self.scale.shape[0]:
            return None
        return sym * self.scale.reshape(-1, 1, 1)


def weighted(op: LinearOperator, weight: Real[ArrayLike, "..."]) -> LinearOperator:
    """The operator ``x -> weight * op(x)`` (elementwise), in its most structured form.

    A weight constant over all but the leading (channel) axis gives :class:`ChannelScaled`,
    which keeps ``op``'s Fourier symbol; any other weight a :class:`~invjax.operators.Mask`
    composed with ``op``.

    Arguments:
        op: the operator.
        weight: real array broadcastable to ``op.out_shape``.

    Returns:
        A :class:`LinearOperator` with ``op``'s shapes.

    Raises:
        ValueError: if ``weight`` does not broadcast to ``op.out_shape``.

    Example:
        >>> D = ij.operators.FiniteDifference((8, 8))
        >>> type(ij.operators.weighted(D, jnp.array([1.0, 2.0])[:, None, None])).__name__
        'ChannelScaled'
        >>> type(ij.operators.weighted(D, jnp.ones((2, 8, 8)))).__name__
        'Composed'
    """
    from .mask import Mask

    weight = jnp.asarray(weight)
    out = tuple(op.out_shape)
    try:
        np.broadcast_shapes(tuple(weight.shape), out)
        ok = np.broadcast_shapes(tuple(weight.shape), out) == out
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"weighted: `weight` of shape {weight.shape} must broadcast to the operator's out_shape {out}")
    pad = (1,) * (len(out) - weight.ndim) + tuple(weight.shape)
    if len(out) >= 3 and all(d == 1 for d in pad[1:]):
        return ChannelScaled(op, jnp.broadcast_to(weight.reshape(pad[:1]), out[:1]))
    return Mask(jnp.broadcast_to(weight, out), dtype=op.out_dtype) @ op


def _apply_scale(v, s):
    # A real scale keeps v's precision (a float64 Python scalar must not upcast float32 data).
    if not _is_complex(s.dtype):
        s = s.astype(jnp.finfo(v.dtype).dtype)
    return v * s


class Identity(LinearOperator):
    """Identity ``I x = x`` on arrays of shape ``shape``.

    Arguments:
        shape: the array shape.
        dtype: the input (and output) dtype (default: the default float, float32 or float64
            under ``jax_enable_x64``; pass ``jnp.complex64`` for complex images). Applied to an
            array of another dtype it returns that array unchanged.

    Example:
        >>> I = ij.operators.Identity((2, 2))
        >>> I.in_shape, I.out_shape, float(I.norm())
        ((2, 2), (2, 2), 1.0)
    """

    shape: Shape = eqx.field(static=True)
    _dtype: str = eqx.field(static=True)

    def __init__(self, shape: ShapeLike, dtype=None):
        self.shape = tuple(int(s) for s in shape)
        self._dtype = jnp.dtype(default_float() if dtype is None else dtype).name

    @property
    def in_shape(self):
        return self.shape

    @property
    def out_shape(self):
        return self.shape

    @property
    def dtype(self):
        return jnp.dtype(self._dtype)

    def mv(self, x):
        return x

    def rmv(self, y):
        return y

    def gram(self, x):
        return x

    def gram_diagonal(self):
        return jnp.ones(self.shape, jnp.finfo(self.dtype).dtype)

    def fourier_symbol(self):
        if len(self.shape) != 2 or _is_complex(self.dtype):
            return None
        n, m = self.shape
        return jnp.ones((1, n, m // 2 + 1), self.dtype)


def _random_like(key, shape, dtype):
    if _is_complex(dtype):
        real = jnp.finfo(dtype).dtype
        kr, ki = jax.random.split(key)
        return (jax.random.normal(kr, shape, real) + 1j * jax.random.normal(ki, shape, real)).astype(dtype)
    return jax.random.normal(key, shape, dtype)


def check_adjoint(op: LinearOperator, key: PRNGKeyArray | None = None, dtype=None) -> Float[Array, ""]:
    """Relative error of the dot test ``<A x, y> = <x, A^H y>`` for random ``x``, ``y``.

    The error is ``|<A x, y> - <x, A^H y>| / max(||A x|| ||y||, ||x|| ||A^H y||)``: the
    difference normalised by the Cauchy-Schwarz bounds of both sides, so it is scale-free and does not blow up when the
    random inner product happens to be small.

    Arguments:
        op: the operator.
        key: ``jax.random`` key (default ``PRNGKey(0)``).
        dtype: dtype for the random vectors (default: the operator's input dtype; the output
            vector gets the matching precision).

    Returns:
        Scalar real array; ~1e-7 in float32 and ~1e-16 in float64 for an exact adjoint.

    Example:
        >>> A = ij.operators.Convolution(ij.operators.gaussian_psf(5, 1.0), (16, 16))
        >>> bool(ij.operators.check_adjoint(A) < 1e-5)
        True
    """
    key = jax.random.PRNGKey(0) if key is None else key
    # one compiled program per operator and shape (op by op, each new shape compiles every
    # primitive: ~10x slower for a dot test of a fresh shape)
    return _dot_test(op, key, None if dtype is None else jnp.dtype(dtype))


@eqx.filter_jit
def _dot_test(op, key, dtype):
    kx, ky = jax.random.split(key)
    in_dtype = op.dtype if dtype is None else dtype
    real = jnp.finfo(in_dtype).dtype
    out_dtype = jnp.result_type(op.out_dtype, real)
    if not _is_complex(op.out_dtype):
        out_dtype = real
    x = _random_like(kx, op.in_shape, in_dtype)
    y = _random_like(ky, op.out_shape, out_dtype)
    ax = op(x)
    aty = op.T(y)
    lhs = jnp.vdot(y, ax)  # <Ax, y> = sum conj(y) * Ax
    rhs = jnp.vdot(aty, x)  # <x, A^H y> = sum conj(A^H y) * x
    bound = jnp.maximum(jnp.linalg.norm(ax) * jnp.linalg.norm(y), jnp.linalg.norm(x) * jnp.linalg.norm(aty))
    diff = jnp.abs(lhs - rhs)
    # A zero operator (e.g. differences of a single pixel) has both sides exactly 0.
    return jnp.where(bound > 0, diff / jnp.where(bound > 0, bound, 1.0), diff)


def concrete_or_none(x) -> np.ndarray | None:
    """Return ``x`` as a numpy array if its value is known at trace time, else ``None``."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None
