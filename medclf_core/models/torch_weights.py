"""Read a PyTorch state dict saved in the legacy (pre-1.6, not zip) format, without PyTorch.

The legacy format is five pickles in a row followed by raw tensor storages:

1. a magic number, 2. the protocol version, 3. system info (byte order, type sizes),
4. the state dict itself, whose tensors refer to storages through pickle's
   *persistent id* mechanism, 5. the list of storage keys, in the order their raw
   bytes follow: for each, an int64 element count and then the elements.

A pickle can name any importable callable and call it, so ``pickle.load`` on a
downloaded weights file can run arbitrary code. :class:`_StateDictUnpickler`
resolves only the few globals a state dict needs (``OrderedDict``, the tensor
rebuild function, storage type names) to harmless stand-ins and refuses every
other global with :class:`UnsafeWeightsError`, so reading a file never executes
anything from it.

Example::

    >>> import io, pickle
    >>> evil = pickle.dumps(print)               # a pickle that names a callable
    >>> try:
    ...     _StateDictUnpickler(io.BytesIO(evil), {}).load()
    ... except UnsafeWeightsError as exc:
    ...     print("refused:", "print" in str(exc))
    refused: True
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from medclf_core.errors import ModelError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
MAX_FILE_BYTES = 2 * 2**30

# storage type name -> numpy dtype (little-endian on every platform torch wrote these files on)
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": "<u2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


class UnsafeWeightsError(ModelError):
    """The weights file asks to run code (names a global a state dict never needs)."""


@dataclass
class _StorageRef:
    key: str
    dtype: str
    numel: int


@dataclass
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple
    stride: tuple


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _StorageRef):
        raise UnsafeWeightsError("The weights file builds a tensor from something that is not a storage.")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _StorageType:
    def __init__(self, name: str):
        self.name = name


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _StateDictUnpickler(pickle.Unpickler):
    """An unpickler that knows a state dict's handful of globals and nothing else."""

    def __init__(self, file, storages: dict[str, _StorageRef]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeWeightsError(
                f"The weights file refers to '{module}.{name}', which a plain state dict never needs; it was "
                "refused because loading it could run code.") from None

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafeWeightsError("The weights file holds a reference that is not a tensor storage.")
        if len(pid) > 5 and pid[5] is not None:
            raise ModelError("The weights file uses storage views, which this reader does not support.")
        key, numel = str(pid[2]), int(pid[4])
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = _StorageRef(key, _STORAGE_DTYPES[pid[1].name], numel)
        return ref


def _safe_load(f, storages):
    try:
        return _StateDictUnpickler(f, storages).load()
    except (UnsafeWeightsError, ModelError):
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or garbled pickles raise many types
        raise ModelError(f"The weights file is damaged or not a PyTorch legacy state dict ({type(exc).__name__}).") \
            from None


def read_legacy_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name: float32/int64 array}`` from a legacy ``torch.save`` file, without PyTorch or code execution."""
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise ModelError(f"The weights file is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB.")
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:2] == b"PK":
        raise ModelError("This is a PyTorch zip-format checkpoint (torch >= 1.6); only the legacy format is read.")
    f = io.BytesIO(data)
    storages: dict[str, _StorageRef] = {}
    if _safe_load(f, storages) != LEGACY_MAGIC:
        raise ModelError("Not a PyTorch legacy weights file (wrong magic number).")
    if _safe_load(f, storages) != PROTOCOL_VERSION:
        raise ModelError("Unsupported PyTorch weights protocol version.")
    sys_info = _safe_load(f, storages)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise ModelError("The weights file was written on a big-endian machine; not supported.")
    state = _safe_load(f, storages)
    keys = _safe_load(f, storages)
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise ModelError("The weights file does not hold a state dict.")

    buffers: dict[str, np.ndarray] = {}
    for key in keys:
        ref = storages.get(str(key))
        if ref is None:
            raise ModelError("The weights file lists a storage that no tensor uses.")
        header = f.read(8)
        if len(header) != 8:
            raise ModelError("The weights file is truncated.")
        (numel,) = struct.unpack("<q", header)
        itemsize = np.dtype(ref.dtype).itemsize
        raw = f.read(numel * itemsize)
        if numel < 0 or len(raw) != numel * itemsize:
            raise ModelError("The weights file is truncated.")
        buffers[ref.key] = np.frombuffer(raw, dtype=ref.dtype)

    out: dict[str, np.ndarray] = {}
    for name, t in state.items():
        if not isinstance(t, _TensorRef):
            continue  # e.g. num_batches_tracked stored as a plain int
        buf = buffers.get(t.storage.key)
        if buf is None:
            raise ModelError(f"Tensor '{name}' has no storage in the file.")
        needed = t.offset + sum((s - 1) * st for s, st in zip(t.shape, t.stride, strict=True)) + 1 if t.shape else \
            t.offset + 1
        if needed > buf.size:
            raise ModelError(f"Tensor '{name}' reaches past its storage; the file is damaged.")
        itemsize = buf.dtype.itemsize
        arr = np.lib.stride_tricks.as_strided(buf[t.offset:], shape=t.shape,
                                              strides=tuple(s * itemsize for s in t.stride))
        out[str(name)] = np.array(arr)  # own, writable, contiguous copy
    return out
