"""NYU-Depth-v2 reader: the labeled set (`nyu_depth_v2_labeled.mat`) with the official 795/654 split.

    {root}/nyu_depth_v2_labeled.mat   MATLAB v7.3 (HDF5): images uint8 [N, 3, W, H], depths float [N, W, H]
                                      (metres), labels uint16 [N, W, H] (894 classes, 0 = unlabeled)
    {root}/splits.mat                 MATLAB v5: trainNdxs (795) and testNdxs (654), 1-based image indices

HDF5 stores MATLAB's column-major H x W x C x N arrays with the axes reversed, so every array is
transposed back to [H, W(, 3)]. Split 'train' is trainNdxs, 'val' is testNdxs (the usual evaluation set).
Semantic labels: the raw 894 classes are mapped through `label_map`, a .npy of integers in [0, 255]
indexed by raw label (e.g. the common 40-class mapping, 895 entries, 255 = ignore); without one every
pixel is 255 and only depth is supervised. Depth is in metres; non-positive or non-finite depth is 0 (invalid).
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import scipy.io

from jaxvision.data import files

MAT_FILE = "nyu_depth_v2_labeled.mat"
SPLITS_FILE = "splits.mat"
SPLIT_KEYS = {"train": "trainNdxs", "val": "testNdxs"}


def read_splits(path: str, num_images: int) -> dict[str, np.ndarray]:
    """{'train', 'val'} -> 0-based image indices from a splits.mat; ValueError naming the file."""
    try:
        mat = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, NotImplementedError, TypeError, scipy.io.matlab.MatReadError) as e:
        raise ValueError(f"cannot read NYU splits {path} (MATLAB v5 .mat): {type(e).__name__}: {e}") from e
    splits = {}
    for split, key in SPLIT_KEYS.items():
        if key not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise ValueError(f"NYU splits {path} has no {key!r}; found {found}")
        values = np.asarray(mat[key]).ravel()
        if not (values.size and values.dtype.kind in "iuf" and (values == np.round(values)).all()
                and 1 <= values.min() <= values.max() <= num_images):
            raise ValueError(f"NYU splits {path}: {key} must hold 1-based image indices in [1, {num_images}]")
        splits[split] = values.astype(np.int64) - 1
    return splits


def read_label_map(path: str) -> np.ndarray:
    """uint8 lookup raw NYU label -> class id (255 = ignore) from a .npy; ValueError naming the file."""
    try:
        table = np.load(files.require_file(path, "NYU label map"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read NYU label map {path}: {type(e).__name__}: {e}") from e
    if table.ndim != 1 or table.dtype.kind not in "iu" or table.size == 0 or table.min() < 0 or table.max() > 255:
        raise ValueError(f"NYU label map {path}: expected a 1-D integer array with values in [0, 255], "
                         f"got {table.dtype} {table.shape}")
    return table.astype(np.uint8)


class NYUDepthV2:
    """grain RandomAccessDataSource of one split: {'image', 'semseg', 'depth'} at `height` x `width`."""

    def __init__(self, root: str, split: str, height: int, width: int, label_map: str | None = None):
        if split not in SPLIT_KEYS:
            raise ValueError(f"NYUDepthV2: unknown split {split!r}; expected one of {sorted(SPLIT_KEYS)}")
        files.require_dir(root, "dataset root")
        self.path = files.require_file(os.path.join(root, MAT_FILE), "NYU-Depth-v2 labeled .mat")
        self.split, self.height, self.width = split, height, width
        with self._open() as mat:
            images = self._array(mat, "images")
            if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
                raise ValueError(f"{self.path}: 'images' must be uint8 [N, 3, W, H], got {images.dtype} {images.shape}")
            for name in ("depths", "labels"):
                if self._array(mat, name).shape != (images.shape[0],) + images.shape[2:]:
                    raise ValueError(f"{self.path}: {name!r} {self._array(mat, name).shape} does not match 'images' "
                                     f"{images.shape} (expected [N, W, H])")
            size = images.shape[0]
        splits_path = files.require_file(os.path.join(root, SPLITS_FILE), "NYU-Depth-v2 splits file")
        self.indices = read_splits(splits_path, size)[split]
        self.label_map_path = label_map
        self.label_map = read_label_map(label_map) if label_map else None

    def _open(self) -> h5py.File:
        """The .mat opened read-only (per read: nothing to close or pickle between reads)."""
        try:
            return h5py.File(self.path, "r")
        except OSError as e:
            raise ValueError(f"cannot read {self.path} as a MATLAB v7.3 (HDF5) file: {e}") from e

    def _array(self, mat: h5py.File, name: str) -> h5py.Dataset:
        if name not in mat:
            raise ValueError(f"{self.path} has no {name!r} array; found {sorted(mat)}")
        return mat[name]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        n = self.indices[files.check_index(repr(self), index, len(self))]
        with self._open() as mat:
            image = self._array(mat, "images")[n].transpose(2, 1, 0)       # [3, W, H] -> [H, W, 3]
            depth = np.asarray(self._array(mat, "depths")[n], np.float32).T
            labels = None if self.label_map is None else self._array(mat, "labels")[n].T
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0))
        if labels is None:
            semseg = np.full(depth.shape, 255, np.uint8)
        elif labels.max() >= self.label_map.size:
            raise ValueError(f"{self.path} image {n + 1}: raw label {labels.max()} has no entry in the "
                             f"{self.label_map.size}-entry label map {self.label_map_path}")
        else:
            semseg = self.label_map[labels]
        return files.make_example(image, semseg, depth, self.height, self.width)

    def __repr__(self) -> str:
        return f"NYUDepthV2({self.path!r}, split={self.split!r}, {len(self)} images, {self.height}x{self.width})"
