"""Solving a batch of problems, sharded over the local devices."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .driver import IterativeSolver, Solution, solve
from .problem import Problem


def solve_batch(problem: Problem, solver: IterativeSolver, *, data, weight=None, x0=None, devices=None) -> Solution:
    """Solve one problem template for a batch of data (and weights), sharded over devices.

    The batch is split over ``devices`` (default: all local devices) with a 1-D
    ``jax.sharding.Mesh`` and ``NamedSharding``; each device runs the vmapped solve on its
    share (padded to a multiple of the device count). On a CPU host, more devices come from
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before importing JAX); two
    cores run a batch about twice as fast that way as a single vmapped loop.

    Args:
        problem: template; its ``op``, regulariser, fidelity and constraint are shared.
        solver: any invjax solver.
        data: ``(B,) + op.out_shape`` measurements.
        weight: ``None`` (the template's weight for all), or ``(B,) + weight_shape``.
        x0: optional ``(B,) + op.in_shape`` starting points.
        devices: sequence of devices (default ``jax.local_devices()``).

    Returns:
        A :class:`Solution` whose leaves carry the leading batch axis ``B``.
    """
    data = jnp.asarray(data)
    out_shape = tuple(problem.op.out_shape)
    if data.ndim != len(out_shape) + 1 or tuple(data.shape[1:]) != out_shape:
        raise ValueError(f"solve_batch: `data` must have shape (B,) + {out_shape}, got {tuple(data.shape)}")
    batch = data.shape[0]
    if weight is None:
        weight = jnp.broadcast_to(problem.weight, (batch,) + problem.weight.shape)
    weight = jnp.asarray(weight, problem.weight.dtype)
    if weight.shape[:1] != (batch,):
        raise ValueError(f"solve_batch: `weight` must have leading batch axis {batch}, got shape {tuple(weight.shape)}")
    if x0 is None:
        x0 = jnp.zeros((batch,) + tuple(problem.op.in_shape), problem.op.dtype)
    x0 = jnp.asarray(x0)
    devices = list(jax.local_devices() if devices is None else devices)
    n_dev = len(devices)
    pad = (-batch) % n_dev

    def padded(a):
        return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a

    data, weight, x0 = padded(data), padded(weight), padded(x0)
    mesh = Mesh(np.array(devices), ("batch",))
    sharded = NamedSharding(mesh, PartitionSpec("batch"))
    data, weight, x0 = (jax.device_put(a, sharded) for a in (data, weight, x0))

    sol = _run(problem, solver, data, weight, x0)
    return jax.tree_util.tree_map(lambda a: a[:batch], sol)


@eqx.filter_jit
def _run(problem, solver, data, weight, x0):
    if solver.diff == "implicit":
        dynamic, static = eqx.partition(problem, eqx.is_array)  # no array among the nondiff args
        return _implicit_batch(static, solver, dynamic, data, weight, x0)
    return _vmapped(problem, solver, data, weight, x0)


def _vmapped(problem, solver, data, weight, x0, warm=False):
    def one(y, w, x):
        p = eqx.tree_at(lambda p: (p.data, p.weight), problem, (y, w))
        return solve(p, solver, warm_start=x) if warm else solve(p, solver, x0=x)

    return jax.vmap(one)(data, weight, x0)


# Implicit mode: jax.jvp of the vmapped solve fails under jit (broadcast_in_dim shape error)
# and gives (B, B)-shaped state tangents without it. The driver's rule gives the state NaN
# tangents scaled by a zero built from the problem's tangents, which are batched; a state
# leaf that depends on no batched input (a step size from the operator) is an unbatched
# primal, and JAX's custom_jvp batching then broadcasts its batched tangent as if it were
# unbatched (inside the driver's call, so nothing after it can cut the tangent). Here the
# derivative of ``x`` comes from a second, warm-started vmapped solve whose state is never
# output (it converges at its first check), and the state gets NaN tangents on the batched
# shapes, as :class:`Solution` promises for implicit mode.
@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _implicit_batch(static, solver, dynamic, data, weight, x0):
    return _vmapped(eqx.combine(dynamic, static), solver, data, weight, x0)


@_implicit_batch.defjvp
def _implicit_batch_jvp(static, solver, primals, tangents):
    dynamic, data, weight, x0 = primals
    dynamic_dot, data_dot, weight_dot, _ = tangents  # x0 has no derivative (as in solve)
    sol = _implicit_batch(static, solver, dynamic, data, weight, x0)

    def polished(dynamic, data, weight):
        again = _vmapped(eqx.combine(dynamic, static), solver, data, weight, sol.state, warm=True)
        return again.x, again.stats.objective

    _, (x_dot, objective_dot) = jax.jvp(polished, (dynamic, data, weight), (dynamic_dot, data_dot, weight_dot))
    anchor = sum(
        (
            0 * jnp.sum(jnp.real(t))
            for t in jax.tree_util.tree_leaves((dynamic_dot, data_dot, weight_dot))
            if jnp.issubdtype(t.dtype, jnp.inexact)
        ),
        jnp.zeros((), x_dot.real.dtype),
    )
    stats_dot = jax.tree_util.tree_map(_zero_tangent, sol.stats)
    stats_dot = eqx.tree_at(lambda s: s.objective, stats_dot, objective_dot)
    state_dot = jax.tree_util.tree_map(lambda a: _nan_tangent(a, anchor), sol.state)
    return sol, Solution(x=x_dot, stats=stats_dot, state=state_dot)


def _zero_tangent(a):
    if jnp.issubdtype(a.dtype, jnp.inexact):
        return jnp.zeros_like(a)
    return np.zeros(a.shape, dtype=jax.dtypes.float0)


def _nan_tangent(a, anchor):
    if jnp.issubdtype(a.dtype, jnp.inexact):
        return jnp.full(a.shape, jnp.nan, a.dtype) * anchor.astype(a.dtype)
    return np.zeros(a.shape, dtype=jax.dtypes.float0)
