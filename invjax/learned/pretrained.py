"""Saving, loading and the shipped pretrained models.

A saved model is two files side by side: ``<name>.eqx`` (the array leaves, equinox
serialisation) and ``<name>.json`` (the class, the constructor arguments that fix the
structure, and free-form metadata such as how it was trained). :func:`save` writes both,
:func:`load` rebuilds the module from them, and :func:`pretrained` loads one of the models
shipped inside the package (:func:`available` lists them; each ``.json`` records the command
that reproduces its weights, the training steps, wall time and machine).

Example:
    >>> import invjax as ij
    >>> ij.learned.available()                        # doctest: +SKIP
    ('crr-nn', 'dncnn', 'wcrr-nn')
    >>> model = ij.learned.pretrained("crr-nn")       # doctest: +SKIP
    >>> x_hat = model.denoise(y, 25 / 255)            # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax

from .dncnn import DnCNN
from .ridge import ConvexRidge
from .unrolled import LearnedPrimalDual

_WEIGHTS = Path(__file__).with_name("weights")
_FORMAT = 1


def _config(model) -> tuple[str, dict[str, Any]]:
    if isinstance(model, ConvexRidge):
        return "ConvexRidge", {
            "channels": list(model.channels),
            "kernel_size": model.kernel_size,
            "knots": model.spline.knots,
            "spline_range": model.spline.spline_range,
            "weakly_convex": model.weakly_convex,
            "prox_tol": model.prox_tol,
            "prox_max_iters": model.prox_max_iters,
            "noise_calibration": None if model.noise_calibration is None else [list(p) for p in model.noise_calibration],
        }
    if isinstance(model, DnCNN):
        return "DnCNN", {
            "channels": model.channels,
            "depth": model.depth,
            "width": int(model.weights[0].shape[0]) if model.depth > 1 else 1,
            "noise_level_input": model.noise_level_input,
            "spectral_norm": model.spectral_norm,
            "lipschitz": model.lipschitz,
            "bias": model.biases is not None,
            "power_iters": model.power_iters,
            "spectral_grid": model.spectral_grid,
            "dtype": str(model.weights[0].dtype),
        }
    if isinstance(model, LearnedPrimalDual):
        return "LearnedPrimalDual", {
            "op": _op_config(model.op),
            "iterations": model.iterations,
            "n_primal": model.n_primal,
            "n_dual": model.n_dual,
            "width": model.width,
            "depth": model.depth,
            "op_norm": model.op_norm,
            "dtype": str(model.primal[0][0].dtype),
        }
    raise TypeError(
        f"save: `model` must be a ConvexRidge, DnCNN or LearnedPrimalDual, got {type(model).__name__}"
    )


def _op_config(op) -> dict[str, Any]:
    """A JSON description of the operator a network is bound to (the ones that have one)."""
    from ..operators import ParallelBeam2D

    if isinstance(op, ParallelBeam2D):
        return {"class": "ParallelBeam2D", "shape": list(op.shape), "angles": list(op.angles),
                "n_detectors": op.n_detectors, "detector_spacing": op.detector_spacing}
    raise TypeError(f"save: a network bound to a {type(op).__name__} cannot be saved yet (only ParallelBeam2D)")


def _op_build(cfg: dict[str, Any]):
    from ..operators import ParallelBeam2D

    if cfg.get("class") == "ParallelBeam2D":
        return ParallelBeam2D(tuple(cfg["shape"]), cfg["angles"], cfg["n_detectors"], cfg["detector_spacing"])
    raise ValueError(f"unknown operator class {cfg.get('class')!r} (expected 'ParallelBeam2D')")


def _build(cls: str, config: dict[str, Any]):
    key = jax.random.PRNGKey(0)  # the skeleton's values are replaced by the saved leaves
    if cls == "ConvexRidge":
        cfg = dict(config)
        cfg["channels"] = tuple(cfg["channels"])
        if cfg.get("noise_calibration") is not None:
            cfg["noise_calibration"] = tuple(tuple(p) for p in cfg["noise_calibration"])
        return ConvexRidge(key=key, **cfg)
    if cls == "DnCNN":
        return DnCNN(key=key, **config)
    if cls == "LearnedPrimalDual":
        cfg = dict(config)
        return LearnedPrimalDual(_op_build(cfg.pop("op")), key=key, **cfg)
    raise ValueError(f"unknown model class {cls!r} (expected 'ConvexRidge', 'DnCNN' or 'LearnedPrimalDual')")


def _paths(path) -> tuple[Path, Path]:
    path = Path(os.fspath(path))
    base = path.with_suffix("") if path.suffix in (".eqx", ".json") else path
    return base.with_name(base.name + ".eqx"), base.with_name(base.name + ".json")


def save(path, model, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a :class:`ConvexRidge`, :class:`DnCNN` or :class:`LearnedPrimalDual`
    bound to a ``ParallelBeam2D``) to ``path.eqx`` and
    ``path.json`` (``path`` with or without either suffix), each through a temporary file and
    a rename, so an interrupted save never leaves a half-written file under the final name.
    ``metadata``: JSON-serialisable facts kept beside the structure (training command, steps, ...).
    Returns the ``.eqx`` path."""
    cls, config = _config(model)
    weights, meta = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    record = {"format": _FORMAT, "class": cls, "config": config, "metadata": dict(metadata or {})}
    text = json.dumps(record, indent=1)
    for target, write in ((weights, lambda f: eqx.tree_serialise_leaves(f, model)), (meta, lambda f: f.write(text.encode()))):
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    return weights


def load(path):
    """The module saved by :func:`save` at ``path`` (with or without the ``.eqx``/``.json``
    suffix). Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file
    for a corrupt one or weights that do not fit the recorded structure."""
    weights, meta = _paths(path)
    for p in (weights, meta):
        if not p.exists():
            raise FileNotFoundError(f"load: no saved model at {str(p)!r} (a model is a .eqx and a .json file)")
    try:
        record = json.loads(meta.read_text())
        cls, config = record["class"], record["config"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"load: {str(meta)!r} is not a saved model description ({err})") from None
    if record.get("format") != _FORMAT:
        raise ValueError(f"load: {str(meta)!r} has format {record.get('format')!r}, this invjax reads {_FORMAT}")
    try:  # the structure without computing random weights (10 s for lpd-ct64 otherwise)
        skeleton = eqx.filter_eval_shape(_build, cls, config)
    except Exception:  # noqa: BLE001  (a constructor that needs concrete values: build it)
        skeleton = _build(cls, config)
    try:
        return eqx.tree_deserialise_leaves(weights, skeleton)
    except Exception as err:  # equinox/numpy raise several types for truncated or mismatched files
        raise ValueError(
            f"load: the weights in {str(weights)!r} are corrupt or do not fit the {cls} described in "
            f"{str(meta)!r} ({type(err).__name__}: {err})"
        ) from None


def metadata(name: str) -> dict[str, Any]:
    """The recorded facts of a shipped model (training command, steps, wall time, machine, ...)."""
    return json.loads(_paths(_WEIGHTS / _check_name(name))[1].read_text())["metadata"]


def available() -> tuple[str, ...]:
    """Names of the pretrained models shipped with this installation, sorted."""
    return tuple(sorted(p.stem for p in _WEIGHTS.glob("*.json") if p.with_suffix(".eqx").exists()))


def _check_name(name) -> str:
    names = available()
    if not isinstance(name, str) or name not in names:
        raise ValueError(f"pretrained: `name` must be one of {names}, got {name!r}")
    return name


def pretrained(name: str):
    """A shipped model by name (see :func:`available`): an equinox module whose
    ``denoise(y, sigma)`` takes ``(H, W)`` or ``(B, H, W)`` images in ``[0, 1]`` and the noise
    standard deviation on that scale, and which (for ``"crr-nn"``, ``"wcrr-nn"``) is a
    regularizer for :class:`invjax.Problem`. ``metadata(name)`` tells how it was trained."""
    return load(_WEIGHTS / _check_name(name))
