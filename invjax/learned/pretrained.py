"""Saving, loading and the shipped pretrained models.

A saved model is two files side by side: ``<name>.eqx`` (the leaves, equinox serialisation)
and ``<name>.json`` (what rebuilds the module around them, the content hash of the ``.eqx``,
and free-form metadata such as how it was trained). :func:`save` writes both, :func:`load`
rebuilds the module from them, and :func:`pretrained` loads one of the models shipped inside
the package (:func:`available` lists them; each ``.json`` records the command that reproduces
its weights, the training steps, wall time and machine).

**What is saved.** Any equinox module built from invjax classes (and ``equinox.nn`` layers):
:class:`ConvexRidge` (convex or weakly convex), :class:`DnCNN`, :class:`FFDNet`,
:class:`LearnedPrimalDual`, :class:`MoDL`, :class:`DEQ`, bound to any operator the library
provides (``ParallelBeam2D``, ``Convolution``, ``CartesianMRI`` single- or multi-coil, ``Mask``,
``Downsample``, composed or scaled ones, ...). The JSON's ``"structure"`` describes the module
tree field by field: each module's class by its public name (``"invjax.learned.DnCNN"``), its
static fields as JSON values (tuples tagged ``{"tuple": [...]}``; this is also where an
operator's constructor arguments live: ``shape``, ``angles``, ``n_detectors`` ...), and each
array leaf as ``{"array": "float32[32,1,3,3]"}``. Operator arrays (an MRI mask, coil maps, a
PSF) are leaves and travel in the ``.eqx`` with the weights. :func:`load` rebuilds the module
skeleton from that description alone, without running any constructor (no random
initialisation, no power iteration: milliseconds), then deserialises the leaves into it; only
classes from the ``invjax`` and ``equinox`` packages are ever instantiated (no unpickling).
A static field that holds a function (``DEQ(init=callable)``) cannot be described and is
refused by :func:`save` with a ``TypeError`` naming it.

**Integrity.** The JSON records ``"sha256"``: the SHA-256 of the ``.eqx`` file's bytes (the
serialised leaves, in the module's leaf order), so ``sha256sum model.eqx`` reproduces it.
:func:`load` recomputes it before deserialising and raises ``ValueError`` ("... is corrupted or
was modified: expected sha256 ..., got ...") on a mismatch: a flipped byte inside an array
would otherwise load silently as garbage weights. Files of the first format (``"format": 1``,
written before the hash existed) still load, with a ``UserWarning`` that they cannot be
checked; ``save(path, load(path))`` rewrites one in the current format.

Example:
    >>> import invjax as ij
    >>> ij.learned.available()                        # doctest: +SKIP
    ('crr-nn', 'dncnn', 'lpd-ct64', 'wcrr-nn')
    >>> model = ij.learned.pretrained("crr-nn")       # doctest: +SKIP
    >>> x_hat = model.denoise(y, 25 / 255)            # doctest: +SKIP
    >>> ij.learned.save("runs/my-dncnn", net, {"steps": 1000})   # doctest: +SKIP
    >>> net = ij.learned.load("runs/my-dncnn")                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .dncnn import DnCNN
from .ridge import ConvexRidge
from .unrolled import LearnedPrimalDual

_WEIGHTS = Path(__file__).with_name("weights")
_FORMAT = 2  # 1: constructor arguments of three known classes, no hash (read only)
_ROOTS = ("invjax", "equinox")  # the only packages whose classes load() instantiates
_PUBLIC = ("learned", "operators", "functionals", "nn", "")  # where a public name is looked for


# ---- the structure description (format 2) -------------------------------------------------------
def _class_name(cls: type, where: str) -> str:
    """``cls`` by its public name (``invjax.learned.DnCNN``), else ``module.Class``."""
    root = cls.__module__.split(".")[0]
    if root not in _ROOTS or "." in cls.__qualname__:
        raise TypeError(
            f"save: `{where}` is a {cls.__module__}.{cls.__qualname__}; only modules built from invjax "
            "(or equinox.nn) classes can be saved, since load() rebuilds them from their class name"
        )
    for sub in _PUBLIC:
        name = f"{root}.{sub}" if sub else root
        if getattr(sys.modules.get(name), cls.__name__, None) is cls:
            return f"{name}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _array_spec(x) -> str:
    return f"{jnp.dtype(x.dtype).name}[{','.join(str(int(d)) for d in x.shape)}]"


def _describe(obj, where: str, static: bool):
    """A JSON description of ``obj`` from which :func:`_rebuild` makes a skeleton of the same
    pytree structure (array leaves as shapes and dtypes; static values verbatim)."""
    if isinstance(obj, eqx.Module):
        fields = {}
        for f in dataclasses.fields(obj):
            fields[f.name] = _describe(getattr(obj, f.name), f"{where}.{f.name}", static or f.metadata.get("static", False))
        return {"module": _class_name(type(obj), where), "fields": fields}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, complex):
        return {"complex": [obj.real, obj.imag]}
    if isinstance(obj, np.dtype):
        return {"dtype": obj.name}
    if isinstance(obj, np.generic):
        return {"scalar": [obj.dtype.name, obj.item()]}
    if type(obj) in (tuple, list):  # not NamedTuples: their class would be needed
        return {type(obj).__name__: [_describe(v, f"{where}[{i}]", static) for i, v in enumerate(obj)]}
    if type(obj) is dict and all(isinstance(k, str) for k in obj):
        return {"dict": {k: _describe(v, f"{where}[{k!r}]", static) for k, v in obj.items()}}
    if isinstance(obj, (jax.Array, np.ndarray)):
        if static:
            raise TypeError(
                f"save: `{where}` is a static field holding an array; static metadata must be hashable "
                "Python values (tuples, numbers, strings) and arrays must be leaves"
            )
        if jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
            raise TypeError(f"save: `{where}` is a jax.random key array, which cannot be serialised")
        return {"array" if isinstance(obj, jax.Array) else "ndarray": _array_spec(obj)}
    raise TypeError(
        f"save: `{where}` is a {type(obj).__module__}.{type(obj).__qualname__}, which cannot be described "
        "in JSON (saved models hold modules, arrays, tuples, lists, dicts, numbers, strings and None)"
    )


def _resolve(name) -> type:
    module, _, attr = str(name).rpartition(".")
    cls = None
    if module.split(".")[0] in _ROOTS:
        try:
            cls = getattr(importlib.import_module(module), attr, None)
        except ImportError:
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, eqx.Module)):
        raise ValueError(f"names class {name!r}, which is not an equinox module class of invjax or equinox")
    return cls


def _parse_spec(spec: str) -> tuple[tuple[int, ...], np.dtype]:
    dtype, _, dims = spec.partition("[")
    if not dims.endswith("]"):
        raise ValueError(f"bad array description {spec!r} (expected e.g. 'float32[3,4]')")
    return tuple(int(d) for d in dims[:-1].split(",") if d), jnp.dtype(dtype)


def _rebuild(desc, where: str):
    """The skeleton described by ``desc``: modules made without running their constructors
    (exactly as their pytree unflattening does), arrays as ``jax.ShapeDtypeStruct``."""
    if desc is None or isinstance(desc, (bool, int, float, str)):
        return desc
    if not (isinstance(desc, dict) and desc):
        raise ValueError(f"bad description at `{where}`: {desc!r}")
    if "module" in desc:
        cls = _resolve(desc["module"])
        saved = desc.get("fields")
        if not isinstance(saved, dict):
            raise ValueError(f"bad description at `{where}`: no fields")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing = [n for n, f in fields.items() if n not in saved and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        extra = sorted(set(saved) - set(fields))
        if missing or extra:
            raise ValueError(
                f"`{where}` is described as a {cls.__name__} with fields {sorted(saved)}, but this invjax's "
                f"{cls.__name__} has fields {sorted(fields)} (saved by another version?)"
            )
        obj = object.__new__(cls)
        for n, f in fields.items():
            if n in saved:
                value = _rebuild(saved[n], f"{where}.{n}")
            else:  # a field added later, with a default
                value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            object.__setattr__(obj, n, value)
        return obj
    tag, value = next(iter(desc.items())) if len(desc) == 1 else (None, None)
    if tag == "array":
        shape, dtype = _parse_spec(value)
        return jax.ShapeDtypeStruct(shape, dtype)
    if tag == "ndarray":
        shape, dtype = _parse_spec(value)
        return np.zeros(shape, dtype)
    if tag in ("tuple", "list") and isinstance(value, list):
        items = [_rebuild(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if tag == "tuple" else items
    if tag == "dict" and isinstance(value, dict):
        return {k: _rebuild(v, f"{where}[{k!r}]") for k, v in value.items()}
    if tag == "complex":
        return complex(*value)
    if tag == "dtype":
        return np.dtype(value)
    if tag == "scalar":
        return np.dtype(value[0]).type(value[1])
    raise ValueError(f"bad description at `{where}`: {desc!r}")


# ---- format 1 (read only): constructor arguments of three classes -------------------------------
def _build_v1(cls: str, config: dict[str, Any]):
    from ..operators import ParallelBeam2D

    key = jax.random.PRNGKey(0)  # the skeleton's values are replaced by the saved leaves
    cfg = dict(config)
    if cls == "ConvexRidge":
        cfg["channels"] = tuple(cfg["channels"])
        if cfg.get("noise_calibration") is not None:
            cfg["noise_calibration"] = tuple(tuple(p) for p in cfg["noise_calibration"])
        return ConvexRidge(key=key, **cfg)
    if cls == "DnCNN":
        return DnCNN(key=key, **cfg)
    if cls == "LearnedPrimalDual":
        op = cfg.pop("op")
        if op.get("class") != "ParallelBeam2D":
            raise ValueError(f"unknown operator class {op.get('class')!r} (expected 'ParallelBeam2D')")
        op = ParallelBeam2D(tuple(op["shape"]), op["angles"], op["n_detectors"], op["detector_spacing"])
        return LearnedPrimalDual(op, key=key, **cfg)
    raise ValueError(f"unknown model class {cls!r} (expected 'ConvexRidge', 'DnCNN' or 'LearnedPrimalDual')")


def _skeleton_v1(record):
    cls, config = record["class"], record["config"]
    try:  # the structure without computing random weights (10 s for lpd-ct64 otherwise)
        return eqx.filter_eval_shape(_build_v1, cls, config)
    except Exception:  # noqa: BLE001  (a constructor that needs concrete values: build it)
        return _build_v1(cls, config)


# ---- files -------------------------------------------------------------------------------------
def _paths(path) -> tuple[Path, Path]:
    path = Path(os.fspath(path))
    base = path.with_suffix("") if path.suffix in (".eqx", ".json") else path
    return base.with_name(base.name + ".eqx"), base.with_name(base.name + ".json")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _deserialise_leaf(f, like):
    # np.load + device_put: jnp.load's jnp.asarray compiles a conversion per leaf shape (~20 ms
    # each, 0.3 s for lpd-ct64); np.load never unpickles (allow_pickle=False)
    if isinstance(like, jax.ShapeDtypeStruct):
        arr = np.load(f, allow_pickle=False)
        if arr.dtype.kind == "V":  # bfloat16 and friends are written as raw bytes
            arr = arr.view(like.dtype)
        return jax.device_put(arr)
    return eqx.default_deserialise_filter_spec(f, like)


def save(path, model, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path.eqx`` (its leaves) and ``path.json`` (its structure, the
    SHA-256 of the ``.eqx`` and ``metadata``); ``path`` with or without either suffix.

    Args:
        path: where to write; parent folders are created.
        model: an equinox module built from invjax classes: ``ConvexRidge``, ``DnCNN``,
            ``FFDNet``, ``LearnedPrimalDual``, ``MoDL``, ``DEQ`` (bound to any invjax operator),
            an operator, a regularizer ... (see the module docstring for the format).
        metadata: JSON-serialisable facts kept beside the structure (training command, steps,
            ...); default none.

    Each file is written through a temporary file and a rename, so an interrupted save never
    leaves a half-written file under the final name (and a ``.json`` left from an earlier save
    no longer matches the new ``.eqx``'s hash, so :func:`load` refuses the pair).

    Returns:
        The ``.eqx`` path.

    Raises:
        TypeError: ``model`` is not an equinox module, holds a class from outside invjax and
            equinox, or a value JSON cannot describe (a function in a static field, say); the
            message names the field.
    """
    if not isinstance(model, eqx.Module):
        raise TypeError(
            "save: `model` must be an equinox module built from invjax classes (ConvexRidge, DnCNN, FFDNet, "
            f"LearnedPrimalDual, MoDL, DEQ, ...), got {type(model).__name__}"
        )
    structure = _describe(model, type(model).__name__, False)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, model)
    data = buffer.getvalue()
    from .. import __version__

    record = {"format": _FORMAT, "class": structure["module"], "sha256": _sha256(data), "invjax": __version__,
              "metadata": dict(metadata or {}), "structure": structure}
    text = json.dumps(record, indent=1)
    weights, meta = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    for target, content in ((weights, data), (meta, text.encode())):
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    return weights


def load(path):
    """The module saved by :func:`save` at ``path`` (with or without the ``.eqx``/``.json``
    suffix).

    The ``.eqx`` bytes are checked against the SHA-256 recorded in the ``.json`` before
    anything is deserialised; the module skeleton is rebuilt from the JSON description
    without running constructors (loading takes milliseconds plus reading the file).

    Raises:
        FileNotFoundError: a missing ``.eqx`` or ``.json``.
        ValueError: naming the file: a ``.json`` that is not a model description or names a
            class outside invjax/equinox; an ``.eqx`` whose hash differs from the recorded one
            ("is corrupted or was modified"); leaves that do not fit the described structure.

    Warns:
        UserWarning: a file of the first format (no hash recorded), which loads unchecked.
    """
    weights, meta = _paths(path)
    for p in (weights, meta):
        if not p.exists():
            raise FileNotFoundError(f"load: no saved model at {str(p)!r} (a model is a .eqx and a .json file)")
    try:
        record = json.loads(meta.read_text())
        fmt = record["format"]
        cls = record["class"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"load: {str(meta)!r} is not a saved model description ({err!r})") from None
    if fmt not in (1, _FORMAT):
        raise ValueError(f"load: {str(meta)!r} has format {fmt!r}, this invjax reads 1 and {_FORMAT}")
    data = weights.read_bytes()
    expected = record.get("sha256")
    if expected is None and fmt == 1:
        warnings.warn(
            f"load: {str(meta)!r} records no sha256 (written before invjax hashed its models), so the "
            f"integrity of {str(weights)!r} cannot be checked; rewrite it with ij.learned.save(path, "
            "ij.learned.load(path))",
            UserWarning,
            stacklevel=2,
        )
    else:
        got = _sha256(data)
        if got != expected:
            raise ValueError(
                f"load: {str(weights)!r} is corrupted or was modified: expected sha256 {expected} "
                f"(recorded in {str(meta)!r}), got {got}"
            )
    try:
        skeleton = _skeleton_v1(record) if fmt == 1 else _rebuild(record["structure"], str(cls).rpartition(".")[2])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"load: {str(meta)!r} does not describe a model this invjax can rebuild: {err}") from None
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(data), skeleton, filter_spec=_deserialise_leaf)
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
    """A shipped model by name (see :func:`available`; :func:`metadata` tells how each was
    trained), loaded and hash-checked by :func:`load` (milliseconds: no constructor runs).

    The shipped models and their contracts (images are float arrays on the ``[0, 1]`` scale;
    ``sigma`` is the noise standard deviation on that scale, ``0 < sigma <= 1``, e.g.
    ``25 / 255``, a scalar or one per image ``(B,)``):

    * ``"crr-nn"``: :class:`ConvexRidge`, the convex ridge regularizer CRR-NN (channels 1, 8,
      32; 5x5 kernels). ``model(x)`` is the scalar ``R(x)`` of an ``(H, W)`` image (any size),
      also ``model.grad(x)`` and ``model.prox(v, step)``; a regularizer for
      :class:`invjax.Problem`. ``model.denoise(y, sigma)``: ``y`` of shape ``(H, W)`` or
      ``(B, H, W)``, returns that shape; the prox of ``sigma^2 R`` with a strength calibrated
      at ``sigma`` = 10, 15, 25 / 255 (interpolated in ``log sigma``, held beyond). Trained at
      ``sigma = 25 / 255``. Bound to no operator.
    * ``"wcrr-nn"``: the same class and contract, weakly convex (``model.weak_convexity`` is
      its modulus ``rho``, ``R + rho ||x||^2 / 2`` is convex); calibrated at ``sigma`` = 5, 10,
      15, 25, 35, 50 / 255.
    * ``"dncnn"``: :class:`DnCNN` with a noise-level input (10 layers, width 32).
      ``model.denoise(y, sigma)``: ``y`` of shape ``(H, W)`` or ``(B, H, W)``, returns that
      shape; ``sigma`` required; trained on levels uniform in ``(0, 50 / 255]``. Bound to no
      operator; plugs into solvers through :class:`DenoiserPrior`.
    * ``"lpd-ct64"``: :class:`LearnedPrimalDual` (10 iterations) bound to
      ``ParallelBeam2D((64, 64), angles=30 equispaced in [0, pi), n_detectors=91,
      detector_spacing=1.0)`` (``model.op``). ``model(y)``: a sinogram ``y`` of shape
      ``(30, 91)`` or ``(B, 30, 91)`` (``model.op(x)`` plus noise; trained with Gaussian noise
      of 0.05 times the mean ``|Ax|`` on random-ellipse phantoms in ``[0, 1]``) returns the
      image ``(64, 64)`` or ``(B, 64, 64)``. It has no ``denoise`` and no ``sigma``; other
      geometries of the same kind: ``model.with_operator(op)``.

    Under ``jax.jit``: pass the model as an argument, ``jax.jit(lambda m, y: m(y))(model, y)``
    (its static metadata is hashable, so compilations are cached), or use
    ``eqx.filter_jit(model)(y)`` / ``eqx.filter_jit(model.denoise)(y, sigma)``. Plain
    ``jax.jit(model)`` and ``jax.jit(model.denoise)`` are refused by equinox itself
    (``TypeError: unhashable type``) for every module holding arrays, ``eqx.nn.Linear``
    included: ``jax.jit`` hashes the function it wraps, and a module hashes its fields.
    Run-time checks under ``jax.jit`` (``sigma <= 0`` traced, say) raise a ``JaxRuntimeError``
    whose text carries the message; under ``eqx.filter_jit`` an ``EquinoxRuntimeError`` with
    just the message.

    Raises:
        ValueError: an unknown name, or a shipped file whose hash does not match (a damaged
            installation).
    """
    return load(_WEIGHTS / _check_name(name))
