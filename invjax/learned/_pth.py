"""Reading PyTorch ``.pth`` checkpoints without torch and without unpickling arbitrary objects.

A restricted unpickler accepts only what a tensor state dict needs (``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2``, ``torch._utils._rebuild_parameter`` and the
``torch.<Type>Storage`` classes, which become inert markers) and refuses every other global by
name. Storages are read as numpy arrays from the zip archive (torch >= 1.6: ``<name>/data.pkl``
and ``<name>/data/<key>``) or from the stream that follows the pickle in the legacy format
(magic number, protocol, system info, the object, the storage keys, then each storage as an
int64 element count and its bytes). Tensor sizes, strides and offsets are checked against their
storage before a view is taken.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

WHO = "import_weights"

_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class _StorageType:
    """Marker standing for ``torch.<name>`` in a pickle (never called)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    @property
    def itemsize(self):
        return 2 if self.name == "BFloat16Storage" else np.dtype(_STORAGES[self.name]).itemsize


class _Storage:
    """A storage record (persistent id): its bytes are read when the tensors are built."""

    __slots__ = ("kind", "key", "numel", "offset")

    def __init__(self, kind, key, numel, offset=0):
        self.kind, self.key, self.numel, self.offset = kind, key, numel, offset


class _Tensor:
    """A tensor record from ``_rebuild_tensor_v2``, resolved into a numpy array after loading."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _int_tuple(v, what, where):
    if not isinstance(v, tuple) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        raise ValueError(f"{WHO}: {where}: malformed tensor record ({what} {v!r})")
    return v


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage) or not isinstance(storage_offset, int):
        raise ValueError(f"{WHO}: malformed tensor record (storage {type(storage).__name__}, offset {storage_offset!r})")
    return _Tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    if not isinstance(data, _Tensor):
        raise ValueError(f"{WHO}: malformed parameter record ({type(data).__name__})")
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    """Unpickles tensor state dicts only: every global outside :data:`_ALLOWED` and the storage
    markers is refused (nothing from the file is imported or called)."""

    def __init__(self, file, where, storage_record):
        super().__init__(file)
        self._where = where
        self._record = storage_record

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        raise ValueError(
            f"{WHO}: {self._where} refers to the global '{module}.{name}', which a tensor state dict does not "
            "need; refused (invjax reads tensors, OrderedDicts and plain Python containers only and never "
            "imports or runs code from a checkpoint). If the file holds a whole pickled model, re-save its "
            "weights with torch.save(model.state_dict(), path)."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise ValueError(f"{WHO}: {self._where}: unexpected persistent record {pid!r:.80}")
        kind, key, _location, numel = pid[1:5]
        if not isinstance(kind, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise ValueError(f"{WHO}: {self._where}: malformed storage record {pid!r:.120}")
        return self._record(kind, str(key), numel, pid[5] if len(pid) == 6 else None)


def _resolve(obj, fetch, where):
    """Replace every :class:`_Tensor` in ``obj`` (dicts, lists, tuples) by a numpy array."""
    if isinstance(obj, _Tensor):
        return _materialise(obj, fetch, where)
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _resolve(v, fetch, where)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, fetch, where) for v in obj)
    return obj


def _materialise(t: _Tensor, fetch, where):
    size = _int_tuple(t.size, "size", where)
    stride = _int_tuple(t.stride, "stride", where)
    if len(size) != len(stride) or any(n < 0 for n in size) or any(s < 0 for s in stride) or t.offset < 0:
        raise ValueError(f"{WHO}: {where}: malformed tensor (size {size}, stride {stride}, offset {t.offset})")
    flat = fetch(t.storage)
    start = t.storage.offset + t.offset
    if 0 in size:
        return np.zeros(size, flat.dtype)
    last = start + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise ValueError(
            f"{WHO}: {where} is truncated or corrupted: a tensor of shape {size} needs element {last} of storage "
            f"'{t.storage.key}', which holds {flat.size}"
        )
    view = np.lib.stride_tricks.as_strided(
        flat[start:], shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False
    )
    return np.array(view)


def _decode(raw: bytes, kind: _StorageType, numel: int, key: str, where: str, little: bool = True):
    need = numel * kind.itemsize
    if len(raw) < need:
        raise ValueError(
            f"{WHO}: {where} is truncated or corrupted: storage '{key}' holds {len(raw)} bytes, {need} expected"
        )
    order = "<" if little else ">"
    if kind.name == "BFloat16Storage":
        bits = np.frombuffer(raw[:need], order + "u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    dtype = np.dtype(_STORAGES[kind.name]).newbyteorder(order) if kind.itemsize > 1 else np.dtype(_STORAGES[kind.name])
    return np.frombuffer(raw[:need], dtype).astype(dtype.newbyteorder("="))


def _read_zip(path: str, where: str):
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
            if not pkl:
                raise ValueError(f"{WHO}: {where} is a zip file but not a torch checkpoint (no data.pkl inside)")
            prefix = pkl[0][: -len("data.pkl")]
            little = True
            if prefix + "byteorder" in names:
                little = archive.read(prefix + "byteorder").strip() != b"big"
            records = {}

            def record(kind, key, numel, view):
                records.setdefault(key, (kind, numel))
                return _Storage(kind, key, numel)

            obj = _Unpickler(io.BytesIO(archive.read(pkl[0])), where, record).load()
            cache = {}

            def fetch(storage):
                if storage.key not in cache:
                    name = f"{prefix}data/{storage.key}"
                    if name not in names:
                        raise ValueError(f"{WHO}: {where} is truncated or corrupted: storage '{name}' is missing")
                    cache[storage.key] = _decode(archive.read(name), storage.kind, storage.numel, storage.key, where, little)
                return cache[storage.key]

            return _resolve(obj, fetch, where)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{WHO}: {where} is truncated or corrupted (not a readable zip archive: {err})") from None
    except (EOFError, pickle.UnpicklingError, struct.error, TypeError, IndexError, AttributeError, KeyError) as err:
        raise ValueError(f"{WHO}: {where} is truncated or corrupted ({type(err).__name__}: {err})") from None


def _read_legacy(path: str, where: str):
    """The pre-1.6 torch format: pickles of (magic, protocol, sys_info, object, storage keys), then
    each storage as an int64 element count and its bytes."""
    with open(path, "rb") as f:
        try:
            plain = lambda: _Unpickler(f, where, _no_storage).load()  # noqa: E731
            magic, protocol, info = plain(), plain(), plain()
            if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL or not isinstance(info, dict):
                raise ValueError(f"{WHO}: {where} is not a torch checkpoint (wrong magic number)")
            little = bool(info.get("little_endian", True))
            roots = {}

            def record(kind, key, numel, view):
                roots.setdefault(key, (kind, numel))
                if view is None:
                    return _Storage(kind, key, numel)
                view_key, offset, view_size = view
                return _Storage(kind, key, int(view_size), int(offset))

            obj = _Unpickler(f, where, record).load()
            keys = _Unpickler(f, where, _no_storage).load()
            if not isinstance(keys, list):
                raise ValueError(f"{WHO}: {where} is not a torch checkpoint (no storage list)")
            flats = {}
            for key in keys:
                head = f.read(8)
                if len(head) < 8:
                    raise EOFError("storage header")
                (numel,) = struct.unpack("<q" if little else ">q", head)
                kind = roots.get(key, (None,))[0]
                if kind is None or numel < 0:
                    raise ValueError(f"{WHO}: {where} is corrupted: storage '{key}' is not declared")
                left = os.fstat(f.fileno()).st_size - f.tell()
                if numel * kind.itemsize > left:  # never allocate what the file cannot hold
                    raise ValueError(
                        f"{WHO}: {where} is truncated or corrupted: storage '{key}' needs {numel * kind.itemsize} "
                        f"bytes, {left} remain"
                    )
                flats[key] = _decode(f.read(numel * kind.itemsize), kind, numel, key, where, little)
        except (EOFError, pickle.UnpicklingError, struct.error, TypeError, IndexError, AttributeError, KeyError) as err:
            raise ValueError(f"{WHO}: {where} is truncated or corrupted ({type(err).__name__}: {err})") from None

    def fetch(storage):
        if storage.key not in flats:
            raise ValueError(f"{WHO}: {where} is truncated or corrupted: storage '{storage.key}' is missing")
        return flats[storage.key]

    return _resolve(obj, fetch, where)


def _no_storage(kind, key, numel, view):
    raise ValueError(f"{WHO}: unexpected storage record outside the state dict")


def _read_torch(path) -> object:
    """The object saved by ``torch.save`` with tensors as numpy arrays (restricted unpickling)."""
    path = os.fspath(path)
    where = f"'{path}'"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{WHO}: no such file {where}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":
        return _read_zip(path, where)
    if head[:2] == b"\x80\x02":
        return _read_legacy(path, where)
    raise ValueError(f"{WHO}: {where} is not a torch checkpoint (neither a zip archive nor a legacy torch file)")


_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "params", "params_ema")


def _state_dict(obj, where) -> dict:
    """The state dict inside a checkpoint: the object itself, or under a usual wrapper key;
    a ``module.`` prefix (DataParallel) is removed."""
    if isinstance(obj, dict) and obj and not all(isinstance(v, np.ndarray) for v in obj.values()):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict):
                return _state_dict(obj[key], where)
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, np.ndarray) for v in obj.values()):
        shown = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{WHO}: {where} holds no state dict of tensors (found {shown}); expected a state dict or a dict "
            f"wrapping one under one of {list(_WRAPPERS)}"
        )
    out = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch ``.pth``/``.pt`` checkpoint as numpy arrays, without torch.

    Accepts a plain state dict or a dict wrapping one (``{"state_dict": ...}``,
    ``{"model": ...}``, ...); a ``module.`` prefix is removed. Only tensors, ``OrderedDict``
    and plain containers are unpickled: any other global in the file (a pickled model class,
    ``os.system``, ...) raises ``ValueError`` naming it.

    Arguments:
        path: the checkpoint, a ``str`` or ``os.PathLike`` (the zip format of torch >= 1.6 or
            the legacy one).

    Returns:
        ``{name: array}``: each tensor as a numpy array of its stored shape and dtype
        (float32 for most checkpoints), in the file's order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a torch file, truncated or corrupted (naming the file), a refused global.

    Example:
        ``read_state_dict("dncnn_25.pth")`` returns e.g. ``{"model.0.weight": (64, 1, 3, 3)
        float32, ...}``. A file that would run code when unpickled is refused (here one in
        torch's legacy layout whose object is ``os.system``):

        >>> import os, pickle, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "model.pth")
        >>> with open(path, "wb") as f:
        ...     for part in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001}, os.system):
        ...         pickle.dump(part, f, protocol=2)
        >>> ij.learned.read_state_dict(path)
        Traceback (most recent call last):
        ValueError: import_weights: '...model.pth' refers to the global 'posix.system', ...refused...
    """
    path = os.fspath(path)
    return _state_dict(_read_torch(path), f"'{path}'")
