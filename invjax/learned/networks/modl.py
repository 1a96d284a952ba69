r"""MoDL: model-based deep learning, an unrolled network with conjugate-gradient data consistency.

Aggarwal, Mani & Jacob, "MoDL: model-based deep learning architecture for inverse problems",
IEEE Trans. Med. Imaging 38(2), 2019. The reconstruction alternates a residual CNN denoiser
``D_w`` (the same weights at every iteration) with an exact data-consistency step:

.. math::
    x_0 = A^H y, \qquad
    z_k = D_w(x_k), \qquad
    x_{k+1} = \arg\min_x \|A x - y\|_2^2 + \lambda \|x - z_k\|_2^2
            = (A^H A + \lambda I)^{-1} (A^H y + \lambda z_k),

for ``k = 0 .. K-1``; the output is ``x_K``. The network is the unrolled minimisation of
``||A x - y||^2 + lambda ||N_w(x)||^2`` with ``N_w = I - D_w``, alternating a denoising step
(``z_k``) with a quadratic one solved exactly.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from ..._misc import positive_int
from ...operators.base import LinearOperator
from ...solvers.linear import cg
from .dncnn import DnCNN

__all__ = ["MoDL"]

_DIFFS = ("unroll", "implicit")


def _is_complex(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.complexfloating)


def _check_op(op, name: str = "op") -> LinearOperator:
    if not isinstance(op, LinearOperator):
        raise TypeError(f"MoDL: `{name}` must be an invjax LinearOperator (e.g. CartesianMRI), got {type(op).__name__}")
    if len(tuple(op.in_shape)) != 2:
        raise ValueError(
            f"MoDL: `{name}` must map 2-D images (H, W); its in_shape is {tuple(op.in_shape)}"
        )
    return op


def _frozen(op: LinearOperator) -> LinearOperator:
    """The operator with its arrays cut from the gradient: it is data, not a parameter."""
    return jax.tree.map(lambda a: jax.lax.stop_gradient(a) if eqx.is_array(a) else a, op)


def _dc_solve(op, lam, rhs, x0, iters: int, diff: str):
    r"""``(A^H A + lam I)^{-1} rhs`` by at most ``iters`` CG iterations from ``x0``, by the
    library's one linear-solve layer (:func:`invjax.solvers.linear.cg`).

    ``"unroll"``: exactly ``iters`` guarded steps, backpropagated through (the exact derivative of
    what was computed; the steps stop moving once the residual reaches rounding level, which
    keeps that derivative finite: in float32 single-coil MRI, where CG is exact after two of ten
    steps, the unguarded steps divided rounding noise by rounding noise and returned NaN).
    ``"implicit"``: lineax CG until rounding level or ``iters`` iterations, differentiated as a
    linear solve (the cotangent is one more solve with ``H``; the paper's rule, exact only as far
    as CG converged). ``iters`` defines the network: a solve that stops there is not an error."""

    def matvec(v):
        return op.rmv(op.mv(v)) + lam * v

    tol = 10 * float(jnp.finfo(jnp.finfo(rhs.dtype).dtype).eps)
    x, _ = cg(matvec, rhs, tol=tol, max_iters=iters, x0=x0, unroll=diff == "unroll", check=False)
    return x


class MoDL(eqx.Module):
    r"""MoDL (Aggarwal, Mani & Jacob, IEEE TMI 2019): ``K`` unrolled iterations of a CNN
    denoiser and a conjugate-gradient data-consistency step, weights shared across iterations.

    .. math::
        x_0 = A^H y, \qquad
        x_{k+1} = (A^H A + \lambda I)^{-1}\big(A^H y + \lambda D_w(x_k)\big), \quad k < K,

    the minimiser of ``||A x - y||^2 + lambda ||x - D_w(x_k)||^2``. ``D_w(x) = x - N_w(x)`` is a
    residual CNN (by default :class:`DnCNN` with ``depth`` 3x3 convolutions of ``width``
    filters and ReLU: the paper's 5 layers of 64 filters, without its batch normalisation). A
    complex image enters the CNN as two real channels ``(Re x, Im x)``; a real operator gives
    one channel. ``lambda > 0`` is learned through ``log lambda`` (positive by construction,
    initial value ``lam``; the paper's is 0.05).

    **Data consistency.** ``H = A^H A + lambda I`` is Hermitian positive definite with
    eigenvalues in ``[lambda, ||A||^2 + lambda]``; each step runs ``cg_iters`` conjugate
    gradient iterations (:func:`invjax.solvers.linear.cg`; unrolled, a fixed count, so the
    network is one static program, whose iteration stops moving once the residual reaches
    rounding level, which keeps its derivative finite), warm-started at ``z_k``. For single-coil Cartesian MRI with a 0/1 mask ``H`` has two eigenvalues
    (``lambda`` and ``1 + lambda``), so CG is exact after two iterations; with ``C`` coil maps
    normalised to ``sum_c |S_c|^2 = 1`` the condition number is at most ``1 + 1/lambda``.
    Derivatives (``diff``): ``"unroll"`` (default) backpropagates through the CG iterations,
    the exact derivative of the computed output (memory grows with ``K * cg_iters``);
    ``"implicit"`` differentiates ``x = H^{-1} b`` as a linear solve
    (``jax.lax.custom_linear_solve``: the cotangent is one more CG solve with ``H``, and the
    derivative in ``lambda`` follows from ``dH = d lambda I``), as the paper back-propagates
    through its data-consistency layer; exact as far as CG converged.

    **The operator** is stored (``model.op``) and used by ``model(y)``; ``model(y, op)`` takes
    another one of the same image shape (e.g. a per-slice mask: ``jax.vmap(model)(ys, ops)``
    over a batched operator pytree). Its arrays (mask, coil maps) are passed through
    ``stop_gradient``: they are data, not parameters, and get zero gradient in training (with
    decoupled weight decay, e.g. ``optax.adamw``, mask them out of the optimizer).

    Arguments:
        op: a :class:`~invjax.operators.LinearOperator` on 2-D images ``(H, W)``, e.g.
            :class:`~invjax.operators.CartesianMRI` (single- or multi-coil).
        iterations: unrolled iterations ``K`` (int >= 1, default 10 as in the paper).
        cg_iters: CG iterations per data-consistency step (int >= 1, default 10).
        lam: initial ``lambda`` (float > 0, default 0.05).
        depth: convolutions of the default denoiser (int >= 2, default 5).
        width: filters of its hidden layers (int >= 1, default 64).
        denoiser: a module mapping ``(C, H, W) -> (C, H, W)`` real, used instead of the default
            :class:`DnCNN` (its output is ``D_w(x)``, the denoised image); a :class:`DnCNN`
            must have ``C = 2`` channels for a complex operator, 1 for a real one.
        diff: ``"unroll"`` (default) or ``"implicit"``, the derivative of the CG steps.
        dtype: real dtype of the parameters (default float32; cast to the data's precision in
            a call).
        key: ``jax.random`` key for the default denoiser's initialisation (keyword; required
            unless ``denoiser`` is given). The denoiser's last convolution starts at 1/10 of its
            He scale, so that the untrained network is close to the CG-SENSE proximal iteration.

    Shapes and dtypes: ``y`` has shape ``op.out_shape`` (``(H, W)`` single-coil, ``(C, H, W)``
    multi-coil); complex data for a complex operator (real data is accepted and cast). The
    output has shape ``op.in_shape`` and the precision of ``y``: complex64 in, complex64 out,
    also under ``jax_enable_x64`` (the parameters are cast to it). Batches: ``jax.vmap(model)(ys)``;
    with per-item operators ``jax.vmap(model)(ys, ops)`` or ``in_axes=(0, None)``.

    Raises:
        ValueError: ``y`` whose shape is not ``op.out_shape``; a bad ``iterations``,
            ``cg_iters``, ``depth``, ``width``, ``lam`` or ``diff``; a :class:`DnCNN` denoiser
            with the wrong channel count; an operator on images that are not 2-D, or (in a call)
            of another image shape than the network's.
        TypeError: complex ``y`` for a real operator, a boolean or non-numeric ``y``, an
            ``op`` that is not a ``LinearOperator``.

    Example:
        >>> mask = ij.operators.variable_density_mask(16, 2, key=jax.random.PRNGKey(0))
        >>> A = ij.operators.CartesianMRI(mask)  # single coil: A = M F
        >>> model = ij.learned.MoDL(A, iterations=1, cg_iters=2, depth=2, width=2,
        ...                         key=jax.random.PRNGKey(1))  # tiny, untrained
        >>> x = model(A(ij.phantoms.shepp_logan(16)))
        >>> x.shape, x.dtype
        ((16, 16), dtype('complex64'))
    """

    op: LinearOperator
    denoiser: eqx.Module
    log_lam: jax.Array
    iterations: int = eqx.field(static=True)
    cg_iters: int = eqx.field(static=True)
    diff: str = eqx.field(static=True)

    def __init__(
        self,
        op: LinearOperator,
        *,
        iterations: int = 10,
        cg_iters: int = 10,
        lam: float = 0.05,
        depth: int = 5,
        width: int = 64,
        denoiser: eqx.Module | None = None,
        diff: str = "unroll",
        dtype=jnp.float32,
        key=None,
    ):
        self.op = _check_op(op)
        self.iterations = positive_int(iterations, "iterations", "MoDL")
        self.cg_iters = positive_int(cg_iters, "cg_iters", "MoDL")
        if diff not in _DIFFS:
            raise ValueError(f"MoDL: `diff` must be one of {_DIFFS}, got {diff!r}")
        self.diff = diff
        try:
            lam_value = float(lam)
        except TypeError as err:
            raise ValueError(f"MoDL: `lam` must be a float > 0, got {lam!r}") from err
        if not (math.isfinite(lam_value) and lam_value > 0):
            raise ValueError(f"MoDL: `lam` must be a finite float > 0, got {lam!r}")
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"MoDL: `dtype` must be a real floating dtype, got {dtype.name}")
        self.log_lam = jnp.asarray(math.log(lam_value), dtype)
        channels = self.channels
        if denoiser is None:
            depth = positive_int(depth, "depth", "MoDL", 2)
            width = positive_int(width, "width", "MoDL")
            if key is None:
                raise ValueError("MoDL: `key` (a jax.random key) is required to initialise the default denoiser")
            net = DnCNN(channels, depth, width, dtype=dtype, key=key)
            denoiser = eqx.tree_at(lambda d: d.weights[-1], net, net.weights[-1] * 0.1)
        elif isinstance(denoiser, DnCNN):
            if denoiser.channels != channels or denoiser.noise_level_input:
                raise ValueError(
                    f"MoDL: `denoiser` must be a blind DnCNN with {channels} channel(s) for this "
                    f"{'complex' if channels == 2 else 'real'} operator, got channels={denoiser.channels}, "
                    f"noise_level_input={denoiser.noise_level_input}"
                )
        elif not callable(denoiser):
            raise TypeError(
                f"MoDL: `denoiser` must be a callable module (C, H, W) -> (C, H, W), got {type(denoiser).__name__}"
            )
        self.denoiser = denoiser

    # ---- properties -------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        """Channels the CNN sees: 2 (real and imaginary parts) for a complex operator, else 1."""
        return 2 if _is_complex(self.op.dtype) else 1

    @property
    def lam(self) -> jax.Array:
        """``lambda = exp(log_lam)``, the data-consistency weight (> 0)."""
        return jnp.exp(self.log_lam)

    # ---- pieces -------------------------------------------------------------------------------
    def denoise(self, x: jax.Array) -> jax.Array:
        """``z = D_w(x)`` on one image ``(H, W)`` (complex as two channels), dtype of ``x``."""
        if _is_complex(x.dtype):
            out = self.denoiser(jnp.stack([jnp.real(x), jnp.imag(x)]))
            return jax.lax.complex(out[0], out[1]).astype(x.dtype)
        return self.denoiser(x[None])[0].astype(x.dtype)

    def data_consistency(self, z: jax.Array, y: jax.Array, op: LinearOperator | None = None,
                         lam=None) -> jax.Array:
        r"""``argmin_x ||A x - y||^2 + lambda ||x - z||^2 = (A^H A + lambda I)^{-1}(A^H y + lambda z)``
        by ``cg_iters`` CG iterations from ``z`` (``lam`` defaults to the learned ``lambda``).

        ``z`` has shape ``op.in_shape`` and ``y`` ``op.out_shape``; no input checks (use
        the model's call for checked input).

        Example:
            From ``z = 0`` the step is ``(A^H A + lambda I)^{-1} A^H y``; for single-coil
            Cartesian MRI (``A^H A`` projects onto the sampled lines) its sampled k-space is
            ``y / (1 + lambda)``:

            >>> mask = ij.operators.variable_density_mask(16, 2, key=jax.random.PRNGKey(0))
            >>> A = ij.operators.CartesianMRI(mask)
            >>> model = ij.learned.MoDL(A, lam=0.5, denoiser=eqx.nn.Identity())  # no CNN needed here
            >>> y = A(ij.phantoms.shepp_logan(16))
            >>> x = model.data_consistency(jnp.zeros((16, 16), jnp.complex64), y)
            >>> bool(jnp.allclose(A(x), y / 1.5, atol=1e-5))
            True
        """
        return _data_consistency(self, z, y, self.op if op is None else op, lam)

    def _inputs(self, y, op):
        op = self.op if op is None else _check_op(op)
        if tuple(op.in_shape) != tuple(self.op.in_shape):
            raise ValueError(
                f"MoDL: `op` must act on images of the network's shape {tuple(self.op.in_shape)}, "
                f"got in_shape {tuple(op.in_shape)}"
            )
        if _is_complex(op.dtype) != _is_complex(self.op.dtype):
            raise ValueError(
                f"MoDL: `op` must be {'complex' if self.channels == 2 else 'real'} like the network's "
                f"({self.channels} CNN channel(s)), got dtype {jnp.dtype(op.dtype).name}"
            )
        y = jnp.asarray(y)
        out_shape = tuple(op.out_shape)
        if tuple(y.shape) != out_shape:
            hint = " (batch with jax.vmap)" if y.ndim > len(out_shape) else ""
            raise ValueError(f"MoDL: `y` must have shape {out_shape} (op.out_shape), got {tuple(y.shape)}{hint}")
        if y.dtype == jnp.bool_ or not jnp.issubdtype(y.dtype, jnp.number):
            raise TypeError(f"MoDL: `y` must be numeric k-space data (complex), got dtype {y.dtype.name}")
        if _is_complex(op.dtype):
            y = y.astype(jnp.result_type(y.dtype, jnp.complex64))
        elif _is_complex(y.dtype):
            raise TypeError(f"MoDL: `y` must be real for the real operator {type(op).__name__}, got {y.dtype.name}")
        elif not jnp.issubdtype(y.dtype, jnp.floating):
            y = y.astype(op.dtype)
        return y, op

    # ---- the network --------------------------------------------------------------------------
    def __call__(self, y: jax.Array, op: LinearOperator | None = None, *, iterations: int | None = None) -> jax.Array:
        """The reconstruction ``x_K`` from data ``y`` (shape ``op.out_shape``), see the class doc.

        Arguments:
            y: measurements of one image, shape ``op.out_shape``.
            op: the operator (default the stored ``self.op``), same image shape.
            iterations: override ``K`` for this call (e.g. the paper's curriculum: train with
                ``K = 1``, then fine-tune with ``K = 10``; the parameters do not depend on ``K``).

        Returns:
            ``(H, W)`` image, complex for a complex operator, in the precision of ``y``.
        """
        y, op = self._inputs(y, op)
        k = self.iterations if iterations is None else positive_int(iterations, "iterations", "MoDL")
        return _reconstruct(self, y, op, k)


@eqx.filter_jit
def _data_consistency(model: MoDL, z, y, op: LinearOperator, lam):
    op = _frozen(op)
    lam = (model.lam if lam is None else jnp.asarray(lam)).astype(jnp.finfo(z.dtype).dtype)
    return _dc_solve(op, lam, op.rmv(y) + lam * z, z, model.cg_iters, model.diff)


@eqx.filter_jit  # one compiled program per call outside jit (op by op, the unrolled loop is slow)
def _reconstruct(model: MoDL, y: jax.Array, op: LinearOperator, k: int) -> jax.Array:
    op = _frozen(op)
    lam = model.lam.astype(jnp.finfo(y.dtype).dtype)
    aty = op.rmv(y)
    x0 = aty.astype(y.dtype) if _is_complex(y.dtype) else aty

    # The K iterations are unrolled at trace time (K is static): XLA's CPU convolutions inside a
    # rolled loop (a while body) ran ~100x slower (measured: ten 64-filter DnCNN passes at 64x64,
    # 14 s in a scan, 0.11 s unrolled; lax.scan(unroll=True) is the same as this loop, except
    # at K = 1, where it stays a rolled loop). Compilation grows linearly in K.
    x = x0
    for _ in range(k):
        z = model.denoise(x)
        x = _dc_solve(op, lam, aty + lam * z, z, model.cg_iters, model.diff)
    return x
