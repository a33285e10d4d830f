"""LaPa (Landmark guided face Parsing, Liu et al. AAAI 2020) reader: model-ready DMS examples (thesis Sec. 2.3.2).

On-disk layout of the official release (github.com/JDAI-CV/lapa-dataset), as read by Microsoft's FaRL
(`farl/datasets/lapa.py`) and other public loaders:

    {root}/{train,val,test}/images/{name}.jpg      RGB image
    {root}/{split}/landmarks/{name}.txt            first line 106, then 106 lines "x y" (pixels)
    {root}/{split}/labels/{name}.png               uint8 label map, 11 classes (CLASSES below)

Class ids follow the dataset README's table (0 background, 1 skin, 2 left eyebrow, 3 right eyebrow, 4 left
eye, 5 right eye, 6 nose, 7 upper lip, 8 inner mouth, 9 lower lip, 10 hair). "Left" is taken to be the
image left, the side of the first landmarks of each pair (the labels were drawn guided by the landmarks,
whose left block 66-73 is the image-left eye); no public source states the side explicitly, so a check on
the real data is cheap: class 4's centroid should be near landmarks 66-73.

106 -> 98: the points are JD's 106-point set, but the files are ordered like WFLW with extra points. MMPose's
`configs/_base_/datasets/lapa.py` mirror table (0<->32, 33<->46, 38<->50, 55<->65, 66<->79, 71<->82,
74<->83, 84<->90, 96<->100, 104<->105), FaRL's drawing code (33-41 / 42-50 closed brows, 51-54 bridge,
55-65 one nose polyline, 66-73 / 75-82 closed eyes with 74 / 83 drawn as eye circles, 84-95 outer lip,
96-103 inner lip) and JDAI's FaceX-Zoo (`face_sdk/utils/lms_trans.py`, 0-based: 104 / 105 eye centres,
54 nose tip, 84 / 90 mouth corners; 58, 60, 62 the only lower-nose points of its 25) all show:
    0-32 jaw, 33-50 brows, 51-54 nose bridge, 55-65 lower nose (11 points from the left side of the nose
    down round the nostrils to the right side, 60 the centre), 66-73 left eye, 74 left eye centre,
    75-82 right eye, 83 right eye centre, 84-95 outer lip, 96-103 inner lip, 104-105 eye centres.
No published 106 -> 98 table was found, so `LAPA_TO_WFLW` is derived from this: every block WFLW has is
kept in the same order; WFLW's 5-point nostril line 55-59 is taken as the middle five 58-62 of the nose
polyline (centre 60, ends 58 / 62 as FaceX-Zoo picks them); the pupils 96-97 are 104-105 (FaceX-Zoo's eye
centres). Dropped: the nose sides 55-57 / 63-65 and the second eye centres 74 / 83. The mapping carries
the LaPa mirror table exactly onto WFLW's `FLIP_PERMUTATION` (tested).

Examples: for the train split each image gives `copies` examples, example i being copy i % copies of image
i // copies, augmented by `face_roi.TRAIN` (Table 2.2) with an rng that is a pure function of (seed, image,
copy): the thesis precomputes 10 copies per image, here they are computed on the fly, identically every
time. val / test give one un-augmented crop per image. Labels are derived from the final crop (its
landmarks and label map). Online appearance augmentation (`face_roi.photometric_augment`) is left to the
training pipeline, so that the reader stays deterministic.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from jaxvision.data import face_labels, face_roi, files

SPLITS = ("train", "val", "test")
NUM_LAPA_LANDMARKS = 106
CLASSES = ("background", "skin", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "nose",
           "upper_lip", "inner_mouth", "lower_lip", "hair")
LAPA_TO_WFLW = np.array([*range(0, 55), *range(58, 63), *range(66, 74), *range(75, 83), *range(84, 104),
                         104, 105])


def read_landmarks(path: str) -> np.ndarray:
    """float32 [106, 2] pixel (x, y) of a LaPa landmark file; ValueError naming the file and the line at fault."""
    with open(files.require_file(path, "landmark file")) as f:
        lines = [line.strip() for line in f if line.strip()]
    if not lines or lines[0] != str(NUM_LAPA_LANDMARKS) or len(lines) != NUM_LAPA_LANDMARKS + 1:
        header = lines[0] if lines else "nothing"
        raise ValueError(f"{path}: expected a first line {NUM_LAPA_LANDMARKS} then {NUM_LAPA_LANDMARKS} lines "
                         f"'x y', got first line {header!r} and {max(len(lines) - 1, 0)} more lines")
    points = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError(f"{len(fields)} fields")
            points.append([float(v) for v in fields])
        except ValueError as e:
            raise ValueError(f"{path} line {number}: expected 'x y', got {line!r} ({e})") from e
    points = np.asarray(points, np.float32)
    if not np.isfinite(points).all():
        raise ValueError(f"{path}: landmarks must be finite numbers")
    return points


class LaPa:
    """grain RandomAccessDataSource of one LaPa split: model-ready DMS examples at `size` x `size`.

    Example: {'image': float32 [size, size, 3] in [0, 1], 'landmarks': float32 [98, 2] (x, y) / size,
    'eyes': float32 [4] (left visible, left open, right visible, right open; left = WFLW 60-67, image left),
    'mouth': int32 (0 closed, 1 semi-open, 2 open), 'head_pose': float32 [3] (yaw, pitch, roll) rad,
    'distraction': int32 0 (normal), 'confidence': float32 1}. Rotated crops may put a few landmarks
    slightly outside [0, 1]; they are kept where they are.

    `copies` and the default `augment` (face_roi.TRAIN) apply to the train split; val and test give one
    `face_roi.EVAL` crop per image unless `augment` is given. Missing folders raise FileNotFoundError and
    unpaired files ValueError at construction; unreadable files raise ValueError when read, naming the file.
    """

    def __init__(self, root: str, split: str, size: int = 160, copies: int = 10, seed: int = 0,
                 augment: face_roi.RoIAugment | None = None):
        if split not in SPLITS:
            raise ValueError(f"unknown LaPa split {split!r}: expected one of {SPLITS}")
        train = split == "train"
        self.root, self.split, self.size, self.seed = root, split, size, seed
        self.copies = copies if train else 1
        self.augment = augment or (face_roi.TRAIN if train else face_roi.EVAL)
        files.require_dir(root, "LaPa root")
        for folder in ("images", "landmarks", "labels"):
            files.require_dir(os.path.join(root, split, folder), f"LaPa {split!r} {folder}")
        images = sorted(glob.glob(os.path.join(root, split, "images", "*.jpg")))
        if not images:
            raise ValueError(f"no *.jpg images in {os.path.join(root, split, 'images')}")
        self.names = [os.path.basename(p)[:-len(".jpg")] for p in images]
        for name in self.names:
            for kind in ("landmarks", "labels"):
                if not os.path.isfile(self._path(kind, name)):
                    raise ValueError(f"missing {kind} file for {self._path('images', name)}: "
                                     f"expected {self._path(kind, name)}")

    def _path(self, kind: str, name: str) -> str:
        extension = {"images": ".jpg", "landmarks": ".txt", "labels": ".png"}[kind]
        return os.path.join(self.root, self.split, kind, name + extension)

    def load(self, image_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image uint8 [H, W, 3], 98 WFLW landmarks float32 [98, 2] in pixels, label map uint8 [H, W])."""
        name = self.names[image_index]
        image_path, label_path = self._path("images", name), self._path("labels", name)
        image, label_map = files.read_png(image_path, rgb=True), files.read_png(label_path)
        if label_map.dtype != np.uint8:
            raise ValueError(f"{label_path}: expected an 8-bit label map, got {label_map.dtype}")
        files.check_same_size({image_path: image, label_path: label_map})
        return image, read_landmarks(self._path("landmarks", name))[LAPA_TO_WFLW], label_map

    def __len__(self) -> int:
        return len(self.names) * self.copies

    def __getitem__(self, index: int) -> dict:
        image_index, copy = divmod(files.check_index(repr(self), index, len(self)), self.copies)
        image, landmarks, label_map = self.load(image_index)
        rng = np.random.default_rng([self.seed, image_index, copy])
        crop, points, labels, _ = face_roi.crop_face(image, landmarks, label_map, self.size, rng, self.augment)
        derived = face_labels.derive_labels(points, labels, self.size)
        return {"image": crop.astype(np.float32) / 255.0, "landmarks": points / np.float32(self.size),
                "eyes": derived["eyes"], "mouth": derived["mouth"], "head_pose": derived["head_pose"],
                "distraction": np.int32(0), "confidence": np.float32(1.0)}

    def __repr__(self) -> str:
        return (f"LaPa(root={self.root!r}, split={self.split!r}, {len(self.names)} images x {self.copies}, "
                f"{self.size}x{self.size})")
