"""Distracting-actions images (thesis Sec. 2.3.2): 5 hand-labelled keypoints, teacher pseudo labels, and
a source of model-ready examples from them (confidence = gamma_j of Eq. 2.13).

On-disk layout of the images:

    {root}/phone/{name}.{jpg,jpeg,png}       distraction class 1 (face_landmarks.DISTRACTION_CLASSES)
    {root}/smoking/{name}.{jpg,jpeg,png}     class 2
    {root}/normal/{name}.{jpg,jpeg,png}      class 0, optional
    {root}/{class}/keypoints.json            {name: [[x, y] x 5]} for every image of the folder

Keypoints are in pixels of the image as stored (no EXIF rotation), continuous coordinates as in `face_roi`
(pixel (col, row) covers [col, col + 1) x [row, row + 1)), in the order of Fig. 2.8: left eye centre, right
eye centre, nose tip, left mouth corner, right mouth corner, "left" meaning the image left. They are the WFLW
points `KEYPOINT_INDICES` (pupils, nose tip, outer-lip corners).

Pseudo labels (`pseudo_label`). Each image goes through the teacher (a DMS run, thesis: the Large model
trained on LaPa) twice: first on the square box of side BOX_FACTOR x the keypoints' extent (the longer side
of their bounding box) centred on that box, wide enough to hold the whole face (the 98 WFLW landmarks span
about 2.1 x the keypoints' extent on the built-in synthetic faces, 1.6-2.9 over poses); then on the
LaPa evaluation RoI (`face_roi.EVAL`: the square box of the 98 landmarks of the first pass), the crop the
teacher was trained and evaluated on. The second pass gives every label. Both crops are axis-aligned and
unmirrored, so the predicted head pose is the image's pose.

Confidence (Eq. 2.4): c = clip(alpha (1 - ln d), 0, 1), where d is the mean over the 5 keypoints of the
distance between predicted and labelled keypoint, divided by S = BOX_FACTOR x the keypoints' extent (the
side of the first-pass crop: a face size from the labels alone, standing for the thesis' "image size"
since the images are framed differently). DEFAULT_ALPHA = 0.175: d = 0.02 (a good fit) gives c = 0.86,
d = 0.05 gives 0.70, d = 0.2 (a bad fit) gives 0.46; c = 1 for d < exp(1 - 1 / alpha) = 0.009.

Labels file: JSON Lines, one record per image: {"path": "phone/a.jpg" (relative to root), "distraction":
class id from the folder, "landmarks": 98 x [x, y] image pixels, "eyes": 4 x 0/1 (teacher probabilities
> 0.5; left visible, left open, right visible, right open), "mouth": level 0-2 (argmax), "head_pose":
[yaw, pitch, roll] radians, "confidence": c, "d": d}.
"""

from __future__ import annotations

import bisect
import json
import os
from typing import Callable, NamedTuple

import numpy as np
import tqdm

from jaxvision import fileio
from jaxvision.data import face_landmarks, face_roi, files

KEYPOINT_INDICES = (96, 97, 54, 76, 82)
KEYPOINT_NAMES = ("left eye centre", "right eye centre", "nose tip", "left mouth corner", "right mouth corner")
CLASS_FOLDERS = face_landmarks.DISTRACTION_CLASSES          # folder name = class name, id = its index
REQUIRED_FOLDERS = ("phone", "smoking")
KEYPOINTS_FILE = "keypoints.json"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
BOX_FACTOR = 2.5
DEFAULT_ALPHA = 0.175
BATCH_SIZE = 32
TEACHER_OUTPUTS = ("landmarks", "eyes", "mouth", "head_pose", "distraction")   # exporter's DMS order
RECORD_FIELDS = ("path", "distraction", "landmarks", "eyes", "mouth", "head_pose", "confidence", "d")
SPLITS = ("train", "val", "test")


class Annotation(NamedTuple):
    """One labelled image."""

    path: str                 # relative to the root, e.g. "phone/a.jpg"
    distraction: int          # class id
    keypoints: np.ndarray     # float64 [5, 2] pixels


def _read_keypoints(path: str) -> dict:
    """{name: float64 [5, 2]} of a keypoints.json; ValueError naming the file (and the image) at fault."""
    try:
        with open(files.require_file(path, "keypoints file")) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object {{name: [[x, y] x 5]}}, got {type(data).__name__}")
    keypoints = {}
    for name, value in data.items():
        try:
            points = np.asarray(value, np.float64)
        except (TypeError, ValueError):
            points = np.zeros(0)
        if points.shape != (5, 2):
            raise ValueError(f"{path}: {name!r}: expected 5 [x, y] keypoints ({', '.join(KEYPOINT_NAMES)}), "
                             f"got {json.dumps(value)[:80]}")
        if not np.isfinite(points).all() or np.ptp(points, 0).max() <= 0:
            raise ValueError(f"{path}: {name!r}: keypoints must be finite and not all at one point")
        keypoints[name] = points
    return keypoints


def read_annotations(root: str) -> list[Annotation]:
    """Every image of `root` with its class and keypoints, in class then name order. FileNotFoundError for a
    missing root, phone/ or smoking/ folder or keypoints.json; ValueError naming the file for an image without
    keypoints, keypoints without an image, or malformed keypoints."""
    files.require_dir(root, "distraction images root")
    annotations = []
    for class_id, folder in enumerate(CLASS_FOLDERS):
        directory = os.path.join(root, folder)
        if folder not in REQUIRED_FOLDERS and not os.path.isdir(directory):
            continue
        files.require_dir(directory, f"distraction class {folder!r}")
        images = sorted(f for f in os.listdir(directory) if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
        if not images:
            raise ValueError(f"no {'/'.join(IMAGE_EXTENSIONS)} images in {directory}")
        keypoints_path = os.path.join(directory, KEYPOINTS_FILE)
        keypoints = _read_keypoints(keypoints_path)
        names = [os.path.splitext(f)[0] for f in images]
        for name, image in zip(names, images):
            if name not in keypoints:
                raise ValueError(f"{os.path.join(directory, image)} has no keypoints in {keypoints_path}")
        if len(set(names)) != len(names) or set(keypoints) - set(names):
            extra = sorted(set(keypoints) - set(names)) or sorted(n for n in names if names.count(n) > 1)
            raise ValueError(f"{keypoints_path}: names without exactly one image in {directory}: {extra[:5]}")
        annotations += [Annotation(f"{folder}/{image}", class_id, keypoints[name])
                        for name, image in zip(names, images)]
    return annotations


def read_image(root: str, annotation: Annotation) -> np.ndarray:
    """uint8 [H, W, 3] RGB of an annotated image; ValueError naming it when unreadable or when its keypoints
    fall outside it."""
    path = os.path.join(root, annotation.path)
    image = files.read_png(path, rgb=True)
    height, width = image.shape[:2]
    if (annotation.keypoints < 0).any() or (annotation.keypoints > [width, height]).any():
        raise ValueError(f"{path}: keypoints {annotation.keypoints.tolist()} fall outside the {width}x{height} "
                         f"image (expected [x, y] pixels)")
    return image


def keypoint_box_side(keypoints: np.ndarray) -> np.ndarray:
    """S = BOX_FACTOR x the longer side of the keypoints' bounding box, for keypoints [..., 5, 2] -> [...]."""
    return BOX_FACTOR * np.ptp(keypoints, axis=-2).max(-1)


def keypoint_crop(image: np.ndarray, keypoints: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """First-pass crop (uint8 [size, size, 3], 3x3 image -> crop map): the square of side `keypoint_box_side`
    centred on the keypoints' bounding box."""
    centre = (keypoints.min(0) + keypoints.max(0)) / 2
    crop, _, _, applied = face_roi.crop_face(image, centre + BOX_FACTOR * (keypoints - centre), None, size, None)
    return crop, applied["matrix"]


def landmark_crop(image: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Second-pass crop (uint8 [size, size, 3], 3x3 image -> crop map): the LaPa evaluation RoI of `landmarks`."""
    crop, _, _, applied = face_roi.crop_face(image, landmarks, None, size, None, face_roi.EVAL)
    return crop, applied["matrix"]


def to_image(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Crop pixels [B, N, 2] -> image pixels through the inverses of the image -> crop maps [B, 3, 3]."""
    inverse = np.linalg.inv(matrices)
    return np.einsum("bij,bnj->bni", inverse[:, :2, :2], points) + inverse[:, None, :2, 2]


def confidence(d, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Eq. 2.4: clip(alpha (1 - ln d), 0, 1); d = 0 gives 1."""
    with np.errstate(divide="ignore"):
        return np.clip(alpha * (1 - np.log(np.asarray(d, np.float64))), 0.0, 1.0)


def _teacher_fn(teacher, size: int) -> tuple[Callable, tuple[str, ...], int]:
    """(pixels -> outputs, output names, input side) of an Exportable-like teacher or a plain callable."""
    if not hasattr(teacher, "fn"):
        return teacher, TEACHER_OUTPUTS, size
    if teacher.height != teacher.width:
        raise ValueError(f"the teacher takes {teacher.height}x{teacher.width} inputs; face crops are square")
    missing = set(TEACHER_OUTPUTS[:4]) - set(teacher.output_names)
    if missing:
        raise ValueError(f"the teacher's outputs {tuple(teacher.output_names)} lack {sorted(missing)}: "
                         f"a DMS run (task 'dms') is needed")
    return teacher.fn, tuple(teacher.output_names), teacher.height


def _predict(fn: Callable, names: tuple[str, ...], crops: list[np.ndarray], batch_size: int) -> dict:
    """Teacher outputs {name: np.ndarray [len(crops), ...]}; the batch is zero-padded to `batch_size` so a
    jitted teacher compiles once."""
    pixels = np.zeros((batch_size, *crops[0].shape), np.float32)
    pixels[:len(crops)] = crops
    out = fn(pixels)
    out = out if isinstance(out, dict) else dict(zip(names, out))
    return {name: np.asarray(out[name])[:len(crops)] for name in TEACHER_OUTPUTS[:4]}


def _label_batch(fn, names, root: str, batch: list[Annotation], size: int, batch_size: int,
                 alpha: float) -> list[dict]:
    """Pseudo-label records of a batch of annotations (two teacher passes)."""
    images = [read_image(root, a) for a in batch]
    keypoints = np.stack([a.keypoints for a in batch])
    crops, matrices = zip(*(keypoint_crop(im, kp, size) for im, kp in zip(images, keypoints)))
    first = to_image(_predict(fn, names, crops, batch_size)["landmarks"] * size, np.stack(matrices))
    crops, matrices = zip(*(landmark_crop(im, lm, size) for im, lm in zip(images, first)))
    out = _predict(fn, names, crops, batch_size)
    landmarks = to_image(out["landmarks"] * size, np.stack(matrices))
    d = np.linalg.norm(landmarks[:, KEYPOINT_INDICES] - keypoints, axis=-1).mean(-1) / keypoint_box_side(keypoints)
    c = confidence(d, alpha)
    return [{"path": a.path, "distraction": a.distraction, "landmarks": np.round(landmarks[i], 3).tolist(),
             "eyes": (out["eyes"][i] > 0.5).astype(int).tolist(), "mouth": int(np.argmax(out["mouth"][i])),
             "head_pose": out["head_pose"][i].astype(float).tolist(), "confidence": float(c[i]), "d": float(d[i])}
            for i, a in enumerate(batch)]


def pseudo_label(root: str, teacher, out_path: str, alpha: float = DEFAULT_ALPHA, batch_size: int = BATCH_SIZE,
                 size: int = 160) -> list[dict]:
    """Pseudo labels (see the module docstring) of every image under `root`, written to `out_path` (JSON
    Lines, atomically: a failure leaves no file) and returned.

    `teacher`: an `exporter.Exportable`-like object (`.fn`, `.height`, `.width`, `.output_names`) or a
    callable; either maps float32 pixels [B, H, W, 3] in 0..255 to a dict or to a tuple in exporter order
    (landmarks [B, 98, 2] in [0, 1] of the crop, eye probabilities [B, 4], mouth probabilities [B, 3],
    head pose [B, 3] rad, ...). A plain callable gets `size` x `size` crops. It is called as is: jit it.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha of Eq. 2.4 must be in (0, 1), got {alpha}")
    annotations = read_annotations(root)
    fn, names, size = _teacher_fn(teacher, size)
    records = []
    with fileio.atomic_path(out_path) as tmp:
        with tqdm.tqdm(total=len(annotations), unit="img", desc="pseudo-label", dynamic_ncols=True) as bar:
            for start in range(0, len(annotations), batch_size):
                batch = annotations[start:start + batch_size]
                records += _label_batch(fn, names, root, batch, size, batch_size, alpha)
                bar.update(len(batch))
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    return records


def read_labels(path: str) -> list[dict]:
    """The records of a pseudo-label JSON Lines file; ValueError naming the file and line at fault."""
    records = []
    with open(files.require_file(path, "pseudo-label file")) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                missing = [k for k in RECORD_FIELDS if k not in record]
                if missing:
                    raise ValueError(f"missing fields {missing}")
                if np.shape(record["landmarks"]) != (face_landmarks.NUM_LANDMARKS, 2):
                    raise ValueError(f"landmarks of shape {np.shape(record['landmarks'])}, expected (98, 2)")
            except (json.JSONDecodeError, TypeError, ValueError) as e:
                raise ValueError(f"{path} line {number}: not a pseudo-label record ({e})") from e
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no pseudo-label records")
    return records


class PseudoLabelled:
    """grain RandomAccessDataSource of the pseudo-labelled images: the example dict of `lapa.LaPa`.

    Example: 'image' float32 [size, size, 3] in [0, 1], 'landmarks' float32 [98, 2] / size (rotated crops
    may put a few slightly outside [0, 1]), 'eyes' float32 [4], 'mouth' int32, 'head_pose' float32 [3],
    'distraction' int32 (the folder's class), 'confidence' float32 (c of Eq. 2.4). The crop is `face_roi`'s
    RoI of the pseudo landmarks; for the train split each image gives `copies` crops augmented by
    `face_roi.TRAIN` with an rng that is a pure function of (seed, image, copy), val / test one EVAL crop.
    Rotating the crop by a adds a to roll; a mirror swaps the eye labels and negates yaw and roll.
    """

    def __init__(self, labels_path: str, root: str, size: int = 160, copies: int = 10, seed: int = 0,
                 split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
        train = split == "train"
        self.labels_path, self.root, self.size, self.seed, self.split = labels_path, root, size, seed, split
        self.copies = copies if train else 1
        self.augment = face_roi.TRAIN if train else face_roi.EVAL
        self.records = read_labels(labels_path)
        for record in self.records:
            files.require_file(os.path.join(root, record["path"]), f"image of {labels_path}")

    def __len__(self) -> int:
        return len(self.records) * self.copies

    def __getitem__(self, index: int) -> dict:
        image_index, copy = divmod(files.check_index(repr(self), index, len(self)), self.copies)
        record = self.records[image_index]
        image = files.read_png(os.path.join(self.root, record["path"]), rgb=True)
        rng = np.random.default_rng([self.seed, image_index, copy])
        landmarks = np.asarray(record["landmarks"], np.float32)
        crop, points, _, applied = face_roi.crop_face(image, landmarks, None, self.size, rng, self.augment)
        eyes = np.asarray(record["eyes"], np.float32)
        pose = np.asarray(record["head_pose"], np.float32) + np.float32([0, 0, applied["angle"]])
        if applied["flipped"]:
            eyes, pose = eyes[face_landmarks.EYE_FLIP_PERMUTATION], face_landmarks.flip_pose(pose)
        return {"image": crop.astype(np.float32) / 255.0, "landmarks": points / np.float32(self.size),
                "eyes": eyes, "mouth": np.int32(record["mouth"]), "head_pose": pose.astype(np.float32),
                "distraction": np.int32(record["distraction"]), "confidence": np.float32(record["confidence"])}

    def __repr__(self) -> str:
        return (f"PseudoLabelled({self.labels_path!r}, {len(self.records)} images x {self.copies}, "
                f"{self.size}x{self.size}, split={self.split!r})")


class Concatenated:
    """Random-access source of `sources` one after another (e.g. LaPa then the pseudo-labelled images)."""

    def __init__(self, sources):
        self.sources = list(sources)
        self.ends = np.cumsum([len(s) for s in self.sources]).tolist()

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, index: int) -> dict:
        index = files.check_index(repr(self), index, len(self))
        k = bisect.bisect_right(self.ends, index)
        return self.sources[k][index - (self.ends[k - 1] if k else 0)]

    def __repr__(self) -> str:
        return f"Concatenated({', '.join(map(repr, self.sources))})"
