"""PyTorch (torchvision / timm) state dicts <-> jaxvision variables, and converted weights on disk.

Layouts: a conv weight is OIHW in PyTorch and HWIO here; a Linear weight [out, in] is the transposed
Dense kernel [in, out]; a 1x1 conv used as a dense layer (squeeze-and-excitation) is [out, in, 1, 1].
BatchNorm's weight / bias / running_mean / running_var are scale / bias (params) and mean / var
(batch_stats). `num_batches_tracked` is ignored on import and written as 0 on export.

Converted weights are a directory holding an Orbax checkpoint of {'params', 'batch_stats'} in
`variables/` and `weights.json` (model name, options, source, input file and its sha256). It is
written under a temporary name and renamed when complete, so an interrupted or failed conversion
leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from jaxvision.convert.naming import Context, naming_for, torch_key
from jaxvision.convert.torch_files import read_state_dict
from jaxvision.models import registry

METADATA_FILE = "weights.json"
VARIABLES_DIR = "variables"
_LISTED = 8  # names listed per kind of problem in an error message


class ConversionError(ValueError):
    """State dict and model disagree: missing / unexpected keys or shape mismatches, each named."""


def abstract_variables(model) -> dict:
    """Flat {(collection, *module_path, leaf): ShapeDtypeStruct} of `model`'s variables, without computing."""
    size = getattr(model, "image_size", 224)
    height, width = (size, size) if isinstance(size, int) else size
    x = jnp.zeros((1, height, width, 3), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    shapes = jax.eval_shape(lambda: model.init(rngs, x, train=False))
    return traverse_util.flatten_dict(dict(shapes))


def _context(model, flat: dict) -> Context:
    modules = {path[1:i] for path in flat for i in range(2, len(path))}
    return Context(model, frozenset(modules))


def _is_conv_1x1(path: tuple) -> bool:
    """Dense layers that PyTorch stores as 1x1 convs: the squeeze-and-excitation fc1 / fc2."""
    return "se" in path[1:-1]


def _torch_shape(path: tuple, shape: tuple) -> tuple:
    """The PyTorch shape of a jaxvision variable of `shape`."""
    if path[-1] == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if path[-1] == "kernel" and len(shape) == 2:
        return (shape[1], shape[0], 1, 1) if _is_conv_1x1(path) else (shape[1], shape[0])
    return tuple(shape)


def _from_torch(path: tuple, array: np.ndarray) -> np.ndarray:
    if path[-1] == "kernel" and array.ndim == 4 and _is_conv_1x1(path):
        return array[:, :, 0, 0].T
    if path[-1] == "kernel" and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if path[-1] == "kernel" and array.ndim == 2:
        return array.T
    return array


def _invert(path: tuple, array: np.ndarray) -> np.ndarray:
    if path[-1] == "kernel" and array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    if path[-1] == "kernel" and array.ndim == 2:
        return array.T[:, :, None, None] if _is_conv_1x1(path) else array.T
    return array


def _listing(kind: str, names: list[str]) -> str:
    shown = "; ".join(names[:_LISTED])
    more = f" (and {len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return f"{len(names)} {kind}: {shown}{more}"


def convert_state_dict(state_dict: dict[str, np.ndarray], model, source: str) -> dict:
    """jaxvision variables {'params', 'batch_stats'?} (float32 numpy) of `model` from a PyTorch state dict.

    Raises ConversionError listing by name every missing key, unexpected key and shape mismatch.
    """
    flat = abstract_variables(model)
    naming = naming_for(model, source)
    ctx = _context(model, flat)
    keys = {path: torch_key(naming, ctx, path[1:-1], path[-1]) for path in flat}
    converted, missing, mismatched = {}, [], []
    for path, key in keys.items():
        if key not in state_dict:
            missing.append(key)
            continue
        array = np.asarray(state_dict[key])
        expected = _torch_shape(path, flat[path].shape)
        if array.shape != expected:
            mismatched.append(f"{key} is {list(array.shape)} in the file, the model needs {list(expected)}")
            continue
        converted[path] = _from_torch(path, array).astype(np.float32)
    used = set(keys.values())
    unexpected = sorted(k for k in state_dict if k not in used and not k.endswith("num_batches_tracked"))
    problems = [_listing(kind, names) for kind, names in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
                if names]
    if problems:
        raise ConversionError(f"{source} state dict does not fit {type(model).__name__}: " + " | ".join(problems))
    return traverse_util.unflatten_dict(converted)


def export_state_dict(variables: dict, model, source: str) -> dict[str, np.ndarray]:
    """The PyTorch state dict (numpy arrays) of jaxvision `variables`, in `source`'s names; the inverse of
    `convert_state_dict`, BatchNorm's num_batches_tracked included (as 0)."""
    flat = traverse_util.flatten_dict(dict(variables))
    naming = naming_for(model, source)
    ctx = _context(model, flat)
    state_dict = {}
    for path, array in flat.items():
        key = torch_key(naming, ctx, path[1:-1], path[-1])
        state_dict[key] = np.ascontiguousarray(_invert(path, np.asarray(array, np.float32)))
        if path[0] == "batch_stats" and path[-1] == "mean":
            state_dict[key.replace("running_mean", "num_batches_tracked")] = np.zeros((), np.int64)
    return state_dict


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_pretrained(out_dir: str, variables: dict, metadata: dict) -> None:
    """Writes `variables` and `metadata` to the new directory `out_dir`, atomically (temp dir + rename).

    Raises FileExistsError when `out_dir` exists, so earlier weights are never overwritten.
    """
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir):
        raise FileExistsError(f"output directory {out_dir} already exists; choose a new --out")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(staging, VARIABLES_DIR), variables)
        checkpointer.wait_until_finished()
        with open(os.path.join(staging, METADATA_FILE), "w") as file:
            json.dump(metadata, file, indent=2, sort_keys=True)
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def convert_weights(in_path: str, model_name: str, source: str, out_dir: str, **model_options) -> dict:
    """Converts the torchvision / timm weight file `in_path` for jaxvision model `model_name` into `out_dir`.

    `model_options` are the model's constructor options (e.g. num_classes=0, norm_eps=1e-5); they are
    recorded so `load_pretrained` rebuilds the same model. Returns the metadata written.
    """
    model = registry.create(model_name, **model_options)
    variables = convert_state_dict(read_state_dict(in_path), model, source)
    metadata = {"model": model_name, "model_options": model_options, "source": source,
                "input_file": os.path.abspath(in_path), "input_sha256": _sha256(in_path),
                "num_params": int(sum(np.size(a) for a in jax.tree.leaves(variables["params"])))}
    save_pretrained(out_dir, variables, metadata)
    return metadata


def load_pretrained(weights_dir: str, model=None) -> tuple[dict, dict]:
    """(variables, metadata) of converted weights; with `model`, checks every variable's name and shape fit it.

    Raises FileNotFoundError for a directory that is not converted weights and ConversionError for a misfit.
    """
    meta_path = os.path.join(weights_dir, METADATA_FILE)
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{weights_dir} holds no converted weights ({METADATA_FILE} is missing)")
    with open(meta_path) as file:
        metadata = json.load(file)
    variables = ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(weights_dir, VARIABLES_DIR)))
    if model is not None:
        want = {k: v.shape for k, v in abstract_variables(model).items()}
        have = {k: np.shape(v) for k, v in traverse_util.flatten_dict(dict(variables)).items()}
        problems = sorted({"/".join(k) for k in want.keys() ^ have.keys()}
                          | {f"{'/'.join(k)} {list(have[k])} vs {list(want[k])}" for k in want.keys() & have.keys()
                             if tuple(have[k]) != tuple(want[k])})
        if problems:
            raise ConversionError(f"weights in {weights_dir} ({metadata.get('model')}) do not fit "
                                  f"{type(model).__name__}: {_listing('differences', problems)}")
    return variables, metadata
