r"""The model zoo: saving, loading, the shipped pretrained models, and imported published weights.

**Saving and loading.** A saved model is two files side by side: ``<name>.eqx`` (the leaves, equinox serialisation)
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

Example (saving and loading):
    >>> import invjax as ij
    >>> ij.learned.available()                        # doctest: +SKIP
    ('crr-nn', 'dncnn', 'ffdnet', 'lpd-ct64', 'wcrr-nn')
    >>> model = ij.learned.pretrained("crr-nn")       # doctest: +SKIP
    >>> x_hat = model.denoise(y, 25 / 255)            # doctest: +SKIP
    >>> ij.learned.save("runs/my-dncnn", net, {"steps": 1000})   # doctest: +SKIP
    >>> net = ij.learned.load("runs/my-dncnn")                   # doctest: +SKIP

**Importing published weights.** ``import_weights(kind, path)`` reads a file the user already has (nothing is downloaded, no
third-party weights ship with invjax) and returns the invjax module computing the same function:

* ``"dncnn"``: a PyTorch state dict of DnCNN (Zhang et al., IEEE TIP 2017) in the KAIR layout
  (``model.0.weight``, ``model.2.weight``, ... as in ``dncnn_25.pth``, ``dncnn_50.pth``,
  ``dncnn_color_blind.pth``), any ``<prefix>.<index>.weight`` sequential layout (the cszn
  PyTorch port: ``dncnn.0.weight``, ...), or the DeepInverse layout (``in_conv``,
  ``conv_list.<n>``, ``out_conv``; its network adds ``out_conv(...)`` to the input, so the last
  layer is negated). Batch normalisation layers (``weight``, ``bias``, ``running_mean``,
  ``running_var``) are folded into the preceding convolution:
  ``w' = w g / sqrt(v + eps)``, ``b' = (b - m) g / sqrt(v + eps) + beta`` (``eps`` is not
  stored in a state dict: ``bn_eps``, default torch's 1e-5; KAIR and the cszn port used 1e-4).
  Result: :class:`~invjax.learned.DnCNN` (images on the ``[0, 1]`` scale).
* ``"dncnn-matconvnet"``: the DnCNN authors' MatConvNet SimpleNN ``.mat`` files
  (``net.layers{i}``; ``conv`` layers with ``weights{1}`` of MATLAB shape ``(kh, kw, C_in,
  C_out)`` and ``weights{2}`` the bias, ``relu`` layers, ``bnorm`` layers folded with their
  moments ``[mean, std]``). MATLAB v5/v7 files are read with ``scipy.io.loadmat``; the
  released files are MATLAB v7.3 (HDF5) and need ``h5py``. The network predicts the noise
  (``output = input - net(input)``), as invjax's DnCNN.
* ``"crr-nn"`` / ``"wcrr-nn"``: the checkpoints of Goujon et al.'s CRR-NN
  (``axgoujon/convex_ridge_regularizers``) and WCRR-NN (``axgoujon/weakly_convex_ridge_
  regularizers``), mapped onto :class:`~invjax.learned.ConvexRidge` (see :func:`import_weights`
  for the exact correspondence and where it differs).
* ``"drunet"``: KAIR's ``UNetRes`` state dicts (DRUNet, Zhang et al., TPAMI 2022), onto
  :class:`~invjax.learned.DRUNet`.

Checked on released files (not shipped, not downloaded by invjax): KAIR's ``dncnn_25.pth``
(legacy format) and the authors' MatConvNet ``specifics/sigma=25.mat`` (v7.3) import to
networks that denoise the same test image to the same PSNR; the CRR-NN ``Sigma_25_t_10``
checkpoint's gradient equals a numpy transcription of the authors' code to 9e-7 away from the
border; ``benchmarks/import_check.py`` compares with torch itself.

``.pth`` files are read **without torch** and without unpickling arbitrary objects: a
restricted unpickler accepts only what a tensor state dict needs (``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2``, ``torch._utils._rebuild_parameter`` and the
``torch.<Type>Storage`` classes as markers) and refuses every other global by name; storages
are read as numpy arrays from the zip (torch >= 1.6) or from the legacy stream that follows
the pickle (older files, such as KAIR's). Strides and offsets are checked against the storage
sizes before any view is taken.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._pth import WHO, _read_torch, _state_dict, read_state_dict
from .networks.dncnn import DnCNN
from .networks.unrolled import LearnedPrimalDual
from .priors.ridge import ConvexRidge

__all__ = ["KINDS", "available", "import_weights", "load", "metadata", "pretrained", "read_state_dict", "save"]

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


# modules of the flat layout before learned/ was split by role: a file saved then names a private
# class by its old module path, which load() still resolves
_MOVED = {
    **{f"invjax.learned.{m}": f"invjax.learned.priors.{m}" for m in ("ridge", "spline", "pnp")},
    **{f"invjax.learned.{m}": f"invjax.learned.networks.{m}"
       for m in ("dncnn", "ffdnet", "drunet", "unrolled", "modl", "deq", "_conv")},
    **{f"invjax.learned.{m}": f"invjax.learned.training.{m}" for m in ("data", "mri_data")},
    "invjax.learned.training": "invjax.learned.training.loop",
    "invjax.learned.pretrained": "invjax.learned.zoo",
    "invjax.learned.zoo_import": "invjax.learned.zoo",
}


def _resolve(name) -> type:
    module, _, attr = str(name).rpartition(".")
    module = _MOVED.get(module, module)
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

    Arguments:
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

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "spline")
        >>> model = ij.learned.LinearSpline(2, knots=5)
        >>> ij.learned.save(path, model, metadata={"note": "a test"}).name
        'spline.eqx'
        >>> sorted(os.listdir(os.path.dirname(path)))
        ['spline.eqx', 'spline.json']
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

    Arguments:
        path: the saved model's path, a ``str`` or ``os.PathLike``.

    Returns:
        The module, of the saved class, with the saved leaves (shapes and dtypes as saved).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "spline")
        >>> model = eqx.tree_at(lambda s: s.raw_slopes, ij.learned.LinearSpline(2, knots=5),
        ...                     jnp.arange(8.0).reshape(2, 4))
        >>> _ = ij.learned.save(path, model)
        >>> loaded = ij.learned.load(path + ".eqx")
        >>> type(loaded).__name__, loaded.knots, bool(jnp.array_equal(loaded.raw_slopes, model.raw_slopes))
        ('LinearSpline', 5, True)

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
    """The recorded facts of a shipped model (training command, steps, wall time, machine, ...).

    Arguments:
        name: one of :func:`available`.

    Returns:
        A dict parsed from the model's JSON (keys vary with the training script; the denoisers
        record ``command``, ``steps``, ``wall_s``, ``machine``, ``validation_steps``, ...).

    Raises:
        ValueError: an unknown ``name``.

    Example:
        >>> meta = ij.learned.metadata("dncnn")
        >>> meta["command"].split()[:4]
        ['python', 'benchmarks/train_denoisers.py', '--model', 'dncnn']
    """
    return json.loads(_paths(_WEIGHTS / _check_name(name))[1].read_text())["metadata"]


def available() -> tuple[str, ...]:
    """Names of the pretrained models shipped with this installation, sorted.

    Returns:
        A tuple of names for :func:`pretrained` and :func:`metadata`.

    Example:
        >>> {"crr-nn", "dncnn", "ffdnet", "lpd-ct64", "wcrr-nn"} <= set(ij.learned.available())
        True
    """
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
    * ``"ffdnet"``: :class:`FFDNet` (15 layers, width 64, on the four half-resolution
      sub-images plus a noise-level map), same contract as ``"dncnn"``, trained on levels in
      ``(0, 60 / 255]``; better than ``"dncnn"`` on the held-out crops (see its JSON's curve).
    * ``"lpd-ct64"``: :class:`LearnedPrimalDual` (10 iterations) bound to
      ``ParallelBeam2D((64, 64), angles=30 equispaced in [0, pi), n_detectors=91,
      detector_spacing=1.0)`` (``model.op``). ``model(y)``: a sinogram ``y`` of shape
      ``(30, 91)`` or ``(B, 30, 91)`` (``model.op(x)`` plus noise; trained with Gaussian noise
      of 0.05 times the mean ``|Ax|``, i.e. ``measure(op, x, key=k, relative_noise=0.05)``, on
      random-ellipse phantoms in ``[0, 1]``) returns the
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

    Arguments:
        name: one of :func:`available` (``"crr-nn"``, ``"dncnn"``, ``"ffdnet"``, ``"lpd-ct64"``, ``"wcrr-nn"``).

    Returns:
        The model, an equinox module (see the list above for its class and contract).

    Raises:
        ValueError: an unknown name, or a shipped file whose hash does not match (a damaged
            installation).

    Example:
        >>> model = ij.learned.pretrained("dncnn")
        >>> model.denoise(jnp.full((2, 16, 16), 0.5), 25 / 255).shape    # a batch of two images
        (2, 16, 16)
        >>> ij.learned.pretrained("lpd-ct64").op.out_shape              # the geometry it is bound to
        (30, 91)
    """
    return load(_WEIGHTS / _check_name(name))


# ---- importing published weights (torch / MatConvNet files the user has) ----------------------
#: the kinds of file :func:`import_weights` reads
KINDS = ("dncnn", "dncnn-matconvnet", "crr-nn", "wcrr-nn", "drunet")

# ------------------------------------------------------------------------------------------------
# DnCNN
# ------------------------------------------------------------------------------------------------
class _Conv:
    """One convolution of an imported network, with the names of its source entries."""

    def __init__(self, name, w, b, bname=None):
        self.name, self.w, self.b, self.bname = name, np.asarray(w, np.float64), b, bname
        self.b = None if b is None else np.asarray(b, np.float64).ravel()


def _fold_bn(conv: _Conv, gamma, beta, mean, var, eps, name):
    c = conv.w.shape[0]
    for what, v in (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var)):
        if np.shape(v) != (c,):
            raise ValueError(
                f"{WHO}: '{name}.{what}' has shape {np.shape(v)} where the network expects ({c},) (the batch "
                f"normalisation after '{conv.name}')"
            )
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    b = np.zeros(c) if conv.b is None else conv.b
    conv.w = conv.w * scale[:, None, None, None]
    conv.b = (b - np.asarray(mean, np.float64)) * scale + np.asarray(beta, np.float64)
    conv.bname = f"{name}.bias"


def _dncnn_layers_torch(sd: dict, bn_eps: float, where: str) -> list[_Conv]:
    if "in_conv.weight" in sd:  # DeepInverse
        expected = {"in_conv.weight", "in_conv.bias", "out_conv.weight", "out_conv.bias"}
        names = ["in_conv"]
        n = 0
        while f"conv_list.{n}.weight" in sd:
            names.append(f"conv_list.{n}")
            n += 1
        names.append("out_conv")
        known = set(expected) | {f"{m}.{p}" for m in names for p in ("weight", "bias")}
        for k in sd:
            if k not in known:
                raise ValueError(f"{WHO}: unexpected key '{k}' in {where} for a DeepInverse DnCNN")
        if "out_conv.weight" not in sd:
            raise ValueError(f"{WHO}: key 'out_conv.weight' missing in {where}")
        convs = [_Conv(f"{m}.weight", sd[f"{m}.weight"], sd.get(f"{m}.bias"), f"{m}.bias") for m in names]
        # DeepInverse returns x + out_conv(...): invjax's D(y) = y - N(y), so N = -out_conv
        convs[-1].w = -convs[-1].w
        if convs[-1].b is not None:
            convs[-1].b = -convs[-1].b
        return convs
    pattern = re.compile(r"^(?:(.*)\.)?(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
    modules: dict[int, dict] = {}
    prefix = None
    for k, v in sd.items():
        m = pattern.match(k)
        if m is None or (prefix is not None and m.group(1) != prefix):
            raise ValueError(
                f"{WHO}: unexpected key '{k}' in {where}: a DnCNN state dict has keys '<prefix>.<index>.weight' "
                "(KAIR: 'model.0.weight', ...) or 'in_conv.weight', 'conv_list.<n>.weight', 'out_conv.weight' "
                "(DeepInverse)"
            )
        prefix = m.group(1)
        modules.setdefault(int(m.group(2)), {})[m.group(3)] = (k, v)
    head = "" if prefix is None else prefix + "."
    convs: list[_Conv] = []
    for idx in sorted(modules):
        p = modules[idx]
        name = f"{head}{idx}"
        if "running_mean" in p or "running_var" in p:
            missing = [q for q in ("weight", "bias", "running_mean", "running_var") if q not in p]
            if missing:
                raise ValueError(f"{WHO}: key '{name}.{missing[0]}' missing in {where} (batch normalisation '{name}')")
            if not convs:
                raise ValueError(f"{WHO}: batch normalisation '{name}' in {where} has no convolution before it")
            _fold_bn(convs[-1], p["weight"][1], p["bias"][1], p["running_mean"][1], p["running_var"][1], bn_eps, name)
        elif "weight" in p:
            if np.ndim(p["weight"][1]) != 4:
                raise ValueError(
                    f"{WHO}: '{name}.weight' has shape {np.shape(p['weight'][1])} where the network expects a "
                    "convolution kernel (C_out, C_in, 3, 3) or a batch normalisation with running statistics"
                )
            convs.append(_Conv(f"{name}.weight", p["weight"][1], p["bias"][1] if "bias" in p else None, f"{name}.bias"))
        else:
            raise ValueError(f"{WHO}: key '{name}.weight' missing in {where}")
    if not convs:
        raise ValueError(f"{WHO}: no convolution found in {where}")
    return convs


def _build_dncnn(convs: list[_Conv], dtype):
    from .networks.dncnn import DnCNN

    first = convs[0].w
    if first.ndim != 4:
        raise ValueError(f"{WHO}: '{convs[0].name}' has shape {first.shape} where the network expects (C_out, C_in, 3, 3)")
    channels = first.shape[1]
    width = first.shape[0] if len(convs) > 1 else channels
    depth = len(convs)
    for i, conv in enumerate(convs):
        c_in = channels if i == 0 else width
        c_out = channels if i == depth - 1 else width
        want = (c_out, c_in, 3, 3)
        if conv.w.shape != want:
            hint = ""
            if i == depth - 1 and conv.w.shape[1:] == want[1:]:
                hint = (
                    f" (a DnCNN maps {channels} channel(s) to as many; a network with a noise-map input and a direct "
                    "output, such as FDnCNN, is not a residual DnCNN)"
                )
            raise ValueError(f"{WHO}: '{conv.name}' has shape {conv.w.shape} where the network expects {want}{hint}")
        if conv.b is not None and conv.b.shape != (c_out,):
            raise ValueError(f"{WHO}: '{conv.bname}' has shape {conv.b.shape} where the network expects ({c_out},)")
        if not np.all(np.isfinite(conv.w)) or (conv.b is not None and not np.all(np.isfinite(conv.b))):
            raise ValueError(f"{WHO}: '{conv.name}' (or its bias) has non-finite values")
    bias = any(c.b is not None for c in convs)
    skeleton = eqx.filter_eval_shape(lambda: DnCNN(channels, depth, width, bias=bias, key=jax.random.PRNGKey(0)))
    ws = tuple(jnp.asarray(c.w, dtype) for c in convs)
    new = [ws]
    if bias:
        new.append(tuple(jnp.asarray(np.zeros(c.w.shape[0]) if c.b is None else c.b, dtype) for c in convs))
        return eqx.tree_at(lambda m: (m.weights, m.biases), skeleton, tuple(new))
    return eqx.tree_at(lambda m: m.weights, skeleton, ws)


# ---- MatConvNet ---------------------------------------------------------------------------------
def _mat_layers(path: str, where: str) -> list[dict]:
    """``net.layers`` of a MatConvNet SimpleNN file as dicts ``{"type", "weights", "name"}``
    with arrays in MATLAB's index order."""
    with open(path, "rb") as f:
        head = f.read(128)
    if head.startswith(b"MATLAB 7.3") or head[:8] == b"\x89HDF\r\n\x1a\n":
        return _mat_layers_hdf5(path, where)
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
    except Exception as err:  # scipy raises several types for broken files
        raise ValueError(f"{WHO}: {where} is not a readable MATLAB file ({type(err).__name__}: {err})") from None
    net = mat.get("net")
    if net is None or net.dtype.names is None or "layers" not in net.dtype.names:
        raise ValueError(f"{WHO}: {where} has no MatConvNet SimpleNN network (a variable 'net' with 'layers')")
    cells = np.asarray(net[0, 0]["layers"]).ravel()
    layers = []
    for i, cell in enumerate(cells):
        s = cell[0, 0] if isinstance(cell, np.ndarray) and cell.dtype.names is None else cell
        s = np.asarray(s).ravel()[0]
        names = s.dtype.names or ()
        typ = "".join(np.asarray(s["type"]).ravel().tolist()) if "type" in names else ""
        weights = []
        if "weights" in names:
            weights = [np.asarray(w) for w in np.asarray(s["weights"]).ravel()]
        name = "".join(np.asarray(s["name"]).ravel().tolist()) if "name" in names and np.asarray(s["name"]).size else ""
        layers.append({"type": typ, "weights": weights, "name": name or f"layers{{{i + 1}}}"})
    return layers


def _mat_layers_hdf5(path: str, where: str) -> list[dict]:
    try:
        import h5py
    except ImportError:
        raise ValueError(
            f"{WHO}: {where} is a MATLAB v7.3 (HDF5) file, which needs h5py: pip install h5py, or invjax[weights] (or re-save it in "
            "MATLAB with save(..., '-v7'))"
        ) from None
    try:
        with h5py.File(path, "r") as f:
            if "net" not in f or "layers" not in f["net"]:
                raise ValueError(f"{WHO}: {where} has no MatConvNet SimpleNN network (a variable 'net' with 'layers')")
            refs = np.asarray(f["net"]["layers"]).ravel()
            layers = []
            for i, ref in enumerate(refs):
                g = f[ref]
                text = lambda d: "".join(chr(c) for c in np.asarray(d).ravel())  # noqa: E731  (uint16 chars)
                typ = text(g["type"]) if "type" in g else ""
                weights = []
                if "weights" in g:
                    w = np.asarray(g["weights"])
                    if w.dtype == object:
                        for r in w.ravel():
                            weights.append(np.asarray(f[r]).T)  # HDF5 holds MATLAB arrays transposed
                name = text(g["name"]) if "name" in g and np.asarray(g["name"]).dtype != object else ""
                layers.append({"type": typ, "weights": weights, "name": name or f"layers{{{i + 1}}}"})
            return layers
    except OSError as err:
        raise ValueError(f"{WHO}: {where} is truncated or corrupted ({err})") from None


def _matconvnet_convs(layers: list[dict], where: str) -> list[_Conv]:
    convs: list[_Conv] = []
    for i, layer in enumerate(layers):
        typ, ws, name = layer["type"], layer["weights"], layer["name"]
        label = f"net.layers{{{i + 1}}} ({name}, type '{typ}')"
        if typ == "conv":
            if not ws:
                raise ValueError(f"{WHO}: {label} in {where} has no weights")
            w = np.asarray(ws[0], np.float64)
            if w.ndim == 2:
                w = w[:, :, None, None]
            elif w.ndim == 3:  # MATLAB drops trailing singleton dimensions: (kh, kw, C_in, 1)
                w = w[..., None]
            if w.ndim != 4:
                raise ValueError(f"{WHO}: {label}.weights{{1}} has shape {w.shape} where the network expects (3, 3, C_in, C_out)")
            b = np.asarray(ws[1], np.float64).ravel() if len(ws) > 1 and np.size(ws[1]) else None
            # MATLAB (kh, kw, C_in, C_out) -> (C_out, C_in, kh, kw); MatConvNet correlates, as invjax
            convs.append(_Conv(f"net.layers{{{i + 1}}}.weights{{1}}", w.transpose(3, 2, 0, 1), b, f"net.layers{{{i + 1}}}.weights{{2}}"))
        elif typ == "bnorm":
            if not convs:
                raise ValueError(f"{WHO}: {label} in {where} has no convolution before it")
            if len(ws) < 3:
                raise ValueError(f"{WHO}: {label} in {where} needs weights {{multipliers, biases, moments}}")
            g, b, moments = (np.asarray(v, np.float64) for v in ws[:3])
            c = convs[-1].w.shape[0]
            moments = moments.reshape(c, 2) if moments.size == 2 * c else moments
            if moments.shape != (c, 2):
                raise ValueError(f"{WHO}: {label}.weights{{3}} has shape {moments.shape} where the network expects ({c}, 2)")
            # MatConvNet's moments are [mean, standard deviation]: y = g (x - m) / s + b
            _fold_bn(convs[-1], g.ravel(), b.ravel(), moments[:, 0], moments[:, 1] ** 2, 0.0, f"net.layers{{{i + 1}}}")
        elif typ == "relu":
            if not convs:
                raise ValueError(f"{WHO}: {label} in {where} comes before any convolution")
        elif typ in ("loss", "euclideanloss", "softmaxloss", "pdist", "dropout") or not ws:
            continue  # training-only layers
        else:
            raise ValueError(f"{WHO}: {label} in {where} is not part of a DnCNN (conv, bnorm and relu layers)")
    if not convs:
        raise ValueError(f"{WHO}: no convolution layers in {where}")
    return convs


# ------------------------------------------------------------------------------------------------
# CRR-NN and WCRR-NN
# ------------------------------------------------------------------------------------------------
def _config(config, ckpt, where):
    if config is None:
        return ckpt.get("config") if isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict) else {}
    if isinstance(config, (str, os.PathLike)):
        with open(config) as f:
            return json.load(f)
    if isinstance(config, dict):
        return config
    raise TypeError(f"{WHO}: `config` must be None, a dict or the path of the authors' config.json, got {config!r}")


def _get(sd, key, where, ndim=None):
    if key not in sd:
        raise ValueError(f"{WHO}: key '{key}' missing in {where}")
    v = np.asarray(sd[key], np.float64)
    if ndim is not None and v.ndim != ndim:
        raise ValueError(f"{WHO}: '{key}' has {v.ndim} dimensions where the network expects {ndim}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{WHO}: '{key}' has non-finite values")
    return v


def _conv_stack(sd, where, zero_mean_all):
    """The multi-convolution's kernels ``(C_out, C_in, k, k)``, each padded to the largest ``k``
    (a zero border does not change a correlation), with the authors' zero-mean parametrisation
    applied (every layer for CRR-NN, the first for WCRR-NN)."""
    kernels, names = [], []
    n = 0
    while True:
        base = f"conv_layer.conv_layers.{n}"
        for key in (f"{base}.parametrizations.weight.original", f"{base}.weight"):
            if key in sd:
                break
        else:
            break
        w = _get(sd, key, where, 4)
        if w.shape[2] != w.shape[3] or w.shape[2] % 2 == 0:
            raise ValueError(f"{WHO}: '{key}' has shape {w.shape} where the network expects square odd kernels")
        if n > 0 and w.shape[1] != kernels[-1].shape[0]:
            want = (w.shape[0], kernels[-1].shape[0]) + w.shape[2:]
            raise ValueError(f"{WHO}: '{key}' has shape {w.shape} where the network expects {want}")
        if n == 0 and w.shape[1] != 1:
            raise ValueError(f"{WHO}: '{key}' has shape {w.shape} where the network expects {(w.shape[0], 1) + w.shape[2:]}")
        if ".parametrizations." in key and (zero_mean_all or n == 0):
            w = w - w.mean(axis=(1, 2, 3), keepdims=True)
        kernels.append(w)
        names.append(key)
        n += 1
    if not kernels:
        raise ValueError(f"{WHO}: key 'conv_layer.conv_layers.0.parametrizations.weight.original' missing in {where}")
    k = max(w.shape[-1] for w in kernels)
    padded = []
    for w in kernels:
        p = (k - w.shape[-1]) // 2
        padded.append(np.pad(w, ((0, 0), (0, 0), (p, p), (p, p))))
    return padded, names


def _make(cls, **values):
    """A module made from its field values without running its constructor (as its pytree
    unflattening does; the random initialisation would only be overwritten), then validated by
    its ``__check_init__``. Fields not given take their defaults."""
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        if f.name in values:
            value = values.pop(f.name)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise TypeError(f"{WHO}: this invjax's {cls.__name__} has a field `{f.name}` the importer does not fill")
        object.__setattr__(obj, f.name, value)
    if values:
        raise TypeError(f"{WHO}: this invjax's {cls.__name__} has no fields {sorted(values)}")
    check = getattr(obj, "__check_init__", None)
    if check is not None:
        check()
    return obj


def _ridge(kernels, slopes, knots, spline_range, weakly_convex, strength, scale, dtype):
    from .priors.ridge import ConvexRidge
    from .priors.spline import LinearSpline

    channels = (1,) + tuple(int(w.shape[0]) for w in kernels)
    spline = _make(
        LinearSpline, raw_slopes=jnp.asarray(slopes, dtype), knots=int(knots), spline_range=float(spline_range),
        lower=-1.0 if weakly_convex else 0.0, upper=1.0,
    )
    return _make(
        ConvexRidge,
        kernels=tuple(jnp.asarray(w, dtype) for w in kernels),
        spline=spline,
        log_strength=jnp.asarray(math.log(strength), dtype),
        log_scale=jnp.asarray(math.log(scale), dtype),
        channels=channels,
        kernel_size=int(kernels[0].shape[-1]),
        weakly_convex=bool(weakly_convex),
        prox_tol=None,
        prox_max_iters=1000,
        noise_calibration=None,
    )


def _crr(ckpt, sd, config, sigma, where, dtype):
    kernels, _ = _conv_stack(sd, where, zero_mean_all=True)
    c = kernels[-1].shape[0]
    coeffs = _get(sd, "activation.coefficients_vect", where, 1)
    act = config.get("activation_params", {})
    if coeffs.size % c:
        raise ValueError(
            f"{WHO}: 'activation.coefficients_vect' has shape {coeffs.shape} where the network expects "
            f"({c} * knots,) ({c} splines, one per filter)"
        )
    m = coeffs.size // c
    if "n_knots" in act and int(act["n_knots"]) != m:
        raise ValueError(f"{WHO}: 'activation.coefficients_vect' has {m} knots per spline, the config says {act['n_knots']}")
    if m % 2 == 0 or m < 3:
        raise ValueError(f"{WHO}: the splines have {m} knots; invjax's splines need an odd number >= 3 (0 is a knot)")
    r = float(act.get("knots_range", 0.1))
    delta = 2 * r / (m - 1)
    cs = coeffs.reshape(c, m)
    # the authors' monotonic projection: slopes clipped at 0, the two end intervals flat
    slopes = np.maximum(np.diff(cs, axis=1), 0) / delta
    slopes[:, 0] = 0
    slopes[:, -1] = 0
    a = max(1.0, float(slopes.max()))
    lmbd = max(float(_get(sd, "lmbd", where)), 1e-4)
    mu = max(float(_get(sd, "mu", where)), 0.01)
    if sigma is None:
        if "sigma" not in config:
            raise ValueError(
                f"{WHO}: the training noise level of {where} is unknown (no 'sigma' in its config): pass sigma= "
                "(on the [0, 1] scale, e.g. 25 / 255) or config= (the authors' config.json)"
            )
        sigma = float(config["sigma"]) / 255
    sigma = _check_level(sigma)
    strength = lmbd * mu * a / sigma**2
    return _ridge(kernels, slopes / a, m, r, False, strength, mu, dtype)


def _spline_values(coeffs, x_min, x_max, x):
    """The authors' linear spline (values at uniform knots, linear extrapolation) at ``x``."""
    m = coeffs.shape[-1]
    step = (x_max - x_min) / (m - 1)
    idx = np.clip(np.floor((x - x_min) / step), 0, m - 2).astype(int)
    frac = (x - x_min) / step - idx
    return coeffs[..., idx] * (1 - frac) + coeffs[..., idx + 1] * frac


def _clipped(coeffs, step, lo, hi):
    """The authors' projection of an activation spline (slopes in [lo, hi], flat ends,
    antisymmetric)."""
    s = np.clip(np.diff(coeffs, axis=-1) / step, lo, hi)
    s[..., 0] = 0
    s[..., -1] = 0
    cs = np.concatenate([np.zeros(coeffs.shape[:-1] + (1,)), np.cumsum(s, axis=-1) * step], axis=-1)
    return 0.5 * (cs - cs[..., ::-1])


def _wcrr(ckpt, sd, config, sigma, where, dtype):
    if sigma is None:
        raise TypeError(
            f"{WHO}: kind='wcrr-nn' needs sigma= (the noise level on the [0, 1] scale at which the model's "
            "noise-dependent scaling is evaluated, e.g. 25 / 255)"
        )
    sigma = _check_level(sigma)
    kernels, _ = _conv_stack(sd, where, zero_mean_all=False)
    c = kernels[-1].shape[0]
    act = config.get("spline_activation", {})
    x_min, x_max = float(act.get("x_min", -0.1)), float(act.get("x_max", 0.1))
    noise_range = config.get("noise_range", [0, 30])
    rho_w = float(config.get("rho_wcvx", 1.0))
    cvx = _get(sd, "activation_cvx.coefficients", where, 2)
    ccv = _get(sd, "activation_ccv.coefficients", where, 2)
    scal = _get(sd, "spline_scaling.coefficients", where, 2)
    m = cvx.shape[-1]
    if cvx.shape != (1, m) or ccv.shape != (1, m):
        raise ValueError(
            f"{WHO}: 'activation_ccv.coefficients' has shape {ccv.shape} where the network expects {(1, m)} (one "
            "shared spline, as 'activation_cvx.coefficients')"
        )
    if scal.shape[0] != c:
        raise ValueError(
            f"{WHO}: 'spline_scaling.coefficients' has shape {scal.shape} where the network expects ({c}, knots) (one "
            "scaling spline per filter)"
        )
    if m % 2 == 0 or m < 3 or not math.isclose(x_min, -x_max):
        raise ValueError(f"{WHO}: invjax's splines need an odd number of knots symmetric about 0; got {m} on [{x_min}, {x_max}]")
    step = (x_max - x_min) / (m - 1)
    mu = math.exp(float(_get(sd, "mu_", where)))
    phi = mu * _clipped(cvx[0], step, 0, 1) - rho_w * _clipped(ccv[0], step, 0, 1)  # knot values of the activation
    # the noise-dependent per-channel scaling, sigma in the authors' 0..255 units
    s255 = sigma * 255
    scaling = np.exp(_spline_values(scal, float(noise_range[0]), float(noise_range[1]), np.asarray(s255))) / (s255 + 1e-5)
    # the authors normalise W by sqrt(L), L = max |DFT|^2 on their (2P + 255)-point grid
    g = _compose_np(kernels)
    n = g.shape[-1] - 1 + 255
    spec = np.fft.fft2(g, s=(n, n))
    lip = float(np.max(np.sum(np.abs(spec) ** 2, axis=0)))
    # grad R = W^T [phi(s W x) / s] = W'^T [phi(W' x) / s^2] with W' = diag(s) W / sqrt(L)
    kernels = [w.copy() for w in kernels]
    kernels[-1] = kernels[-1] * (scaling / math.sqrt(lip))[:, None, None, None]
    slopes = np.diff(phi) / step  # (m - 1,)
    per_channel = slopes[None, :] / scaling[:, None] ** 2
    a = max(1.0, float(np.max(np.abs(per_channel))))
    raw = per_channel / a
    values = phi[None, :] / scaling[:, None] ** 2 / a
    grid = x_min + step * np.arange(m)
    bad = grid[None, :] * values < -1e-7 * np.max(np.abs(values))
    if np.any(bad):
        worst = float(np.max(-grid[None, :] * values * bad) / np.max(np.abs(grid[None, :] * values)))
        warnings.warn(
            f"{WHO}: the WCRR-NN activation of {where} changes sign (t phi(t) < 0 at {int(bad.sum())} knots of "
            f"{c} splines, relative size {worst:.2g}); invjax keeps t sigma(t) >= 0 (potentials >= 0, see "
            "invjax.learned.priors.spline) and holds those values at 0, so the imported regulariser differs there",
            stacklevel=3,
        )
    model = _ridge(kernels, raw, m, x_max, True, a / sigma**2, 1.0, dtype)
    return model


def _compose_np(kernels):
    """The composed filters ``(C, K, K)`` of the layers (full convolutions of the kernels), as
    the multi-convolution's impulse responses."""
    g = kernels[0][:, 0]
    for kern in kernels[1:]:
        k = kern.shape[-1]
        out = np.zeros((kern.shape[0], g.shape[1] + k - 1, g.shape[2] + k - 1))
        for i in range(k):
            for j in range(k):
                out[:, i : i + g.shape[1], j : j + g.shape[2]] += np.einsum("oc,cxy->oxy", kern[:, :, i, j], g)
        g = out
    return g


def _drunet_keys(nb):
    """KAIR ``UNetRes`` state-dict keys, in the order of :class:`DRUNet`'s leaves."""
    res = lambda base, i: [f"{base}.{i}.res.0.weight", f"{base}.{i}.res.2.weight"]  # noqa: E731
    keys = ["m_head.weight"]
    for lvl in (1, 2, 3):
        for i in range(nb):
            keys += res(f"m_down{lvl}", i)
        keys.append(f"m_down{lvl}.{nb}.weight")
    for i in range(nb):
        keys += res("m_body", i)
    for lvl in (3, 2, 1):
        keys.append(f"m_up{lvl}.0.weight")
        for i in range(1, nb + 1):
            keys += res(f"m_up{lvl}", i)
    return keys + ["m_tail.weight"]


def _drunet(sd, where, dtype):
    from .networks.drunet import DRUNet

    head = _get(sd, "m_head.weight", where, 4)
    nb = 0
    while f"m_body.{nb}.res.0.weight" in sd:
        nb += 1
    if nb == 0:
        raise ValueError(f"{WHO}: key 'm_body.0.res.0.weight' missing in {where} (a KAIR UNetRes / DRUNet state dict)")
    widths = [head.shape[0]]
    for lvl in (1, 2, 3):
        w = sd.get(f"m_down{lvl}.{nb}.weight")
        widths.append(int(w.shape[0]) if isinstance(w, np.ndarray) and w.ndim == 4 else 0)
    channels = head.shape[1] - 1
    if channels < 1 or min(widths) < 1:
        raise ValueError(
            f"{WHO}: {where} is not a DRUNet state dict ('m_head.weight' has shape {head.shape}, "
            f"the downsampling widths are {widths[1:]})"
        )
    keys = _drunet_keys(nb)
    extra = sorted(set(sd) - set(keys))
    if extra:
        hint = " (invjax's DRUNet has no biases, as the released models)" if extra[0].endswith(".bias") else ""
        raise ValueError(f"{WHO}: unexpected key '{extra[0]}' in {where}{hint}")
    skeleton = eqx.filter_eval_shape(lambda: DRUNet(channels, tuple(widths), nb, key=jax.random.PRNGKey(0)))
    leaves, treedef = jax.tree_util.tree_flatten(skeleton)
    arrays = []
    for key, leaf in zip(keys, leaves):
        if key not in sd:
            raise ValueError(f"{WHO}: key '{key}' missing in {where}")
        w = np.asarray(sd[key])
        if w.shape != leaf.shape:
            raise ValueError(f"{WHO}: '{key}' has shape {w.shape} where the network expects {leaf.shape}")
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{WHO}: '{key}' has non-finite values")
        arrays.append(jnp.asarray(w, dtype))
    return jax.tree_util.tree_unflatten(treedef, arrays)


def _check_level(sigma):
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise TypeError(f"{WHO}: `sigma` must be a number (a noise level on the [0, 1] scale), got {sigma!r}") from None
    if not (math.isfinite(s) and 0 < s <= 1):
        raise ValueError(
            f"{WHO}: `sigma` must be in (0, 1] (the noise standard deviation on the [0, 1] image scale: 25 / 255 for "
            f"the authors' sigma = 25), got {sigma!r}"
        )
    return s


# ------------------------------------------------------------------------------------------------
def import_weights(kind: str, path, *, sigma=None, config=None, bn_eps: float = 1e-5, dtype=jnp.float32):
    r"""An invjax module with the weights of a published model file (nothing is downloaded).

    Arguments:
        kind: ``"dncnn"`` (a PyTorch state dict: KAIR, cszn's port with batch norm, or
            DeepInverse), ``"dncnn-matconvnet"`` (the DnCNN authors' ``.mat``), ``"crr-nn"`` or
            ``"wcrr-nn"`` (the authors' checkpoints; see below), ``"drunet"`` (KAIR's
            ``UNetRes`` state dicts, e.g. ``drunet_gray.pth``, ``drunet_color.pth``: 4 scales,
            ``nb`` residual blocks per scale read from the keys, no biases).
        path: the file.
        sigma: CRR-NN: the noise level the model was trained at, on the ``[0, 1]`` scale
            (default: the checkpoint's config, ``sigma / 255``); WCRR-NN (required): the noise
            level at which its noise-dependent scaling is evaluated. Unused for DnCNN.
        config: CRR-NN/WCRR-NN: the authors' ``config.json`` (a path or a dict) when the
            checkpoint does not carry it (default: the checkpoint's ``"config"``, else the
            published models' settings: knots on ``[-0.1, 0.1]``, WCRR noise range ``[0, 30]``,
            ``rho_wcvx = 1``).
        bn_eps: the ``eps`` of batch-normalisation layers folded into convolutions (torch
            state dicts do not store it; default 1e-5, torch's; KAIR and cszn's DnCNN: 1e-4).
        dtype: parameter dtype (default float32).

    Returns:
        ``"dncnn"``/``"dncnn-matconvnet"``: a :class:`~invjax.learned.DnCNN` with
        ``D(y) = y - N(y)`` equal to the source network's output (images on ``[0, 1]``).
        ``"drunet"``: a :class:`~invjax.learned.DRUNet` (``denoise(y, sigma)``, sigma on
        ``[0, 1]``, as the network's noise-map channel).
        ``"crr-nn"``/``"wcrr-nn"``: a :class:`~invjax.learned.ConvexRidge` ``R`` such that
        ``R.denoise(y, sigma) = prox_{sigma^2 R}(y)`` minimises the authors' denoising objective
        ``||x - y||^2 / 2 + R_auth(x)`` at their noise level.

    **CRR-NN** (``lmbd``, ``mu``, ``conv_layer.conv_layers.<l>.parametrizations.weight.original``,
    ``activation.coefficients_vect``): the authors' gradient is
    ``lmbd W^T sigma_a(mu W x)`` with every layer made zero-mean and the monotone projection
    of the spline (slopes ``max(0, .)``, the two end intervals flat, constant beyond the knots).
    invjax's ``grad R = (lambda / mu) W^T sigma(mu W x)``: the kernels, knots and ``mu`` carry
    over; slopes above 1 are divided by their maximum ``a`` and ``lambda = lmbd mu a /
    sigma_train^2``. Exact except the boundary: the authors pad each layer with zeros, invjax's
    ridge is circular (FFT), so the two agree away from the border (the composed filter's
    half-width, 6 pixels for two 7x7 layers) and differ within it. ``L`` (their Lipschitz
    estimate) is not used: invjax computes its own bounds. Denoising runs invjax's converged
    prox, not the authors' ``t``-step training denoiser (see ``denoise_unrolled``).

    **WCRR-NN** (``mu_``, ``activation_cvx``/``activation_ccv.coefficients``,
    ``spline_scaling.coefficients``, convolution layers): the authors' activation of channel
    ``i`` is ``phi(s_i t) / s_i`` with ``phi = exp(mu_) sigma_cvx - rho sigma_ccv`` (both
    projected: slopes in ``[0, 1]``, flat ends, antisymmetric) and ``s_i = exp(spline_i(255
    sigma)) / (255 sigma)``, on ``W / sqrt(L)`` with ``L`` their Fourier estimate of
    ``||W||^2`` (recomputed here as they do after loading). At the given ``sigma`` this is
    ``W'^T [phi(W' x) / s^2]`` with ``W' = diag(s) W / sqrt(L)``: one spline per channel,
    ``phi / s_i^2``, on the shared knots; slopes beyond ``[-1, 1]`` are divided by their
    maximum ``a`` and ``lambda = a / sigma^2`` (``mu = 1``). Exact except (i) the boundary, as
    for CRR-NN; (ii) where ``t phi(t) < 0`` (an activation that changes sign), which invjax
    holds at 0 to keep its potentials non-negative: a warning reports it; (iii) only the one
    noise level ``sigma``: import once per level.

    Raises:
        ValueError: an unknown ``kind``; a file that is not of that kind, truncated or corrupted
            (naming the file); a key that is missing or unexpected, or a shape that does not fit
            (``'model.4.weight' has shape (64, 64, 3, 3) where the network expects (64, 32, 3, 3)``);
            a global in a pickle that a state dict does not need (naming it).
        FileNotFoundError: no such file.
        TypeError: ``sigma`` missing for ``"wcrr-nn"``.

    Example:
        >>> net = ij.learned.import_weights("dncnn", "dncnn_25.pth")    # doctest: +SKIP
        >>> x = net.denoise(y, 25 / 255)                                # doctest: +SKIP

        (KAIR's released ``dncnn_25.pth``, a file the user has; nothing is downloaded.)
    """
    if kind not in KINDS:
        raise ValueError(f"{WHO}: `kind` must be one of {list(KINDS)}, got {kind!r}")
    path = os.fspath(path)
    where = f"'{path}'"
    if kind == "dncnn-matconvnet":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{WHO}: no such file {where}")
        return _build_dncnn(_matconvnet_convs(_mat_layers(path, where), where), dtype)
    ckpt = _read_torch(path)
    sd = _state_dict(ckpt, where)
    if kind == "dncnn":
        return _build_dncnn(_dncnn_layers_torch(sd, float(bn_eps), where), dtype)
    if kind == "drunet":
        return _drunet(sd, where, dtype)
    cfg = _config(config, ckpt, where)
    if kind == "crr-nn":
        return _crr(ckpt, sd, cfg, sigma, where, dtype)
    return _wcrr(ckpt, sd, cfg, sigma, where, dtype)
