"""Reading npz members without ever running a pickle's code.

The interactive challenge's files hold pickled object arrays (lists of dicts of numpy integers).
``np.load(allow_pickle=True)`` would run whatever a pickle names; here plain arrays are read with
pickles refused, and object arrays through an unpickler that resolves only the few numpy names
those files need (Python's documented "restricting globals" pattern), so a pickle that names
anything else stops with :class:`UnsafePickle` before it is called.
"""
from __future__ import annotations

import pickle
import zipfile

import numpy as np

# The globals an object array of containers and numbers needs, in numpy 1 and 2 spellings;
# none of them runs code chosen by the file.
ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),          # protocol-2 pickles spell bytes this way
}
PLAIN = (type(None), bool, int, float, str, np.integer, np.floating, np.bool_)


class UnsafePickle(ValueError):
    """A pickled member names something outside :data:`ALLOWED` or holds an unexpected type."""


class _Restricted(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in ALLOWED or module == "numpy.dtypes" and name.endswith("DType"):
            return super().find_class(module, name)
        raise UnsafePickle(f"pickle refers to {module}.{name}, which a case file never needs")


def _check_plain(value, where: str, depth: int = 0):
    """Refuse anything but containers of numbers, strings and None (a crafted ``__setstate__`` target
    cannot get past :data:`ALLOWED`, but an odd structure should still be named)."""
    if depth > 8:
        raise UnsafePickle(f"{where} is nested too deeply")
    if isinstance(value, PLAIN):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, where, depth + 1)
            _check_plain(v, where, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_plain(v, where, depth + 1)
    elif isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            for v in value.ravel():
                _check_plain(v, where, depth + 1)
        elif value.dtype.kind not in "biuf":
            raise UnsafePickle(f"{where} holds an array of dtype {value.dtype}")
    else:
        raise UnsafePickle(f"{where} holds a {type(value).__name__}")


def _read_object_member(archive: zipfile.ZipFile, key: str):
    with archive.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        header(f)
        value = _Restricted(f).load()
    if not isinstance(value, np.ndarray):
        raise UnsafePickle(f"{key} is a pickled {type(value).__name__}, not an array")
    _check_plain(value, key)
    return value


def read_members(path, keys) -> dict:
    """The members ``keys`` of the npz at ``path`` that it has (missing ones are left out); object
    arrays through the restricted unpickler.  Raises OSError/ValueError/zipfile errors for broken
    files and :class:`UnsafePickle` for pickles that would need more than plain data."""
    out = {}
    with np.load(path, allow_pickle=False) as data:
        files = set(data.files)
        for key in keys:
            if key not in files:
                continue
            try:
                out[key] = data[key]
            except ValueError as e:
                if "allow_pickle" not in str(e):
                    raise
                out[key] = _read_object_member(data.zip, key)
    return out


def member_names(path) -> set[str]:
    with np.load(path, allow_pickle=False) as data:
        return set(data.files)
