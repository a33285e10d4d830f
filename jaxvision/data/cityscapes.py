"""Cityscapes (and miniscapes) reader: semantic labels and metric depth from the official file layout.

    {root}/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png   8-bit RGB
    {root}/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png                 8-bit label ids (0..33)
    {root}/disparity/{split}/{city}/{stem}_disparity.png                    16-bit, d = (p - 1) / 256 px
    {root}/camera/{split}/{city}/{stem}_camera.json                         extrinsic.baseline (m), intrinsic.fx (px)

Label ids map to the 19 train ids of the official table (cityscapesscripts `labels.py`); every other
id is 255 (ignore). License plates (id -1) are never drawn into labelIds pngs (the car stays
underneath); a stored 255 maps to ignore. Depth along the optical axis is baseline * fx / d in
metres; p = 0 (no measurement) and p = 1 (zero disparity, infinitely far) are invalid, stored as 0.

miniscapes: the reports only give the dataset's location (`--dataset_root ${TMPDIR}/miniscapes`,
seed 003 line 82) and the 256 x 256 training crop (seed 002 line 362), not its file format, so it is
read with this same Cityscapes layout, at whatever resolution it is stored.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from jaxvision.data import files

# (folder, file suffix) of each per-image file.
IMAGE = ("leftImg8bit", "_leftImg8bit.png")
LABEL = ("gtFine", "_gtFine_labelIds.png")
DISPARITY = ("disparity", "_disparity.png")
CAMERA = ("camera", "_camera.json")

# Official label id -> train id (ids 0..33; ids not listed are ignored).
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
             26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
NUM_CLASSES = 19
_LOOKUP = np.full(256, 255, np.uint8)
_LOOKUP[list(TRAIN_IDS)] = list(TRAIN_IDS.values())


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """uint8 label ids [H, W] -> uint8 train ids (0..18, 255 = ignore)."""
    return _LOOKUP[label_ids]


def disparity_to_depth(disparity_png: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """16-bit disparity png values -> float32 depth in metres (0 where invalid: p <= 1)."""
    p = disparity_png.astype(np.float64)
    valid = p > 1
    depth = np.zeros(p.shape, np.float64)
    depth[valid] = baseline * fx / ((p[valid] - 1) / 256)
    return depth.astype(np.float32)


def read_camera(path: str) -> tuple[float, float]:
    """(baseline in metres, fx in pixels) from a Cityscapes camera json; ValueError naming the file."""
    try:
        with open(path) as f:
            camera = json.load(f)
        baseline, fx = float(camera["extrinsic"]["baseline"]), float(camera["intrinsic"]["fx"])
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read camera {path}: expected extrinsic.baseline and intrinsic.fx "
                         f"({type(e).__name__}: {e})") from e
    if not (baseline > 0 and fx > 0):
        raise ValueError(f"camera {path}: baseline ({baseline}) and fx ({fx}) must be positive")
    return baseline, fx


class Cityscapes:
    """grain RandomAccessDataSource of one split: {'image', 'semseg', 'depth'} at `height` x `width`.

    Images are paired with their annotations by the common `{city}_{seq}_{frame}` stem; a missing
    split folder raises FileNotFoundError, a missing or unpaired annotation ValueError, both naming the path.
    """

    def __init__(self, root: str, split: str, height: int, width: int):
        self.root, self.split, self.height, self.width = root, split, height, width
        files.require_dir(root, "dataset root")
        for folder, _ in (IMAGE, LABEL, DISPARITY, CAMERA):
            files.require_dir(os.path.join(root, folder, split), f"{split!r} {folder}")
        self.stems = self._stems(IMAGE)
        if not self.stems:
            raise ValueError(f"no *{IMAGE[1]} files in {os.path.join(root, IMAGE[0], split)}/<city>/")
        for stem in self.stems:
            for kind in (LABEL, DISPARITY, CAMERA):
                if not os.path.isfile(self._path(kind, stem)):
                    raise ValueError(f"missing {kind[0]} file for {self._path(IMAGE, stem)}: {self._path(kind, stem)}")
        orphans = sorted(set(self._stems(LABEL)) - set(self.stems))
        if orphans:
            stem = orphans[0]
            raise ValueError(f"label without an image: {self._path(LABEL, stem)} (expected {self._path(IMAGE, stem)})")

    def _stems(self, kind: tuple[str, str]) -> list[str]:
        """Sorted '{city}/{city}_{seq}_{frame}' of the files of `kind` in this split."""
        folder = os.path.join(self.root, kind[0], self.split)
        paths = sorted(glob.glob(os.path.join(folder, "*", "*" + kind[1])))
        return [os.path.relpath(p, folder)[:-len(kind[1])] for p in paths]

    def _path(self, kind: tuple[str, str], stem: str) -> str:
        return os.path.join(self.root, kind[0], self.split, stem + kind[1])

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> dict:
        stem = self.stems[files.check_index(repr(self), index, len(self))]
        paths = [self._path(kind, stem) for kind in (IMAGE, LABEL, DISPARITY)]
        image = files.read_png(paths[0], rgb=True)
        label_ids, disparity = files.read_png(paths[1]), files.read_png(paths[2])
        files.check_same_size(dict(zip(paths, (image, label_ids, disparity))))
        if label_ids.dtype != np.uint8:
            raise ValueError(f"{paths[1]}: expected 8-bit label ids, got {label_ids.dtype}")
        depth = disparity_to_depth(disparity, *read_camera(self._path(CAMERA, stem)))
        return files.make_example(image, label_ids_to_train_ids(label_ids), depth, self.height, self.width)

    def __repr__(self) -> str:
        return f"Cityscapes(root={self.root!r}, split={self.split!r}, {len(self)} images, {self.height}x{self.width})"
