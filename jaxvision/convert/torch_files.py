"""PyTorch weight files read and written with numpy alone: `.pth`/`.pt` (torch.save's zip format) and
`.safetensors`.

A `.pth` file is a zip archive holding `data.pkl` (a pickle whose tensors point at raw storages by key
through pickle's persistent ids) and one little-endian `data/<key>` record per storage. The pickle is
read with a restricted unpickler that only rebuilds tensors, parameters and (ordered) dicts, so a
file cannot run code on load. Checkpoints that wrap the weights (`{'state_dict': ...}`,
`{'model': ...}`, `{'state_dict_ema': ...}`) are unwrapped and a DataParallel `module.` prefix
is stripped.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

from jaxvision.fileio import atomic_path

# torch's legacy storage class names (what torch.save still writes) -> numpy dtype.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


class WeightFileError(ValueError):
    """A weight file that cannot be read, with the file and the reason."""


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused):
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.array(view)


def _rebuild_parameter(data, *_unused):
    return data


def _rebuild_from_type(func, _new_type, args, _state):
    return func(*args)


class _TensorType:
    """Stand-in for torch.Tensor / nn.Parameter classes referenced by a pickle (never instantiated)."""


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch", "Tensor"): _TensorType,
    ("torch.nn.parameter", "Parameter"): _TensorType,
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickler of torch.save's data.pkl that maps storages to numpy arrays and refuses other classes."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str):
        super().__init__(file)
        self.archive, self.prefix, self.path = archive, prefix, path
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return np.dtype(_STORAGE_DTYPES[name])
        raise WeightFileError(f"{self.path}: holds a pickled {module}.{name}, which a weight file should not; "
                              "save the model's state_dict() instead")

    def persistent_load(self, pid):
        _, dtype, key, _location, numel = pid
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}data/{key}")
            self.storages[key] = np.frombuffer(raw, dtype=dtype.newbyteorder("<"), count=numel)
        return self.storages[key]


def _read_pth(path: str):
    if not zipfile.is_zipfile(path):
        raise WeightFileError(f"{path}: not a torch.save zip archive (files from torch < 1.6 are not supported; "
                              "re-save them with a current PyTorch)")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise WeightFileError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise WeightFileError(f"{path}: big-endian tensors are not supported")
        with archive.open(pickles[0]) as file:
            return _StateDictUnpickler(file, archive, prefix, path).load()


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as file:
        blob = file.read()
    try:
        (header_len,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + header_len])
    except (struct.error, ValueError) as e:
        raise WeightFileError(f"{path}: not a safetensors file ({e})") from None
    data = memoryview(blob)[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise WeightFileError(f"{path}: tensor '{name}' has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        if end > len(data):
            raise WeightFileError(f"{path}: tensor '{name}' runs past the end of the file (truncated?)")
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
        tensors[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(info["shape"]).copy()
    return tensors


def _unwrap(obj, path: str) -> dict[str, np.ndarray]:
    """The flat name -> array dict inside a checkpoint object, without a DataParallel 'module.' prefix."""
    while isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise WeightFileError(f"{path}: found no tensors; top-level keys: {sorted(map(str, obj))[:10]}")
        obj = inner
    if not isinstance(obj, dict):
        raise WeightFileError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Name -> numpy array of a PyTorch weight file (.pth / .pt / .bin zip archives, or .safetensors).

    Raises FileNotFoundError for a missing file and WeightFileError naming the file for anything else.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file {path} does not exist")
    try:
        if path.endswith(".safetensors"):
            return _read_safetensors(path)
        return _unwrap(_read_pth(path), path)
    except WeightFileError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
        raise WeightFileError(f"{path}: cannot be read as a PyTorch weight file ({type(e).__name__}: {e})") from None


def write_safetensors(tensors: dict[str, np.ndarray], path: str) -> None:
    """Writes name -> array as a .safetensors file (atomically: a temporary file then a rename)."""
    names = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items()}
    header, offset, chunks = {}, 0, []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded)
        for raw in chunks:
            file.write(raw)
