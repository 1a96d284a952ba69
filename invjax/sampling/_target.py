"""The sampled density ``exp(-U)``, ``U = (F(A x; y) + w R(x)) / sigma^2``, read off a Problem.

A sampler asks for the gradient of the smooth part of ``U`` (the fidelity and a smooth
regulariser), the proximal maps of the non-smooth parts (a regulariser with a prox, a convex
constraint), their Lipschitz constants, and ``U`` itself. Written once here so every Langevin
sampler reads a problem the same way.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..operators.base import concrete_or_none
from ..solvers import Problem


def check_sigma(sigma, who: str) -> jax.Array:
    """``sigma`` as a real scalar array, ``> 0`` and finite (checked when concrete)."""
    s = jnp.asarray(sigma)
    if jnp.issubdtype(s.dtype, jnp.complexfloating) or s.ndim != 0:
        raise TypeError(f"{who}: `sigma` must be a real scalar (the noise standard deviation), got {s.dtype.name} of shape {s.shape}")
    value = concrete_or_none(s)
    if value is not None and not (np.isfinite(value) and value > 0):
        raise ValueError(f"{who}: `sigma` must be finite and > 0 (the noise standard deviation), got {float(value)!r}")
    return s


def check_positive(value, name: str, who: str, allow_none: bool = True):
    """A settings number: ``None`` (automatic) or a finite float ``> 0``."""
    if value is None and allow_none:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{who}: `{name}` must be a positive float{' or None' if allow_none else ''}, got {value!r}") from err
    if not (np.isfinite(out) and out > 0):
        raise ValueError(f"{who}: `{name}` must be finite and > 0, got {value!r}")
    return out


def check_step_bound(step, bound, who: str, what: str):
    """A user's step above the stability bound (when the bound is concrete) is a ``ValueError``."""
    b = concrete_or_none(bound)
    if b is not None:
        if step > float(b) * (1 + 1e-6):
            raise ValueError(
                f"{who}: `step` = {step:.4g} is above the stability bound {float(b):.4g} ({what}); "
                "pass a smaller step or step=None for the default"
            )
        return jnp.asarray(step, bound.dtype)
    return eqx.error_if(jnp.asarray(step, bound.dtype), step > bound * (1 + 1e-6),
                        f"{who}: `step` is above the stability bound ({what})")


def normal_like(key, x):
    """Standard normal noise of ``x``'s shape and dtype (complex: ``N(0, 1)`` in each part, the
    real-space ``R^{2n}`` view)."""
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        kr, ki = jax.random.split(key)
        real = jnp.finfo(x.dtype).dtype
        return (jax.random.normal(kr, x.shape, real) + 1j * jax.random.normal(ki, x.shape, real)).astype(x.dtype)
    return jax.random.normal(key, x.shape, x.dtype)


class Target(NamedTuple):
    """What a Langevin sampler needs to know about ``U``.

    Attributes:
        grad: ``(x, aux) -> (grad U_lambda(x), aux)``: the gradient of the smooth part plus the
            Moreau-Yosida envelopes of the non-smooth parts (``aux``: warm starts of iterative
            proxes, e.g. TV's dual variable).
        init_aux: ``x -> aux``.
        lipschitz: Lipschitz constant of ``grad`` (real scalar).
        lipschitz_smooth: the smooth part's alone.
        smoothing: the envelopes' ``lambda`` (0 when there is none).
        potential: ``x -> U(x)`` with the original (unsmoothed) regulariser, constraint assumed met.
        start: ``A^H y / ||A||^2``, a default starting point.
    """

    grad: Callable
    init_aux: Callable
    lipschitz: jax.Array
    lipschitz_smooth: jax.Array
    smoothing: jax.Array
    potential: Callable
    start: jax.Array


def _fidelity(problem: Problem, who: str):
    fid = problem.data_fidelity
    if not fid.smooth or fid.lipschitz is None:
        raise TypeError(
            f"{who}: the problem's `fidelity` must be smooth with a known gradient Lipschitz constant "
            f"(SquaredL2), got {type(problem.fidelity).__name__}"
        )
    return fid


def build_target(problem: Problem, sigma, who: str, *, smooth_only: bool, smoothing=None,
                 prox_iters: int = 10, use_regularizer: bool = True) -> Target:
    """Read ``U = (F(A x; y) + w R(x)) / sigma^2`` (+ constraint) off ``problem``.

    ``smooth_only``: refuse non-smooth terms (ULA). Otherwise non-smooth terms enter through
    their Moreau-Yosida envelopes with parameter ``smoothing`` (``None``: ``1 / L_smooth``).
    ``use_regularizer=False`` keeps the fidelity alone (PnP-ULA brings its own prior).
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"{who}: `problem` must be an invjax Problem, got {type(problem).__name__}")
    s2 = jnp.square(sigma)
    op = problem.op
    fid = _fidelity(problem, who)
    real = jnp.finfo(op.dtype).dtype
    op_norm2 = jnp.square(op.norm()).astype(real)
    lip_smooth = fid.lipschitz * op_norm2 / s2

    smooth_terms = []  # (K, g) with gradient K^H g'(K x)
    envelopes = []  # (prox(v, lam, aux) -> (z, aux), name)
    reg = problem.regularizer if use_regularizer else None
    if reg is not None:
        if reg.smooth and reg.lipschitz is not None:
            K, g = problem.split_regularizer()
            smooth_terms.append((K, g))
            lip_smooth = lip_smooth + g.lipschitz * jnp.square(K.norm()) / s2
        elif smooth_only:
            raise TypeError(
                f"{who}: the problem's `regularizer` {type(reg).__name__} is not smooth; "
                "ULA needs a differentiable potential: use MYULA or SKROCK (Moreau-Yosida envelope through its prox)"
            )
        else:
            if not problem.scalar_weight:
                raise ValueError(
                    f"{who}: a non-smooth regulariser enters through its prox, which needs a scalar `weight`, "
                    f"got shape {problem.weight.shape}"
                )
            probe = jnp.zeros(op.in_shape, op.dtype)
            try:
                jax.eval_shape(lambda v: reg.prox(v, 1.0), probe)
            except NotImplementedError as err:
                raise TypeError(
                    f"{who}: the problem's `regularizer` {type(reg).__name__} has no prox; the Moreau-Yosida "
                    "envelope needs one (use a functional with a prox, or PnPULA for a denoiser prior)"
                ) from err
            weight = problem.weight

            def reg_prox(v, lam, aux, reg=reg, weight=weight):
                return reg.prox_warm(v, lam * weight.astype(real) / s2, aux, max_iters=prox_iters)

            envelopes.append(reg_prox)
    if problem.constraint is not None:
        if smooth_only:
            raise TypeError(f"{who}: a `constraint` is not smooth; ULA cannot sample it: use MYULA or SKROCK")
        con = problem.constraint
        envelopes.append(lambda v, lam, aux, con=con: (con.prox(v, 1.0), aux))

    if envelopes:
        if smoothing is None:
            lam = 1.0 / lip_smooth
        else:
            lam = jnp.asarray(smoothing, real)
        lipschitz = lip_smooth + len(envelopes) / lam
    else:
        lam = jnp.zeros((), real)
        lipschitz = lip_smooth
    lam = jnp.asarray(lam, real)

    def smooth_grad(x):
        g = op.rmv(fid.grad(op.mv(x)))
        for K, reg_g in smooth_terms:
            g = g + K.rmv(reg_g.grad(K.mv(x)))
        return g / s2.astype(real)

    def grad(x, aux):
        g = smooth_grad(x)
        new_aux = []
        for prox, a in zip(envelopes, aux):
            z, a = prox(x, lam, a)
            g = g + (x - z) / lam
            new_aux.append(a)
        return g, tuple(new_aux)

    def init_aux(x):
        return tuple(prox(x, lam, None)[1] for prox in envelopes)

    def potential(x):
        value = fid(op.mv(x))
        if reg is not None:
            value = value + problem.regularization(x)
        return value / s2.astype(real)

    start = (op.rmv(problem.data) / op_norm2).astype(op.dtype)
    return Target(grad, init_aux, jnp.asarray(lipschitz, real), jnp.asarray(lip_smooth, real), lam, potential, start)


class SamplerState(NamedTuple):
    """A Langevin chain's state: the position ``x`` and the warm starts of iterative proxes.

    Arguments:
        position: the current sample ``x``, shape ``op.in_shape``, the operator's dtype.
        aux: a tuple with one warm start per Moreau-Yosida envelope (e.g. TV's dual variable;
            ``()`` when the potential is smooth).

    Example:
        >>> problem = ij.Problem(ij.operators.Identity((4,)), jnp.ones(4), ij.functionals.SquaredL2(),
        ...                      weight=1.0)
        >>> state = ij.sampling.ULA().build(problem, sigma=1.0).init(jnp.zeros(4))
        >>> state.position.shape, state.position.dtype, state.aux
        ((4,), dtype('float32'), ())
    """

    position: jax.Array
    aux: Any


class SamplingAlgorithm(NamedTuple):
    """A sampler bound to one problem (blackjax's convention): ``init(position) -> state`` and
    ``step(key, state) -> (state, info)``; what :meth:`AbstractSampler.build` returns.

    Arguments:
        init: ``position -> SamplerState``.
        step: ``(key, state) -> (state, info)``; ``info`` is ``None``.
        potential: ``x -> U(x)``, a real scalar (the target is ``exp(-U)``).
        step_size: the step ``delta`` used (real scalar).
        smoothing: the Moreau-Yosida ``lambda`` (real scalar, 0 where no envelope is used).
        lipschitz: the Lipschitz constant of the drift's gradient that set the defaults (real
            scalar).
        gradient_evaluations: gradient (drift) evaluations per step (static int).
        default_position: a starting point, ``A^H y / ||A||^2`` (PnP-ULA: clipped to its set),
            shape ``op.in_shape``.

    Example:
        ULA on ``U(x) = (||x - y||^2 + ||x||^2) / 2`` (``grad U(x) = 2 x - y``, ``L = 2``, default
        step ``1 / L``): one step from 0 is ``x - delta grad U(x) + sqrt(2 delta) z = y / 2 + z``:

        >>> problem = ij.Problem(ij.operators.Identity((4,)), jnp.ones(4), ij.functionals.SquaredL2(),
        ...                      weight=1.0)
        >>> alg = ij.sampling.ULA().build(problem, sigma=1.0)
        >>> float(alg.step_size), float(alg.lipschitz), alg.gradient_evaluations
        (0.5, 2.0, 1)
        >>> key = jax.random.PRNGKey(0)
        >>> state, info = alg.step(key, alg.init(jnp.zeros(4)))
        >>> bool(jnp.allclose(state.position, 0.5 + jax.random.normal(key, (4,)), atol=1e-6))
        True
        >>> float(alg.potential(jnp.ones(4)))  # (0 + 4) / 2
        2.0
    """

    init: Callable
    step: Callable
    potential: Callable
    step_size: jax.Array
    smoothing: jax.Array
    lipschitz: jax.Array
    gradient_evaluations: int
    default_position: jax.Array


class AbstractSampler(eqx.Module):
    """A Langevin sampler's settings (:class:`ULA`, :class:`MYULA`, :class:`SKROCK`,
    :class:`PnPULA`); :meth:`build` binds it to a problem and noise level, giving the
    :class:`SamplingAlgorithm` that :func:`sample` runs. A new sampler subclasses this and
    implements ``build(problem, sigma) -> SamplingAlgorithm``.

    Example:
        ``L = (||A||^2 + w) / sigma^2 = 2 / 0.25 = 8`` for this problem; ULA's default step is
        ``1 / L``:

        >>> problem = ij.Problem(ij.operators.Identity((4,)), jnp.ones(4), ij.functionals.SquaredL2(),
        ...                      weight=1.0)
        >>> sampler = ij.sampling.ULA()
        >>> isinstance(sampler, ij.sampling.AbstractSampler)
        True
        >>> float(sampler.build(problem, sigma=0.5).step_size)
        0.125
    """

    def build(self, problem: Problem, sigma) -> SamplingAlgorithm:
        raise NotImplementedError
