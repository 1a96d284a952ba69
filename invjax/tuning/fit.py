r"""Bilevel fitting of regularisation weights with ground truth, by differentiating the solver.

Given training pairs :math:`(x_b, y_b)_{b=1}^B` and a reconstruction
:math:`\hat x(\theta; y) = \arg\min_x F(Ax; y) + R_\theta(x)` computed by a solver,

.. math:: \min_{\phi}\; L(\phi) = \frac1B \sum_{b=1}^B \ell\big(\hat x(e^{\phi}; y_b),\, x_b\big),
          \qquad \theta = e^{\phi} > 0 ,

the upper level (default :math:`\ell` the mean squared error, any differentiable loss) over the
log-weights :math:`\phi` (so weights stay positive and steps are relative). The weight
:math:`\theta` is any pytree of positive arrays that ``make_problem(theta, y)`` understands: a
scalar, a weight per regulariser term (a tuple), a per-direction vector (TV weights of shape
``(2, 1, 1)``), a per-filter vector or a weight image. The gradient
:math:`\nabla_\phi L` comes from the solver: the implicit function theorem at the fixed point
(``diff="implicit"``, constant memory) or backpropagation through the iterations
(``diff="unroll"``); see :mod:`invjax.solvers.driver` and, for the bilevel view, Kunisch &
Pock, "A bilevel optimization approach for parameter learning in variational models", SIAM J.
Imaging Sci. 6(2), 2013.

Each outer step is one jitted call over the whole batch (``vmap`` of the lower-level solves,
their gradient and the optax update), run by the library's one training loop,
:func:`invjax.learned.train` (its ``state`` carries the solver states from step to step, its
``callback`` records the history and applies the stopping rules below). Each lower-level solve is
warm-started from the previous step's (the weights change only a little between steps): from its
whole solver state where that is valid for a new weight (ADMM; PDHG with a scalar weight),
otherwise from its image. The run shows an optional ``tqdm`` progress bar; it stops early, with a
:class:`TuningWarning`, on a zero gradient (``make_problem`` ignores ``theta``) or a non-finite
loss, and warns when lower-level solves stopped at ``max_iters`` (their gradients are then less
accurate).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtyping import Array, Inexact

from ..solvers import IterativeSolver, Problem, solve
from ..solvers.driver import working_dtype
from ._common import RuleResult, TuningWarning, check_count, check_make_problem, check_solver, keyword_only, real_dtype
from .secant import secant

_WARM = (None, False, "x", "state")


class FitHistory(NamedTuple):
    """Per-step record of :func:`fit` (numpy arrays; ``S`` steps run, ``B`` images).

    Attributes:
        loss: ``(S,)`` mean training loss at the weight of each step.
        weight: the weight of each step: a pytree like ``init`` with leaves ``(S,) + shape``.
        grad_norm: ``(S,)`` Euclidean norm of the gradient with respect to the log-weights.
        iterations: ``(S, B)`` lower-level iterations of each solve.
        converged: ``(S, B)`` whether each lower-level solve reached the solver's ``tol``.
        seconds: ``(S,)`` wall time of each step (the first includes compilation).

    Arguments:
        loss, weight, grad_norm, iterations, converged, seconds: the fields (:func:`fit` builds it).

    Example:
        >>> import invjax as ij
        >>> ij.tuning.FitHistory._fields[:3]
        ('loss', 'weight', 'grad_norm')
    """

    loss: np.ndarray
    weight: Any
    grad_norm: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    seconds: np.ndarray


class FitResult(RuleResult):
    """Output of :func:`fit`: a :class:`RuleResult` and the per-step :class:`FitHistory`.

    ``weight`` is the fitted weight (a pytree like ``init``: the last optimizer update);
    ``value`` the mean training loss of the last step (at the weight before that update);
    ``weights``/``values`` the weight and loss of every step (``history.weight``,
    ``history.loss``); ``weights_converged`` ``(S,)`` whether every lower-level solve of a step
    converged; ``iterations``/``converged`` ``(B,)`` those of the last step's solves; ``x`` is
    ``None``; ``at_bound`` ``False`` (no bounds); ``solves`` the lower-level solves run.

    Attributes:
        history: the :class:`FitHistory`.

    Arguments:
        history: the attribute above, by keyword (:func:`fit` builds it).
        weight, value, weights, values, weights_converged: as for :class:`RuleResult`, by keyword.
        x, iterations, converged, at_bound, solves: likewise.

    Example:
        >>> import invjax as ij
        >>> issubclass(ij.tuning.FitResult, ij.tuning.RuleResult)
        True
    """

    history: FitHistory | None = None


def mse(x, x_true):
    """The default loss: ``mean |x - x_true|^2``."""
    return jnp.mean(jnp.abs(x - x_true) ** 2)


def log_mse(x, x_true):
    """``10 log10 mean |x - x_true|^2``: minus the PSNR up to a constant per image, so that the
    batch mean is the mean PSNR, the usual figure of merit (``loss="psnr"``)."""
    return 10.0 * jnp.log10(mse(x, x_true))


_LOSSES = {"mse": mse, "psnr": log_mse}


@keyword_only("tuning.fit", 3, "fit(make_problem, x_true, y, init=..., solver=..., optimizer=..., max_iters=...)",
              renamed={"steps": "max_iters"})
def fit(
    make_problem: Callable[[Any, Inexact[Array, "*out"]], Problem],
    x_true: Inexact[Array, "B *in"],
    y: Inexact[Array, "B *out"],
    *,
    init: Any,
    solver: IterativeSolver,
    optimizer: optax.GradientTransformation | None = None,
    max_iters: int = 50,
    loss: str | Callable | None = None,
    warm_start: str | bool | None = None,
    tol: float = 0.0,
    progress: bool = True,
) -> FitResult:
    r"""Fit regularisation weights to training pairs by gradient descent through the solver.

    :math:`\min_\phi \frac1B\sum_b \ell(\hat x(e^\phi; y_b), x_b)` over log-weights
    :math:`\phi` (see the module docstring).

    Arguments:
        make_problem: ``(theta, y) -> Problem`` for one image; ``theta`` has the structure of
            ``init``.
        x_true: ``(B,) + in_shape`` ground-truth images.
        y: ``(B,) + out_shape`` their measurements (same ``B``, else ``ValueError``).
        init: starting weight (keyword-only): a positive scalar, array or pytree of them
            (``ValueError`` for entries ``<= 0``: the weights are optimised in log scale).
        solver: any invjax solver (keyword-only; its ``adjoint`` gives the gradient: with the
            implicit adjoint one linear solve on the problem's optimality conditions per step).
        optimizer: an optax ``GradientTransformation`` acting on the log-weights (default
            :func:`~invjax.tuning.secant`: secant steps that need no learning-rate tuning for
            a few weights; use ``optax.adam`` for a weight image).
        max_iters: maximum number of outer steps (default 50).
        loss: ``loss(x, x_true) -> scalar`` per image, differentiable, averaged over the batch;
            or ``"mse"`` (default) or ``"psnr"`` (``10 log10 MSE``, i.e. maximise the mean PSNR:
            the mean MSE is dominated by the hardest images, and its optimum can sit
            several tenths of a dB from that of the mean PSNR).
        warm_start: how each lower-level solve starts: ``"x"`` from the previous step's image
            (the solver re-initialises the rest), ``"state"`` from the whole previous solver
            state (duals, step sizes; the solver's ``refresh`` recomputes what the state caches
            from the problem), ``False`` cold. Default (``None``): ``"state"`` with
            ``diff="implicit"``, ``False`` with ``diff="unroll"`` (an unrolled solve from a
            converged start has a truncated gradient).
        tol: if ``> 0``, stop when no log-weight moved by more than ``tol`` in a step
            (default 0: run ``max_iters`` steps).
        progress: show a ``tqdm`` progress bar if tqdm is installed (default ``True``).

    Returns:
        A :class:`FitResult` (``.weight``, ``.history``).

    Raises:
        TypeError: a bad ``solver``/``optimizer``/``loss``, a traced ``init``, or the old
            positional form.
        ValueError: ``x_true``/``y`` not batches of the operator's shapes with the same length,
            non-positive ``init`` entries, bad ``max_iters``/``warm_start``/``tol``.

    Example:
        >>> import jax, jax.numpy as jnp, invjax as ij
        >>> A = ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (8, 8))
        >>> x = jnp.ones((2, 8, 8)).at[:, 2:5, 2:5].set(0.0)
        >>> y = jax.vmap(A)(x) + 0.05 * jax.random.normal(jax.random.key(0), (2, 8, 8))
        >>> make = lambda w, y: ij.Problem(A, y, ij.functionals.SquaredL2(), w)
        >>> res = ij.tuning.fit(make, x, y, init=0.1, solver=ij.solvers.CG(max_iters=50, tol=1e-5),
        ...                     max_iters=3, progress=False)
        >>> res.history.loss.shape
        (3,)
    """
    who = "tuning.fit"
    check_solver(solver, who)
    steps = check_count(max_iters, "max_iters", who)
    x_true, y = jnp.asarray(x_true), jnp.asarray(y)
    if x_true.ndim == 0 or y.ndim == 0 or x_true.shape[0] != y.shape[0]:
        raise ValueError(
            f"{who}: `x_true` and `y` must be batches with the same leading length, got shapes "
            f"{tuple(x_true.shape)} and {tuple(y.shape)}"
        )
    if not jnp.issubdtype(y.dtype, jnp.inexact):
        y = y.astype(jnp.result_type(float))
    rdt = real_dtype(y)
    theta0 = _check_init(init, rdt, who)
    problem = check_make_problem(make_problem, theta0, y[0], who, one_image=False)
    in_shape, out_shape = tuple(problem.op.in_shape), tuple(problem.op.out_shape)
    if tuple(x_true.shape[1:]) != in_shape or tuple(y.shape[1:]) != out_shape:
        raise ValueError(
            f"{who}: expected `x_true` of shape (B,) + {in_shape} and `y` of shape (B,) + {out_shape}, "
            f"got {tuple(x_true.shape)} and {tuple(y.shape)}"
        )
    optimizer = secant() if optimizer is None else optimizer
    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise TypeError(f"{who}: `optimizer` must be an optax GradientTransformation, got {type(optimizer).__name__}")
    loss = "mse" if loss is None else loss
    if isinstance(loss, str):
        if loss not in _LOSSES:
            raise ValueError(f"{who}: `loss` must be 'mse', 'psnr' or a callable, got {loss!r}")
        loss = _LOSSES[loss]
    if not callable(loss):
        raise TypeError(f"{who}: `loss` must be 'mse', 'psnr' or a callable (x, x_true) -> scalar")
    if warm_start is True:
        warm_start = "state"
    if warm_start not in _WARM:
        raise ValueError(f"{who}: `warm_start` must be None, False, 'x' or 'state', got {warm_start!r}")
    if warm_start is None:
        warm_start = _default_warm_start(solver, problem)
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"{who}: `tol` must be a number >= 0, got {tol!r}")

    params = jax.tree_util.tree_map(jnp.log, theta0)
    batch = x_true.shape[0]
    if warm_start == "state":
        carry = _initial_states(make_problem, solver, theta0, y)
    elif warm_start == "x":
        carry = jnp.zeros((batch,) + in_shape, problem.op.dtype)
    else:
        carry = jnp.zeros((), rdt)  # nothing to carry (the loop's state slot must hold a pytree)

    # the outer loop is the library's one training loop (learned.train): jitted optax step, the
    # lower-level solver states carried from step to step as its `state`, this callback recording
    # each step and applying fit's stopping rules
    record = {"loss": [], "weight": [], "grad_norm": [], "iterations": [], "converged": [], "seconds": []}
    last = {"params": params, "final": params, "time": time.perf_counter()}

    def callback(step, new_params, value, grad_norm, aux):
        iters, conv = aux
        value, gnorm = float(value), float(grad_norm)
        now = time.perf_counter()
        record["seconds"].append(now - last["time"])
        last["time"] = now
        record["loss"].append(value)
        record["weight"].append(jax.tree_util.tree_map(lambda p: np.exp(np.asarray(p)), last["params"]))
        record["grad_norm"].append(gnorm)
        record["iterations"].append(np.asarray(iters))
        record["converged"].append(np.asarray(conv))
        if not (np.isfinite(value) and np.isfinite(gnorm)):
            warnings.warn(
                f"{who}: the loss or its gradient is not finite at step {len(record['loss'])} "
                f"(loss {value}, gradient norm {gnorm}); stopping with the last finite weight",
                TuningWarning,
                stacklevel=4,
            )
            return True
        if gnorm == 0.0:
            warnings.warn(
                f"{who}: the gradient with respect to the weights is exactly zero (does `make_problem` "
                "use `theta`?); stopping",
                TuningWarning,
                stacklevel=4,
            )
            return True
        moved = max(
            (float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(new_params), jax.tree_util.tree_leaves(last["params"]))),
            default=0.0,
        )
        last["params"] = last["final"] = new_params
        return tol > 0 and moved <= tol

    from ..learned.training.loop import train

    train(
        params,
        _Objective(make_problem, solver, loss, warm_start),
        lambda key, step: (x_true, y),
        optimizer,
        steps,
        key=jax.random.key(0),
        checkpoint_every=steps,
        progress=progress,
        state=carry,
        callback=callback,
    )
    params = last["final"]

    history = _history(record, theta0, batch)
    unconverged = int(np.sum(~history.converged))
    if unconverged:
        warnings.warn(
            f"{who}: the lower-level solver stopped at max_iters before reaching its tol in {unconverged} of "
            f"{history.converged.size} solves (see history.converged); the gradients are then less accurate: "
            "raise max_iters or loosen tol",
            TuningWarning,
            stacklevel=2,
        )
    S = len(history.loss)
    last_its = history.iterations[-1] if S else np.zeros((batch,), np.int32)
    last_conv = history.converged[-1] if S else np.zeros((batch,), bool)
    return FitResult(
        weight=jax.tree_util.tree_map(jnp.exp, params),
        value=jnp.asarray(history.loss[-1] if S else np.nan, rdt),
        weights=history.weight,
        values=history.loss,
        weights_converged=np.all(history.converged, axis=1),
        x=None,
        iterations=last_its,
        converged=np.asarray(bool(np.all(last_conv))),
        at_bound=np.asarray(False),
        solves=np.asarray(S * batch, np.int32),
        history=history,
    )


# ---- internals -------------------------------------------------------------------------------


def _check_init(init, rdt, who):
    def leaf(v):
        v = jnp.asarray(v)
        if jnp.issubdtype(v.dtype, jnp.complexfloating):
            raise TypeError(f"{who}: `init` must be real, got {v.dtype}")
        # a fixed, non-weak dtype: a weak-typed start would recompile the step after the first update
        v = v.astype(v.dtype if jnp.issubdtype(v.dtype, jnp.floating) and not v.weak_type else rdt)
        try:
            value = np.asarray(v)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as err:
            raise TypeError(f"{who}: `init` must be concrete (fit is not traceable)") from err
        if not np.all(np.isfinite(value) & (value > 0)):
            raise ValueError(
                f"{who}: every entry of `init` must be finite and > 0 (the weights are optimised in log scale), "
                f"got {value if value.size < 8 else 'an array with bad entries'}"
            )
        return v

    theta = jax.tree_util.tree_map(leaf, init)
    if not jax.tree_util.tree_leaves(theta):
        raise ValueError(f"{who}: `init` holds no weights")
    return theta


def _default_warm_start(solver, problem):
    # An unrolled solve from a converged start differentiates only the last few iterations.
    if solver.diff != "implicit":
        return False
    # Every solver's ``refresh`` turns an earlier state into a start for a new weight (ADMM
    # recomputes its loop constants, PDHG its block norms, CG its residual, FISTA its step);
    # starting from the duals too saved ~3x the iterations of a start from the image alone.
    return "state"


@eqx.filter_jit
def _initial_states(make_problem, solver, theta, y):
    def one(yi):
        problem = make_problem(theta, yi)
        return solver.init(problem, jnp.zeros(problem.op.in_shape, working_dtype(problem)))

    return jax.vmap(one)(y)


class _Objective(eqx.Module):
    """The upper-level loss of :func:`fit` as :func:`~invjax.learned.train` takes it:
    ``(params, (x_true, y), key, carry) -> (mean loss, (new carry, (iterations, converged)))``.
    A module of static callables: a second fit with the same make_problem, solver and loss
    reuses the compiled step."""

    make_problem: Callable
    solver: IterativeSolver
    loss: Callable
    warm_start: Any

    def __call__(self, params, batch, key, carry):
        x_true, y = batch
        theta = jax.tree_util.tree_map(jnp.exp, params)

        def one(xt, yi, c):
            problem = self.make_problem(theta, yi)
            if self.warm_start == "state":
                sol = solve(problem, self.solver, warm_start=c)
            elif self.warm_start == "x":
                sol = solve(problem, self.solver, x0=c)
            else:
                sol = solve(problem, self.solver)
            return self.loss(sol.x, xt), sol

        if self.warm_start:
            values, sols = jax.vmap(one)(x_true, y, carry)
            carry = sols.state if self.warm_start == "state" else jax.lax.stop_gradient(sols.x)
        else:
            values, sols = jax.vmap(lambda xt, yi: one(xt, yi, None))(x_true, y)
        return jnp.mean(values), (carry, (sols.stats.iterations, sols.stats.converged))


def _history(record, theta0, batch):
    n = len(record["loss"])
    if n:
        weights = jax.tree_util.tree_map(lambda *w: np.stack(w), *record["weight"])
    else:
        weights = jax.tree_util.tree_map(lambda w: np.zeros((0,) + np.shape(w)), theta0)
    return FitHistory(
        loss=np.asarray(record["loss"], dtype=float),
        weight=weights,
        grad_norm=np.asarray(record["grad_norm"], dtype=float),
        iterations=np.asarray(record["iterations"]).reshape(n, batch),
        converged=np.asarray(record["converged"], dtype=bool).reshape(n, batch),
        seconds=np.asarray(record["seconds"], dtype=float),
    )
