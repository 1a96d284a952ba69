"""The variational problem: ``min_x F(A x; y) + weight * R(x) + iota_C(x)``."""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..functionals import Functional, SquaredL2
from ..operators import Identity, LinearOperator, weighted
from ..operators.base import concrete_or_none


class Term(NamedTuple):
    """One term ``func(op(x))`` of a problem's objective, as :meth:`Problem.terms` lists them.

    Arguments:
        op: the linear operator ``K``.
        func: the functional ``g`` (holding the weight or the data where it has one).
        role: ``"fidelity"``, ``"regularizer"`` or ``"constraint"``.

    Example:
        TV splits into the finite-difference operator and a weighted ``L21`` norm:

        >>> problem = ij.Problem(ij.operators.Identity((8, 8)), jnp.zeros((8, 8)), ij.functionals.TV(),
        ...                      weight=0.1, constraint=ij.functionals.NonNegative())
        >>> [(t.role, type(t.op).__name__, t.op.out_shape) for t in problem.terms()]
        [('fidelity', 'Identity', (8, 8)), ('regularizer', 'FiniteDifference', (2, 8, 8)), ('constraint', 'Identity', (8, 8))]
        >>> x = jnp.ones((8, 8))
        >>> round(float(sum(t.func(t.op(x)) for t in problem.terms())), 3), round(float(problem.objective(x)), 3)
        (32.0, 32.0)
    """

    op: LinearOperator
    func: Functional
    role: str


class Problem(eqx.Module):
    r"""A regularised inverse problem, as a pytree.

    .. math:: \min_x\; F(A x;\, y) + \lambda\, R(x) + \iota_C(x)

    Arguments:
        op: the forward operator ``A`` (``LinearOperator``).
        data: the measurements ``y``, shape ``op.out_shape``.
        regularizer: the functional ``R`` (``None`` for no regulariser).
        weight: ``lambda >= 0``. A scalar multiplies ``R``. An array weights the regulariser's
            inner functional elementwise: with ``R(x) = g(K x)`` (``R.composite``), the term is
            ``g(lambda * K x)``, e.g. ``weight`` of shape ``(2, 1, 1)`` gives separate
            vertical/horizontal TV weights, and a ``(2, H, W)`` array a weight image. (For
            positively homogeneous ``g`` such as ``L1``/``L21`` this is ``sum lambda_i |.|_i``.)
        fidelity: the data term ``F(., y)`` as a functional with a ``with_data`` method
            (default ``SquaredL2()``: ``½||A x - y||²``).
        constraint: an indicator functional (``NonNegative()``, ``Box(0, 1)``) or ``None``.

    Solvers ask the problem for its :meth:`terms`: the fidelity ``F(A x; y)``, the regulariser
    as ``g(K x)`` with the weight folded in, and the constraint ``iota_C(I x)``.

    Raises:
        TypeError: ``op`` not a ``LinearOperator``; complex ``data`` for a real operator.
        ValueError: ``data`` of the wrong shape, and, when their values are known, a negative
            or non-finite ``weight`` or non-finite ``data``. Traced values are checked when
            the problem is solved.

    Example:
        >>> A = ij.operators.Mask(jnp.ones((8, 8)).at[::2].set(0.0))
        >>> problem = ij.Problem(op=A, data=jnp.zeros((8, 8)), regularizer=ij.functionals.TV(), weight=0.1)
        >>> float(problem.weight), len(problem.terms())   # fidelity and regularizer
        (0.1..., 2)
    """

    op: LinearOperator
    data: jax.Array
    regularizer: Functional | None
    weight: jax.Array
    fidelity: Functional
    constraint: Functional | None

    def __init__(self, op, data, regularizer=None, weight=1.0, fidelity=None, constraint=None):
        if not isinstance(op, LinearOperator):
            raise TypeError(f"Problem: `op` must be a LinearOperator, got {type(op).__name__}")
        data = jnp.asarray(data)
        if tuple(data.shape) != tuple(op.out_shape):
            raise ValueError(
                f"Problem: `data` must have the operator's out_shape {tuple(op.out_shape)}, "
                f"got {tuple(data.shape)}"
            )
        if jnp.issubdtype(data.dtype, jnp.complexfloating) and not jnp.issubdtype(op.out_dtype, jnp.complexfloating):
            raise TypeError(f"Problem: `data` is complex ({data.dtype}) but the operator's output is real")
        if not jnp.issubdtype(data.dtype, jnp.inexact):
            data = data.astype(op.out_dtype)
        value = concrete_or_none(data)
        if value is not None and not np.all(np.isfinite(value)):
            raise ValueError("Problem: `data` must be finite, got NaN or inf entries")
        weight = jnp.asarray(weight)
        if jnp.issubdtype(weight.dtype, jnp.complexfloating):
            raise TypeError(f"Problem: `weight` must be real, got {weight.dtype}")
        if not jnp.issubdtype(weight.dtype, jnp.floating):
            weight = weight.astype(jnp.finfo(op.dtype).dtype)
        w = concrete_or_none(weight)
        if w is not None and (not np.all(np.isfinite(w)) or np.any(w < 0)):
            raise ValueError(f"Problem: `weight` must be finite and >= 0, got {w if w.size < 8 else 'an array with bad entries'}")
        for name, f in (("regularizer", regularizer), ("constraint", constraint), ("fidelity", fidelity)):
            if f is not None and not isinstance(f, Functional):
                raise TypeError(f"Problem: `{name}` must be a Functional or None, got {type(f).__name__}")
        if constraint is not None and not constraint.indicator:
            raise TypeError(
                f"Problem: `constraint` must be an indicator functional (NonNegative, Box), got {type(constraint).__name__}"
            )
        fidelity = SquaredL2() if fidelity is None else fidelity
        if not hasattr(fidelity, "with_data"):
            raise TypeError(f"Problem: `fidelity` must have a `with_data` method, got {type(fidelity).__name__}")
        if regularizer is not None and weight.ndim > 0:
            K, _ = regularizer.composite(op.in_shape)
            if not _broadcasts(weight.shape, K.out_shape):
                raise ValueError(
                    f"Problem: `weight` of shape {weight.shape} must broadcast to the regulariser's "
                    f"inner shape {tuple(K.out_shape)}"
                )
        self.op = op
        self.data = data
        self.regularizer = regularizer
        self.weight = weight
        self.fidelity = fidelity
        self.constraint = constraint

    # ---- what the solvers ask for -------------------------------------------------------------
    @property
    def data_fidelity(self) -> Functional:
        """``F(., y)``: the fidelity holding this problem's data; apply it to ``A x``."""
        return self.fidelity.with_data(self.data)

    @property
    def scalar_weight(self) -> bool:
        return self.weight.ndim == 0

    def split_regularizer(self) -> tuple[LinearOperator, Functional] | None:
        """``(K, g)`` with ``weight * R(x) = g(K x)``, or ``None`` without a regulariser."""
        if self.regularizer is None:
            return None
        K, g = self.regularizer.composite(self.op.in_shape)
        if self.scalar_weight:
            return K, self.weight * g
        return weighted(K, self.weight), g

    def terms(self) -> tuple[Term, ...]:
        """The objective as a sum of terms ``func(op(x))``, in the order fidelity
        ``F(A x; y)``, regulariser ``g(K x)`` (if any, weight folded in), constraint
        ``iota_C(x)`` (if any)."""
        out = [Term(self.op, self.data_fidelity, "fidelity")]
        split = self.split_regularizer()
        if split is not None:
            out.append(Term(split[0], split[1], "regularizer"))
        if self.constraint is not None:
            out.append(Term(Identity(self.op.in_shape, self.op.dtype), self.constraint, "constraint"))
        return tuple(out)

    def regularization(self, x) -> jax.Array:
        """``weight * R(x)`` (or its elementwise-weighted form), 0 without a regulariser."""
        split = self.split_regularizer()
        if split is None:
            return jnp.zeros((), jnp.finfo(x.dtype).dtype)
        K, g = split
        return g(K.mv(x))

    def objective(self, x) -> jax.Array:
        """``F(A x; y) + weight * R(x)`` (the constraint is assumed satisfied)."""
        return self.data_fidelity(self.op.mv(x)) + self.regularization(x)

    def checked(self) -> "Problem":
        """The problem with its data and weight checked: now where their values are known
        (``ValueError``), else at run time (NaN, negative)."""
        data, weight = self.data, self.weight
        value = concrete_or_none(data)
        if value is not None:
            if not np.all(np.isfinite(value)):
                raise ValueError("Problem: `data` contains NaN or inf")
        else:
            data = eqx.error_if(data, ~jnp.all(jnp.isfinite(data)), "Problem: `data` contains NaN or inf")
        value = concrete_or_none(weight)
        if value is not None:
            if not (np.all(np.isfinite(value)) and np.all(value >= 0)):
                raise ValueError("Problem: `weight` must be finite and >= 0")
        else:
            weight = eqx.error_if(
                weight,
                ~jnp.all(jnp.isfinite(weight)) | jnp.any(weight < 0),
                "Problem: `weight` must be finite and >= 0",
            )
        return eqx.tree_at(lambda p: (p.data, p.weight), self, (data, weight))


def _broadcasts(shape, target) -> bool:
    try:
        return np.broadcast_shapes(tuple(shape), tuple(target)) == tuple(target)
    except ValueError:
        return False
