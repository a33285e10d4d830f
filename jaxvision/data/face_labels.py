"""Auxiliary DMS labels derived from a face crop's landmarks and LaPa label map (thesis Sec. 2.3.2).

Eyes (Eq. 2.2-2.3): EAR from `face_landmarks.eye_aspect_ratios`; P = pixel count of the eye's class in the
crop's label map. viz = P > 10 and EAR > 0.1; open = viz and P * EAR > 13.5. The thresholds on P assume the
thesis' 160 x 160 crops, so counts are rescaled by 160^2 / (H * W) and other crop sizes behave the same.
The WFLW-left eye (landmarks 60-67, image-left) is LaPa class 4 ("left eye"); `face_roi` swaps classes
4 <-> 5 (and brows 2 <-> 3) whenever it mirrors a crop, so this stays true after flips.

Mouth: the thesis derives 3 levels (closed / semi-open / open) from the inner-mouth pixel count and a
landmark aspect ratio without giving thresholds; ours are the named constants below.

Head pose: Perspective-n-Point of 10 landmarks against a 3D reference face (cv2.solvePnP, EPnP then
iterative refinement), pinhole camera with focal length = crop width and principal point at the crop
centre, Euler angles as in `face_landmarks` (R = Rz(roll) Ry(yaw) Rx(pitch), OpenCV axes).
"""

from __future__ import annotations

import cv2
import numpy as np

from jaxvision.data import face_landmarks

REFERENCE_SIZE = 160                      # crop side the pixel-count thresholds were defined for
LEFT_EYE_CLASS, RIGHT_EYE_CLASS, INNER_MOUTH_CLASS = 4, 5, 8   # LaPa label-map classes

EYE_MIN_PIXELS = 10.0       # Eq. 2.3: viz needs P > 10 ...
EYE_MIN_EAR = 0.1           # ... and EAR > 0.1
EYE_OPEN_SCORE = 13.5       # open needs viz and P * EAR > 13.5

# Mouth levels (our choice; inner-lip MAR = inner-lip opening / inner-lip width). Not closed needs both a
# visible inner mouth (> 20 px at 160 x 160, about a 2 px slit across a 40 px mouth; guards against
# landmark noise on closed lips) and MAR > 0.1; open (wide, yawning or shouting) needs MAR > 0.35,
# roughly a jaw drop of a third of the mouth width. Between them: semi-open (talking, teeth visible).
MOUTH_MIN_PIXELS = 20.0
MOUTH_SEMI_MAR = 0.1
MOUTH_OPEN_MAR = 0.35

# 3D reference face, mm, in the OpenCV head frame of `face_landmarks` (x right in the image, y down, z away
# from the camera: the face's front has negative z), keyed by WFLW index. These are 10 of the 14 points of
# the anthropometric model used for PnP head pose by lincolnhard/head-pose-estimation (and by PFLD on
# WFLW, same landmark choice): eye corners, nostril corners, mouth corners, lower-lip centre, chin. The
# original is in cm with x = subject's left, y up, z out of the face; here x, y, z are negated, so the
# image-left eye (60, 64) has negative x.
REFERENCE_FACE = {
    60: (-53.11432, -54.85328, -39.87654),   # left eye, outer corner
    64: (-17.89930, -53.93625, -44.13414),   # left eye, inner corner
    68: (17.89930, -53.93625, -44.13414),    # right eye, inner corner
    72: (53.11432, -54.85328, -39.87654),    # right eye, outer corner
    55: (-20.05628, -14.09845, -61.65652),   # nostril line, left end
    59: (20.05628, -14.09845, -61.65652),    # nostril line, right end
    76: (-27.74015, 20.80775, -50.48531),    # mouth, left corner
    82: (27.74015, 20.80775, -50.48531),     # mouth, right corner
    85: (0.0, 31.16408, -60.97667),          # lower lip, centre
    16: (0.0, 74.15691, -40.70434),          # chin
}
PNP_INDICES = np.array(list(REFERENCE_FACE))
PNP_POINTS = np.array(list(REFERENCE_FACE.values()), np.float64)


def class_pixels(label_map: np.ndarray, classes) -> np.ndarray:
    """Pixel counts of `classes` in `label_map` [H, W], rescaled to a 160 x 160 crop: float [len(classes)]."""
    counts = np.bincount(np.asarray(label_map).ravel(), minlength=256)[list(classes)]
    return counts * (REFERENCE_SIZE ** 2 / np.asarray(label_map).size)


def eye_labels(ear: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Eq. 2.3 for (left, right): EAR [2], pixel counts at 160 x 160 [2] -> float32 [4] (viz, open per eye)."""
    ear, pixels = np.asarray(ear, np.float64), np.asarray(pixels, np.float64)
    visible = (pixels > EYE_MIN_PIXELS) & (ear > EYE_MIN_EAR)
    open_ = visible & (pixels * ear > EYE_OPEN_SCORE)
    return np.stack([visible, open_], -1).reshape(4).astype(np.float32)


def mouth_level(mar: float, inner_pixels: float) -> int:
    """0 closed, 1 semi-open, 2 open from the inner-lip aspect ratio and inner-mouth pixels at 160 x 160."""
    if inner_pixels <= MOUTH_MIN_PIXELS or mar <= MOUTH_SEMI_MAR:
        return 0
    return 2 if mar > MOUTH_OPEN_MAR else 1


def camera_matrix(image_size) -> np.ndarray:
    """Pinhole intrinsics for an image of `image_size` (side, or (width, height)): f = width, centre."""
    width, height = np.broadcast_to(np.asarray(image_size, np.float64), (2,))
    return np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], np.float64)


def head_pose(landmarks_px: np.ndarray, image_size) -> np.ndarray:
    """(yaw, pitch, roll) float32 radians of 98 WFLW landmarks [98, 2] in pixels (+0.5-centred) of an
    image of `image_size` (side, or (width, height)), by PnP against `REFERENCE_FACE`."""
    image_points = np.asarray(landmarks_px, np.float64)[PNP_INDICES]
    k = camera_matrix(image_size)
    ok, rvec, tvec = cv2.solvePnP(PNP_POINTS, image_points, k, None, flags=cv2.SOLVEPNP_EPNP)
    if ok and tvec[2, 0] > 0:
        ok, rvec, tvec = cv2.solvePnP(PNP_POINTS, image_points, k, None, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
    else:
        ok, rvec, tvec = cv2.solvePnP(PNP_POINTS, image_points, k, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("solvePnP found no head pose for these landmarks")
    return face_landmarks.matrix_to_euler(cv2.Rodrigues(rvec)[0])


def derive_labels(landmarks_px: np.ndarray, label_map: np.ndarray, size: int) -> dict:
    """{'eyes': float32 [4], 'mouth': int32, 'head_pose': float32 [3]} of a `size` x `size` crop from its
    98 landmarks [98, 2] in crop pixels and its LaPa label map [size, size]."""
    left_eye, right_eye, inner_mouth = class_pixels(label_map, (LEFT_EYE_CLASS, RIGHT_EYE_CLASS, INNER_MOUTH_CLASS))
    eyes = eye_labels(face_landmarks.eye_aspect_ratios(landmarks_px), np.array([left_eye, right_eye]))
    mouth = mouth_level(float(face_landmarks.mouth_aspect_ratio(landmarks_px)), inner_mouth)
    return {"eyes": eyes, "mouth": np.int32(mouth), "head_pose": head_pose(landmarks_px, size)}
