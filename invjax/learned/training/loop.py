r"""Training: one resumable loop (jitted optax step, data-parallel, atomic checkpoints).

:func:`train` runs ``steps`` optimisation steps of an equinox model. The step ``k`` draws its
randomness from ``jax.random.fold_in(key, k)`` (split into a data key and a loss key), so every
step is a pure function of ``(model, optimizer state, key, k)``: a run resumed from a checkpoint
at step ``k`` repeats exactly what the uninterrupted run did, and on the same machine ends with
the same parameters bit for bit.

**Checkpoints** (``checkpoint_dir``): the model, the optimizer state, the step, the key and the
loss/validation history, in one file ``checkpoint.eqx`` written with
:func:`equinox.tree_serialise_leaves`. It is written to a temporary file in the same folder,
flushed to disk and moved over the old one with :func:`os.replace` (atomic on POSIX and
Windows), so a run killed at any moment leaves the last complete checkpoint in place; stale
temporary files are removed at the next start. When the folder holds a checkpoint, ``train``
resumes from it.

**Data parallelism**: each batch (every array leaf) is sharded along its leading axis over the
local devices (``jax.local_devices()``, a one-axis ``jax.sharding.Mesh``), the model and the
optimizer state are replicated, and the jitted step computes the loss on each shard with the
gradient reduced across devices by XLA. With one device this is a no-op. The batch size must be
a multiple of the device count. (On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
gives two devices; results then agree with one device to rounding, not bit for bit.)
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["History", "train", "trainable", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.eqx"
"""The file name of :func:`train`'s checkpoint inside ``checkpoint_dir`` (a run finding it there
resumes from it)."""
_MAGIC = b"invjax-checkpoint\n"
_FORMAT = 1


class History(NamedTuple):
    """What :func:`train` recorded (numpy arrays, over the whole run including resumed parts).

    Arguments:
        loss: ``(steps,)`` float64, the loss of each step (on the batch before the update).
        validation_steps: ``(n,)`` int64, the number of steps done when ``validate`` ran.
        validation: ``(n,)`` float64, its values.

    Example:
        SGD with step 1/4 on ``(w - 1/2)^2`` halves ``w - 1/2`` at every step:

        >>> import optax
        >>> loss = lambda w, batch, key: jnp.mean((w * batch - 0.5) ** 2)
        >>> data = lambda key, step: jnp.ones((2, 4))
        >>> w, history = ij.learned.train(jnp.asarray(1.0), loss, data, optax.sgd(0.25), 4,
        ...                               key=jax.random.key(0), validate=lambda w: float(w),
        ...                               validate_every=2, progress=False)
        >>> history.loss.tolist(), history.loss.dtype
        ([0.25, 0.0625, 0.015625, 0.00390625], dtype('float64'))
        >>> history.validation_steps.tolist(), history.validation.tolist()
        ([2, 4], [0.625, 0.53125])
    """

    loss: np.ndarray
    validation_steps: np.ndarray
    validation: np.ndarray


# ---- checkpoints --------------------------------------------------------------------------------
def _key_data(key):
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key)), True
    return np.asarray(key), False


def _write_checkpoint(path: Path, payload, meta: dict, history: dict):
    """Write ``path`` atomically: a temporary file in the same folder, fsync, ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(_MAGIC)
            header = json.dumps(meta).encode()
            f.write(len(header).to_bytes(8, "little") + header)
            eqx.tree_serialise_leaves(f, payload)
            for name in ("loss", "validation_steps", "validation"):
                np.save(f, np.asarray(history[name]), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    try:  # make the rename itself durable (POSIX); not available everywhere
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _read_checkpoint(path: Path, like):
    with open(path, "rb") as f:
        if f.read(len(_MAGIC)) != _MAGIC:
            raise ValueError(f"train: {str(path)!r} is not an invjax training checkpoint")
        size = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(size).decode())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"train: checkpoint {str(path)!r} has format {meta.get('format')!r}, expected {_FORMAT}")
        try:
            payload = eqx.tree_deserialise_leaves(f, like)
        except Exception as err:
            raise ValueError(
                f"train: checkpoint {str(path)!r} does not match the model and optimizer given "
                f"({type(err).__name__}: {err}); pass the same model architecture and optimizer, "
                "or another checkpoint_dir"
            ) from err
        history = {name: np.load(f, allow_pickle=False) for name in ("loss", "validation_steps", "validation")}
    return payload, meta, history


def _clean_temporaries(folder: Path):
    for p in folder.glob(f".{CHECKPOINT_NAME}.tmp-*"):
        try:
            p.unlink()
        except OSError:
            pass


# ---- the loop -----------------------------------------------------------------------------------
class _PlainProgress:
    """A line on stderr every ``every`` steps: the progress shown when tqdm is not installed."""

    def __init__(self, total: int, initial: int, every: int):
        import time

        self.total, self.n, self.every, self.post = total, initial, every, {}
        self._clock = time.monotonic
        self.t0, self.n0 = self._clock(), initial

    def set_postfix(self, post, refresh=False):
        self.post = post

    def update(self, k):
        import sys

        self.n += k
        if self.n % self.every == 0 or self.n == self.total:
            rate = (self._clock() - self.t0) / max(self.n - self.n0, 1)
            extra = " ".join(f"{k}={v}" for k, v in self.post.items())
            print(f"train: step {self.n}/{self.total} ({rate:.3g} s/step) {extra}", file=sys.stderr, flush=True)

    def close(self):
        pass


def _progress(total: int, initial: int, enabled: bool, every: int):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _PlainProgress(total, initial, max(1, min(every, 100)))
    return tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True)


def _jsonable(config):
    if config is None:
        return None
    if not isinstance(config, dict):
        raise TypeError(f"train: `config` must be a dict or None, got {type(config).__name__}")
    try:
        return json.loads(json.dumps(config, default=str))
    except (TypeError, ValueError) as err:
        raise TypeError(f"train: `config` must be JSON-serialisable ({err})") from err


def _check_config(path: Path, saved, given):
    """A resumed run must have the settings it was started with."""
    given = _jsonable(given)
    if saved is None or given is None:
        return
    keys = sorted(set(saved) | set(given))
    diff = [k for k in keys if saved.get(k, "<missing>") != given.get(k, "<missing>")]
    if diff:
        shown = "; ".join(f"{k}: checkpoint {saved.get(k, '<missing>')!r}, now {given.get(k, '<missing>')!r}" for k in diff)
        raise ValueError(
            f"train: the checkpoint in {str(path)!r} was made with other settings ({shown}); resume with the "
            "same settings, or start afresh in another checkpoint_dir (or delete this checkpoint)"
        )


def _sharding():
    devices = jax.local_devices()
    mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
    P = jax.sharding.PartitionSpec
    return len(devices), jax.sharding.NamedSharding(mesh, P("batch")), jax.sharding.NamedSharding(mesh, P())


def trainable(model) -> Any:
    """The default ``filter_spec`` of :func:`train`: ``True`` at every inexact-array leaf of
    ``model`` except those of the operators it holds (:class:`~invjax.operators.LinearOperator`
    submodules: a CT geometry, an MRI mask and coil maps, a PSF), ``False`` elsewhere.

    Arguments:
        model: a pytree (an equinox module).

    Returns:
        A pytree of bools of ``model``'s structure, for ``eqx.partition`` / ``eqx.filter``.

    Example:
        >>> op = ij.operators.Mask(jnp.ones((8, 8)))
        >>> spec = ij.learned.trainable((op, jnp.zeros(3)))
        >>> jax.tree.leaves(spec)
        [False, True]
    """
    from ...operators.base import LinearOperator

    def leaf(x):
        if isinstance(x, LinearOperator):
            return jax.tree.map(lambda _: False, x)
        return eqx.is_inexact_array(x)

    return jax.tree.map(leaf, model, is_leaf=lambda x: isinstance(x, LinearOperator))


@eqx.filter_jit
def _step(model, opt_state, batch, key, loss, optimizer, replicated, spec, state=None, stateful=False):
    params, frozen = eqx.partition(model, spec)
    if stateful:
        def objective(params, batch, key, state):
            return loss(eqx.combine(params, frozen), batch, key, state)

        (value, (state, aux)), grads = eqx.filter_value_and_grad(objective, has_aux=True)(params, batch, key, state)
        state = jax.lax.stop_gradient(state)
    else:
        def objective(params, batch, key):
            return loss(eqx.combine(params, frozen), batch, key)

        value, grads = eqx.filter_value_and_grad(objective)(params, batch, key)
        aux = None
    updates, opt_state = optimizer.update(grads, opt_state, params)
    model = eqx.combine(eqx.apply_updates(params, updates), frozen)
    # keep the parameters replicated (the gradient is already reduced over the batch shards)
    model, opt_state = eqx.filter_shard((model, opt_state), replicated)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.abs(g) ** 2) for g in jax.tree_util.tree_leaves(grads)))
    return model, opt_state, value, state, aux, grad_norm


def train(
    model,
    loss: Callable[[Any, Any, jax.Array], jax.Array],
    data: Callable[[jax.Array, int], Any],
    optimizer,
    steps: int,
    *,
    key,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    validate: Callable[[Any], float] | None = None,
    validate_every: int | None = None,
    progress: bool = True,
    config: dict | None = None,
    state: Any = None,
    callback: Callable[..., bool | None] | None = None,
    filter_spec=None,
):
    """Train ``model`` for ``steps`` optimisation steps; resumable (see the module docstring).

    At step ``k`` (``0 <= k < steps``), with ``data_key, loss_key = split(fold_in(key, k))``::

        batch = data(data_key, k)
        value, grads = value_and_grad(loss)(model, batch, loss_key)
        model, opt_state = optimizer step

    Arguments:
        model: an equinox module; the leaves that ``filter_spec`` selects are trained.
        loss: ``loss(model, batch, key) -> scalar``, jit-compatible (e.g. :func:`denoising_loss`).
        data: ``data(key, step) -> batch``, a pytree of arrays with the batch along axis 0 (e.g.
            :func:`invjax.learned.training.data.patch_data`). It must be a pure function of its arguments
            for a resumed run to see the same batches. Called outside ``jit``.
        optimizer: an ``optax.GradientTransformation``.
        steps: total steps of the run (an int ``>= 0``); a resumed run continues up to it.
        key: ``jax.random`` key (keyword, required). A resumed run uses the checkpoint's key and
            warns if ``key`` differs.
        checkpoint_dir: folder for ``checkpoint.eqx`` (created if missing); ``None``: no
            checkpoints. A checkpoint there is resumed from.
        checkpoint_every: steps between checkpoints (default 500); one is also written after the
            last step.
        validate: ``validate(model) -> float`` (e.g. :func:`denoising_validation`, a PSNR), run
            every ``validate_every`` steps and after the last step; shown in the progress bar.
        validate_every: default ``checkpoint_every``.
        progress: a tqdm progress bar with the loss and the last validation value if tqdm is
            installed (the ``train`` and ``test`` extras bring it), otherwise a plain line on
            stderr every ``checkpoint_every`` steps; ``False``: silent.
        config: the run's settings (a JSON-serialisable dict: learning rate, architecture, data,
            ...), stored in the checkpoint. Resuming from a checkpoint whose ``config`` differs
            raises ``ValueError`` naming the differing fields, so that a changed setting never
            silently returns the old run (use another ``checkpoint_dir`` or delete it).
        state: a pytree carried from step to step outside the gradient (default ``None``: none).
            Given, the loss is ``loss(model, batch, key, state) -> (value, (new_state, aux))``
            and ``new_state`` (with its gradient stopped) is the next step's ``state``: e.g. the
            lower-level solver states that warm-start :func:`invjax.tuning.fit`'s solves. It is
            not checkpointed (a resumed run starts from the ``state`` given).
        callback: ``callback(step, model, value, grad_norm, aux) -> bool | None``, called after
            each step's update with the step's index, the updated model, the loss (at the model
            before the update), the gradient's Euclidean norm and ``aux`` (``None`` without
            ``state``); returning ``True`` stops the run after that step (default: none).
        filter_spec: which leaves are trained, as for ``eqx.partition(model, filter_spec)``: a
            callable ``leaf -> bool`` or a pytree prefix of ``model`` of bools/callables. Default
            :func:`trainable`: every inexact array except the arrays of the operators the model
            holds (an MRI mask, coil maps, a PSF are data, not parameters: weight decay would
            corrupt them). ``eqx.is_inexact_array`` trains those too. The rest of the model is
            held fixed and receives no optimizer state.

    Returns:
        ``(model, history)``: the trained model and a :class:`History`.

    Raises:
        ValueError: bad ``steps``/``checkpoint_every``, a batch size that is not a multiple of
            the device count, or a checkpoint that does not match the model, the optimizer or
            ``config``.

    Example:
        >>> import optax
        >>> data = lambda key, step: jax.random.uniform(key, (2, 16, 16))     # (batch, H, W)
        >>> loss = lambda scale, batch, key: jnp.mean((scale * batch - 0.5 * batch) ** 2)
        >>> scale, hist = ij.learned.train(jnp.asarray(1.0), loss, data, optax.sgd(0.5), 20,
        ...                                key=jax.random.key(1), progress=False)
        >>> print(f"{float(scale):.2f}", hist.loss.shape)
        0.50 (20,)

        For a denoiser: ``train(ij.learned.DnCNN(key=k), denoising_loss(25 / 255),
        patch_data(load_images(folder), size=40, batch=16), optax.adam(1e-3), 20000, key=k,
        checkpoint_dir="runs/dncnn")`` (resumable).
    """
    for name, value, low in (("steps", steps, 0), ("checkpoint_every", checkpoint_every, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"train: `{name}` must be an int >= {low}, got {value!r}")
    if validate_every is None:
        validate_every = checkpoint_every
    elif isinstance(validate_every, bool) or not isinstance(validate_every, (int, np.integer)) or validate_every < 1:
        raise ValueError(f"train: `validate_every` must be an int >= 1 or None, got {validate_every!r}")
    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise TypeError(f"train: `optimizer` must be an optax GradientTransformation, got {type(optimizer).__name__}")
    if not callable(loss) or not callable(data):
        raise TypeError("train: `loss` and `data` must be callables (see the docstring for their signatures)")
    if callback is not None and not callable(callback):
        raise TypeError(f"train: `callback` must be a callable or None, got {type(callback).__name__}")
    stateful = state is not None

    n_dev, batch_sharding, replicated = _sharding()
    spec = trainable(model) if filter_spec is None else filter_spec
    try:
        opt_state = optimizer.init(eqx.filter(model, spec))
    except (TypeError, ValueError) as err:
        raise TypeError(f"train: `filter_spec` must be a callable leaf -> bool or a pytree prefix of the model "
                        f"of bools and callables (see eqx.partition): {err}") from err
    key_raw, typed = _key_data(key)
    start = 0
    history = {"loss": np.zeros((0,)), "validation_steps": np.zeros((0,), np.int64), "validation": np.zeros((0,))}

    path = None
    if checkpoint_dir is not None:
        folder = Path(checkpoint_dir)
        folder.mkdir(parents=True, exist_ok=True)
        _clean_temporaries(folder)
        path = folder / CHECKPOINT_NAME
        if path.exists():
            like = (model, opt_state, jnp.asarray(key_raw))
            (model, opt_state, saved_key), meta, history = _read_checkpoint(path, like)
            _check_config(path, meta.get("config"), config)
            start = int(meta["step"])
            saved_key = np.asarray(saved_key)
            if not np.array_equal(saved_key, key_raw):
                warnings.warn(
                    f"train: resuming from {str(path)!r} with its own key, which differs from `key`", stacklevel=2
                )
            key_raw = saved_key
            if start > steps:
                warnings.warn(
                    f"train: the checkpoint in {str(path)!r} is at step {start}, past `steps`={steps}; "
                    "returning it as is",
                    stacklevel=2,
                )
    key = jax.random.wrap_key_data(jnp.asarray(key_raw)) if typed else jnp.asarray(key_raw)

    model, opt_state = eqx.filter_shard((model, opt_state), replicated)

    def shard(batch):
        def put(leaf):
            leaf = jnp.asarray(leaf)
            if leaf.ndim == 0 or leaf.shape[0] % n_dev:
                raise ValueError(
                    f"train: each batch leaf must have a leading batch axis divisible by the {n_dev} devices, "
                    f"got shape {leaf.shape}"
                )
            return jax.device_put(leaf, batch_sharding)

        return jax.tree.map(put, batch)

    losses = list(history["loss"][:start])
    val_steps, val_values = list(history["validation_steps"]), list(history["validation"])
    keep = [i for i, s in enumerate(val_steps) if s <= start]
    val_steps, val_values = [val_steps[i] for i in keep], [val_values[i] for i in keep]

    def save(step):
        if path is None:
            return
        meta = {"format": _FORMAT, "step": step, "typed_key": typed, "config": _jsonable(config)}
        hist = {
            "loss": np.asarray(losses, np.float64),
            "validation_steps": np.asarray(val_steps, np.int64),
            "validation": np.asarray(val_values, np.float64),
        }
        _write_checkpoint(path, (model, opt_state, jnp.asarray(key_raw)), meta, hist)

    bar = _progress(steps, min(start, steps), progress, checkpoint_every)
    try:
        for step in range(start, steps):
            data_key, loss_key = jax.random.split(jax.random.fold_in(key, step))
            batch = shard(data(data_key, step))
            model, opt_state, value, state, aux, grad_norm = _step(
                model, opt_state, batch, loss_key, loss, optimizer, replicated, spec, state, stateful
            )
            losses.append(float(value))
            done = step + 1
            stop = callback is not None and bool(callback(step, model, value, grad_norm, aux))
            if validate is not None and (done % validate_every == 0 or done == steps):
                val_steps.append(done)
                val_values.append(float(validate(model)))
            if done % checkpoint_every == 0 or done == steps or stop:
                save(done)
            if bar is not None:
                post = {"loss": f"{losses[-1]:.4g}"}
                if val_values:
                    post["val"] = f"{val_values[-1]:.4g}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    history = History(
        loss=np.asarray(losses, np.float64),
        validation_steps=np.asarray(val_steps, np.int64),
        validation=np.asarray(val_values, np.float64),
    )
    return model, history
