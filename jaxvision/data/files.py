"""File checks shared by the dataset readers: every error names the file or folder at fault."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from jaxvision.data import transforms


def require_dir(path: str, what: str) -> str:
    """`path` if it is a folder, else FileNotFoundError naming it and what it should hold."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def require_file(path: str, what: str) -> str:
    """`path` if it is a file, else FileNotFoundError naming it and what it should hold."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_png(path: str, rgb: bool = False) -> np.ndarray:
    """Decodes an image file: uint8 [H, W, 3] when `rgb`, else its single channel [H, W] as stored
    (uint8, or uint16 for 16-bit pngs). Unreadable, truncated or multi-channel label files raise a
    ValueError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            if rgb:
                return np.asarray(image.convert("RGB"))
            array = np.asarray(image)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel image, got shape {array.shape} (mode {image.mode})")
    return array.astype(np.uint16) if array.dtype.kind in "iu" and array.dtype.itemsize > 1 else array


def check_same_size(arrays: dict[str, np.ndarray]) -> None:
    """ValueError naming the files when the {path: array} of one example differ in height x width."""
    sizes = {path: a.shape[:2] for path, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{path} {h}x{w}" for path, (h, w) in sizes.items())
        raise ValueError(f"image/label size mismatch: {listing}")


def make_example(image: np.ndarray, semseg: np.ndarray, depth: np.ndarray, height: int, width: int) -> dict:
    """The example dict of the synthetic source, resized to `height` x `width` (see `transforms.resize`):
    image uint8 [H, W, 3], semseg uint8 [H, W] (255 = ignore), depth float32 [H, W] metres (0 = invalid)."""
    return transforms.resize({"image": np.ascontiguousarray(image, np.uint8),
                              "semseg": np.ascontiguousarray(semseg, np.uint8),
                              "depth": np.ascontiguousarray(depth, np.float32)}, height, width)


def check_index(name: str, index: int, size: int) -> int:
    """`index` as an int, or IndexError when outside [0, size)."""
    if not 0 <= index < size:
        raise IndexError(f"{name} index {index} out of range [0, {size})")
    return int(index)
