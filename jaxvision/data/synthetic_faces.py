"""Procedural driver faces for the DMS model (thesis ch. 2): a parametric 3D head drawn into a LaPa-style crop.

Head model. Millimetres in the head frame of `face_landmarks` (x right, y down, z forward; a frontal face looks
at the camera along -z), origin at the centre of the head at eye level. A face is a set of 3D curves; the 98
WFLW landmarks are points of these curves and the drawing uses the same curves densely sampled, so every
landmark lies on the feature drawn for it:
  * jaw contour (0-32): the silhouette of the lower face. The frontal contour is a superellipse (half width,
    chin height, squareness); each contour point lies on a horizontal section of the face (a superellipse of
    half width |x| and depth JAW_DEPTH_RATIO |x| whose front is at FACE_FRONT_Z), at the point where the
    viewing ray grazes it ("landmark marching", as in 300W-LP), so the contour stays on the visible cheek
    edge as the head turns; on the near side it stops NEAR_SIDE_LIMIT past the widest point (at the ear, not
    the back of the head). Eyes, brows and lip corners sit on the same sections (`_surface_z`), so they stay
    inside the outline from every view; the nose and the lip centres protrude;
  * the cranium: an ellipsoid whose exact perspective outline is drawn behind the face (hair or skin), with
    a hairline arc on its surface closing the face polygon above the jaw;
  * brows, eyes (lids from corner to corner with a sine profile: their separation at mid-eye is the eyelid
    opening in mm, 0 = closed; iris and pupil on an eyeball turned by the gaze), nose bridge and nostrils
    protruding toward the camera (negative z), outer and inner lips (the inner-lip separation is the mouth
    opening in mm; the mouth corners pull in and the chin drops as it opens), ears, neck and shoulders.
Per face the shape varies (face width and height, jaw squareness, eye spacing, size and tilt, brows, nose
length, depth and width, mouth height and width, lip thickness), see `sample_face`.

Camera and crop. R = euler_to_matrix(yaw, pitch, roll) maps head to camera coordinates; the head centre is at
`translation` (DISTANCE_MM away) and points project to u = (X / Z, Y / Z). Yaw, pitch and roll are uniform in
+-YAW_DEG, +-PITCH_DEG, +-ROLL_DEG. The crop is the LaPa RoI procedure of the thesis (Sec. 2.3.2, Table 2.2,
the ranges of `face_roi.TRAIN` / `face_roi.EVAL`): the minimal box of the 98 landmarks made square about its
centre, then for training scaled by U[1.0, 1.1] and shifted by up to all of the slack on each axis (every
landmark stays inside); validation crops are the centred square itself (scale 1, no shift). The head's roll
plays the part of Table 2.2's rotation, in both splits. Landmark labels are (u - crop corner) / crop side:
pixel (c, r) of an N x N image covers [c, c + 1) x [r, r + 1) / N in label units.

Labels are read off what is drawn. Eyes: visible = no sunglasses and no occluder over that eye (an eye turned
away still counts as visible: within +-50 deg of yaw the far eye stays inside the face outline); open =
visible and EAR (face_landmarks.eye_aspect_ratios of the labelled landmarks) > EYE_OPEN_EAR. Mouth: level 0 /
1 / 2 from the labelled inner-lip MAR with `face_labels`' thresholds MOUTH_SEMI_MAR and MOUTH_OPEN_MAR. The
sampler draws a target EAR per eye (CLOSED_EAR or OPEN_EAR) and a target MAR per mouth level (MOUTH_TARGET_MAR,
levels equally likely), then solves the eyelid and inner-lip openings in mm that render those ratios under the
sampled pose, so the labels are balanced and never borderline. Distraction: 'phone' draws a phone held to one
ear with the hand, 'smoking' a cigarette from a mouth corner with a glowing tip, 'normal' sometimes a hand at
the ear or cheek without a phone (a hard negative). Phones and hands stay beside the face (on the side turned
toward the camera once |yaw| > 5 deg) and never cover an eye or the inner lips; the eye occluder (a hand or an
object) covers exactly one eye; sunglasses cover both.

Rendering: PIL at twice the size, box-downsampled (anti-aliasing), then lighting, sensor noise and sometimes
a near-infrared-like grey conversion. A face is a pure function of (seed, split, index): it is sampled from
`numpy.random.default_rng([seed, split, index])` before the resolution is known, so the same face at two
sizes has the same normalised landmarks; only the sensor noise depends on the size.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import numpy as np
from PIL import Image, ImageDraw

from jaxvision.data import face_labels, face_roi
from jaxvision.data import face_landmarks as fl

# Pose and camera (uniform ranges).
YAW_DEG, PITCH_DEG, ROLL_DEG = 50.0, 35.0, 35.0
DISTANCE_MM = (450.0, 900.0)          # head centre to camera
OFF_AXIS = 0.12                       # lateral head offset, fraction of the distance
MIN_SIZE = 48

# Labels.
EYE_OPEN_EAR = 0.12
CLOSED_EAR, OPEN_EAR = (0.0, 0.05), (0.2, 0.38)            # target EAR ranges of closed / open eyes
MOUTH_TARGET_MAR = ((0.0, 0.04), (0.16, 0.27), (0.45, 0.8))  # per level: closed, semi-open, open
DEFAULT_CLASS_PROBS = (0.6, 0.2, 0.2)                      # normal, phone, smoking

# Appearance probabilities.
P_BLINK, P_WINK = 0.25, 0.06           # both eyes closed / one eye closed
P_SUNGLASSES, P_GLASSES = 0.12, 0.15
P_EYE_OCCLUDER = 0.06                  # a hand or an object over one eye
P_HAND_NEGATIVE = 0.3                  # 'normal' faces with a hand at the ear or cheek
P_GRAYSCALE = 0.2
HAIR_STYLE_PROBS = (0.15, 0.55, 0.3)   # bald, short, long

# Head geometry (mm).
FACE_FRONT_Z = -88.0                   # depth of the front of the lower face
JAW_DEPTH_RATIO = 1.3                  # depth / half width of the horizontal sections of the lower face
SECTION_EXPONENT = 3.0                 # the sections are superellipses (flat front, rounded sides)
NEAR_SIDE_LIMIT = 0.15                 # near-side contour at most this share of the depth behind the widest point
JAW_DROP = 0.7                         # chin drop per mm of mouth opening
EYE_RECESS, EYE_CORNER_RECESS = 3.0, 3.0   # lids behind the face surface at mid-eye, corners this much more
LID_SAG = 1.5                          # closed lids meet this far below the corner line
UPPER_LID_SHARE = 0.62                 # share of the opening taken by the upper lid
EYEBALL_RADIUS, IRIS_RATIO, PUPIL_RATIO = 12.0, 0.19, 0.42   # iris radius / eye width; pupil / iris radius
MOUTH_NARROWING = 0.2                  # relative pull-in of the mouth corners when wide open
LIP_CORNER_INSET = 2.0                 # inner-lip corners inside the outer ones
LIP_PROTRUSION = 7.0                   # lips in front of the face surface at the centre (0 at the corners)
EAR_IN_FRONT_MM = 10.0                 # an ear this much nearer than the head centre is drawn over the face
LENS_MARGIN = 1.25                     # sunglasses cover their eye enlarged by this factor
HAND_MM = 85.0                         # hand length (palm and fingers)
PHONE_TURN = 0.7                       # phone face turned this far (rad) from the side plane toward the camera
MOUTH_MAX_OPENING = 60.0               # mm, the largest inner-lip opening tried
_SOLVER_GRID = np.linspace(0.0, 1.0, 16)   # openings tried (x eye width, x MOUTH_MAX_OPENING) for a target ratio
OPEN_LIPS_MM = 0.4                     # inner opening below which the lips are drawn as a closed seam

_SPLITS = {"train": 0, "val": 1}
_SPLIT_ROI = {"train": face_roi.TRAIN, "val": face_roi.EVAL}
_TWO_PI = 2 * np.pi


# ----------------------------------------------------------------------------------------------
# Parameters


@dataclasses.dataclass(frozen=True, eq=False)
class FaceShape:
    """Identity: the face's proportions (mm, head frame)."""
    half_width: float          # half width of the jaw contour at its top
    jaw_top: float             # y of jaw points 0 and 32
    chin: float                # y of the chin (mouth closed)
    squareness: float          # superellipse exponent of the jaw contour (2 = ellipse)
    eye_spacing: float         # half distance between the eye centres
    eye_width: float
    eye_crease: float          # height of the lid crease above the corner line
    canthal_tilt: float        # outer eye corners this much above the inner ones
    brow_height: float         # brow centre line above the eye line
    brow_arch: float
    brow_thickness: float
    nose_length: float         # nose tip below the eye line
    nose_depth: float          # protrusion of the tip in front of the nasion
    nose_width: float          # half width of the nostril wings
    mouth_y: float             # mouth line below the eye line
    mouth_width: float         # half width of the mouth
    upper_lip: float
    lower_lip: float


@dataclasses.dataclass(frozen=True, eq=False)
class Look:
    """Colours (RGB in [0, 1]), hair, lighting and background: everything that is not geometry of the face."""
    skin: np.ndarray
    lips: np.ndarray
    hair: np.ndarray
    brows: np.ndarray
    iris: np.ndarray
    sclera: float
    clothes: np.ndarray
    hair_style: int            # 0 bald, 1 short, 2 long (HAIR_STYLE_PROBS)
    hairline: np.ndarray       # (y at the forehead centre, y at the temples)
    light_x: np.ndarray        # [3] light gradient across the crop (per channel, per crop width)
    light_y: float             # brightness gradient down the crop
    gain: float
    background: np.ndarray     # [3] background colour (the light gradient makes it a colour gradient)
    shapes: tuple              # background shapes: (colour [3], polygon [k, 2] in crop units)
    grayscale: bool
    noise: float               # sensor noise std


@dataclasses.dataclass(frozen=True, eq=False)
class Props:
    """Glasses, eye occluder and the distraction scene."""
    glasses: int               # 0 none, 1 clear glasses, 2 sunglasses
    glasses_color: np.ndarray
    occluded_eye: int          # -1 none, 0 left (landmarks 60-67), 1 right
    occluder_is_hand: bool
    occluder_color: np.ndarray
    occluder_size: float       # object occluder: side scale (>= 1 covers the eye)
    hand_color: np.ndarray     # every hand drawn (occluder, phone holder, hard negative)
    distraction: int           # index into face_landmarks.DISTRACTION_CLASSES
    side: int                  # -1 / +1: head side (sign of x) of the phone, cigarette or hand
    hand_at_ear: bool          # the 'normal' hand: at the ear (else at the cheek)
    hand: bool                 # 'normal': a hand near the face (a hard negative for 'phone')
    object_color: np.ndarray   # phone colour
    tilt: float                # phone: long axis from vertical toward the mouth (rad); cigarette: droop
    length: float              # cigarette length (mm)


@dataclasses.dataclass(frozen=True, eq=False)
class FaceParams:
    """A sampled face: identity, expression, pose, camera, RoI, look and props (resolution free)."""
    shape: FaceShape
    yaw: float
    pitch: float
    roll: float
    translation: np.ndarray    # [3] head centre in camera coordinates (mm)
    eye_opening: np.ndarray    # [2] lid separation (left, right) in mm
    gaze: np.ndarray           # [2] eyeball yaw, pitch (rad)
    mouth_opening: float       # inner-lip separation in mm
    roi_scale: float
    roi_shift: np.ndarray      # [2] fraction of the slack in x, y
    look: Look
    props: Props


# ----------------------------------------------------------------------------------------------
# Geometry (head frame, mm)


_T9 = np.linspace(0.0, 1.0, 9)                                   # lids, outer to inner corner
_T13 = np.linspace(-1.0, 1.0, 13)                                # outer lips, left to right
_JAW_ANGLES = np.linspace(0.0, np.pi, 33)


def _ring(n: int) -> np.ndarray:
    """n angles around a circle, [n, 1]."""
    return np.linspace(0, _TWO_PI, n, endpoint=False)[:, None]


_RING8, _RING12, _RING16, _RING24, _RING40 = (_ring(n) for n in (8, 12, 16, 24, 40))


def _sgnpow(v, p):
    return np.sign(v) * np.abs(v) ** p


def _stack3(x, y, z) -> np.ndarray:
    """Points [..., 3] from broadcast coordinates."""
    out = np.empty(np.broadcast(x, y, z).shape + (3,))
    out[..., 0], out[..., 1], out[..., 2] = x, y, z
    return out


def _jaw(shape: FaceShape, mouth_opening: float, camera: np.ndarray) -> np.ndarray:
    """Jaw contour [33, 3] as seen from `camera` (head frame): each point grazes its horizontal section."""
    cx = -shape.half_width * _sgnpow(np.cos(_JAW_ANGLES), 2 / shape.squareness)
    drop = shape.chin - shape.jaw_top + JAW_DROP * mouth_opening
    cy = shape.jaw_top + drop * np.abs(np.sin(_JAW_ANGLES)) ** (2 / shape.squareness)
    depth = JAW_DEPTH_RATIO * np.abs(cx)
    zc = FACE_FRONT_Z + depth
    vx, vz = -camera[0], zc - camera[2]                      # view ray to the section centre
    # Where the section's normal is perpendicular to the ray (independent of the section's size).
    m = SECTION_EXPONENT
    a, b = np.abs(vz) ** (1 / (m - 1)), np.abs(JAW_DEPTH_RATIO * vx) ** (1 / (m - 1))
    back = -np.sign(cx) * np.sign(vx) * b / (a ** m + b ** m) ** (1 / m)   # (z - zc) / depth
    back = np.minimum(back, NEAR_SIDE_LIMIT)
    return np.stack([cx * (1 - np.abs(back) ** m) ** (1 / m), cy, zc + depth * back], -1)


def _half_width_at(shape: FaceShape, y):
    """Half width of the frontal jaw contour at height y (mouth closed; its top half width above the jaw)."""
    rise = np.minimum(np.maximum((y - shape.jaw_top) / (shape.chin - shape.jaw_top), 0), 1) ** (shape.squareness / 2)
    return shape.half_width * np.sqrt(1 - rise ** 2) ** (2 / shape.squareness)


def _surface_z(shape: FaceShape, x, y):
    """Depth of the face surface at (x, y): the horizontal section of the jaw model. Features sit on or
    behind it (the nose and lip centres protrude), so they project inside the face outline from any view."""
    half = np.maximum(_half_width_at(shape, y), np.abs(x) + 1)
    m = SECTION_EXPONENT
    return FACE_FRONT_Z + JAW_DEPTH_RATIO * half * (1 - (1 - np.abs(x / half) ** m) ** (1 / m))


# Brow points along the brow (0 at the outer end, 1 at the inner end), in landmark order: upper edge, lower edge.
_BROW_T = (np.r_[np.linspace(0, 1, 5), np.linspace(0.875, 0.125, 4)],
           np.r_[np.linspace(1, 0, 5), np.linspace(0.125, 0.875, 4)])


def _brows(shape: FaceShape) -> np.ndarray:
    """Brow outlines [2, 9, 3] in landmark order (33-41, 42-50)."""
    out = []
    for side, t in zip((-1, 1), _BROW_T):
        x = side * (shape.eye_spacing + (shape.eye_width / 2 + 6) * (1 - t) - (shape.eye_width / 2 + 1) * t)
        mid = -shape.brow_height - shape.brow_arch * np.sin(np.pi * (0.15 + 0.75 * t)) + 2.5 * (1 - t)
        half = shape.brow_thickness * (0.55 + 0.45 * t) / 2
        y = mid + np.where(np.arange(9) < 5, -half, half)
        out.append(np.stack([x, y, _surface_z(shape, x, y) - 2], -1))
    return np.stack(out)


def _eye(shape: FaceShape, side: int, opening) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lid [..., 9, 3] of the eye on `side` (-1 left, +1 right) from the outer to the inner
    corner, for an opening (mm) of shape [...]."""
    t = _T9
    x = side * (shape.eye_spacing + shape.eye_width / 2 * (1 - 2 * t))
    g = np.sin(np.pi * t)
    line = -shape.canthal_tilt * (1 - t) + LID_SAG * g
    z = _surface_z(shape, x, line) + EYE_RECESS + EYE_CORNER_RECESS * (1 - g)
    h = np.asarray(opening, np.float64)[..., None] * g
    return _stack3(x, line - UPPER_LID_SHARE * h, z), _stack3(x, line + (1 - UPPER_LID_SHARE) * h, z)


_T_CREASE = np.linspace(0.08, 0.92, 7)


def _eye_extras(shape: FaceShape, side: int, gaze: np.ndarray) -> dict[str, np.ndarray]:
    """Crease [7, 3], iris outline [16, 3] and iris centre [1, 3] of one eye."""
    t = _T_CREASE
    x = side * (shape.eye_spacing + shape.eye_width / 2 * (1 - 2 * t))
    g = np.sin(np.pi * t)
    y = -shape.canthal_tilt * (1 - t) + LID_SAG * g - shape.eye_crease * g ** 0.7
    crease = np.stack([x, y, _surface_z(shape, x, y) + EYE_RECESS - 1 + EYE_CORNER_RECESS * (1 - g)], -1)
    lid_z = _surface_z(shape, side * shape.eye_spacing, 0.0) + EYE_RECESS
    ball = np.array([side * shape.eye_spacing, LID_SAG - 0.1 * shape.eye_crease, lid_z + EYEBALL_RADIUS - 1.5])
    gx, gy = gaze
    direction = np.array([np.sin(gx) * np.cos(gy), np.sin(gy), -np.cos(gx) * np.cos(gy)])
    radius = IRIS_RATIO * shape.eye_width
    centre = ball + np.sqrt(EYEBALL_RADIUS ** 2 - radius ** 2) * direction
    e1 = np.array([-direction[2], 0.0, direction[0]]) / np.hypot(direction[0], direction[2])   # direction x y
    e2 = np.array([direction[1] * e1[2], direction[2] * e1[0] - direction[0] * e1[2], -direction[1] * e1[0]])
    iris = centre + radius * (np.cos(_RING16) * e1 + np.sin(_RING16) * e2)
    return dict(crease=crease, iris=iris, iris_centre=centre[None])


def _nose(shape: FaceShape) -> dict[str, np.ndarray]:
    """Bridge (51-54), nostril line (55-59), nostril holes and wings."""
    tip_y, depth, w = shape.nose_length, shape.nose_depth, shape.nose_width
    nasion_z = FACE_FRONT_Z - 4
    t = np.linspace(0, 1, 4)
    bridge = np.stack([np.zeros(4), -6 + (tip_y + 2) * t, nasion_z - depth * t ** 1.2], -1)
    xs = np.array([-w, -0.5 * w, 0, 0.5 * w, w])
    nostrils = np.stack([xs, tip_y + np.array([-1.0, 2.5, 5.0, 2.5, -1.0]),
                         nasion_z - depth * np.array([0.25, 0.55, 0.6, 0.55, 0.25])], -1)
    a = _RING8[:, 0]
    holes = np.stack([np.stack([s * 0.45 * w + 0.22 * w * np.cos(a), tip_y + 2.3 + 1.4 * np.sin(a),
                                np.full(8, nasion_z - 0.5 * depth)], -1) for s in (-1, 1)])
    wings = np.stack([np.stack([s * w * np.array([1.0, 1.08, 0.8]), tip_y + np.array([-1.0, -6.0, -11.0]),
                                nasion_z - depth * np.array([0.25, 0.15, 0.2])], -1) for s in (-1, 1)])
    return dict(bridge=bridge, nostrils=nostrils, holes=holes, wings=wings)


_BULGE, _BOW = np.sqrt(1 - _T13 ** 2), 1 - 0.25 * np.exp(-(_T13 / 0.15) ** 2)   # lip thickness, Cupid's bow


def _lips(shape: FaceShape, opening) -> dict[str, np.ndarray]:
    """Outer upper / lower lip [..., 13, 3] and inner upper / lower lip [..., 9, 3], left to right, for an
    inner-lip opening (mm) of shape [...]."""
    h = np.asarray(opening, np.float64)[..., None]
    half = shape.mouth_width * (1 - MOUTH_NARROWING * h / (h + 15.0))
    inner_half = half - LIP_CORNER_INSET
    y0 = shape.mouth_y

    def inner(x, share):
        return y0 + share * h * np.maximum(1 - (x / inner_half) ** 2, 0) ** 0.7

    xo = half * _T13
    zo = _surface_z(shape, xo, y0) - LIP_PROTRUSION * (1 - _T13 ** 2)
    xi = inner_half * (2 * _T9 - 1)
    zi = _surface_z(shape, xi, y0) - LIP_PROTRUSION * (1 - (xi / half) ** 2) + 2.5
    return dict(outer_up=_stack3(xo, inner(xo, -0.4) - shape.upper_lip * _BULGE * _BOW, zo),
                outer_lo=_stack3(xo, inner(xo, 0.6) + shape.lower_lip * _BULGE ** 0.8, zo + 1),
                inner_up=_stack3(xi, inner(xi, -0.4), zi), inner_lo=_stack3(xi, inner(xi, 0.6), zi))


def _cranium(shape: FaceShape) -> tuple[np.ndarray, np.ndarray]:
    """Centre and semi-axes of the cranium ellipsoid."""
    return np.array([0.0, -22.0, 12.0]), np.array([1.04 * shape.half_width, 112.0, 100.0])


def _cranium_outline(shape: FaceShape, rot: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Head-frame points [40, 3] of the cranium's contour generator (its outline seen from the camera)."""
    centre, axes = _cranium(shape)
    q = -(rot.T @ translation + centre) / axes                # camera in unit-sphere coordinates
    qq = q @ q
    e1 = np.array([-q[2], 0.0, q[0]]) / np.hypot(q[0], q[2])                     # q x y, then q x e1
    e2 = np.array([q[1] * e1[2], q[2] * e1[0] - q[0] * e1[2], -q[1] * e1[0]]) / np.sqrt(qq)
    u = q / qq + np.sqrt(1 - 1 / qq) * (np.cos(_RING40) * e1 + np.sin(_RING40) * e2)
    return centre + axes * u


_U15 = np.linspace(1.0, -1.0, 15)


def _hairline(shape: FaceShape, hairline: np.ndarray) -> np.ndarray:
    """Arc [15, 3] on the cranium from the right temple to the left one (closes the face polygon)."""
    centre, axes = _cranium(shape)
    top, temple = hairline
    end = 0.9 * axes[0] * np.sqrt(1 - ((temple - centre[1]) / axes[1]) ** 2)
    x = end * _U15
    y = top + (temple - top) * (x / end) ** 2
    inside = np.maximum(1 - (x / axes[0]) ** 2 - ((y - centre[1]) / axes[1]) ** 2, 0)
    return np.stack([x, y, centre[2] - axes[2] * np.sqrt(inside)], -1)


def _ears(shape: FaceShape) -> np.ndarray:
    """Ear outlines [2, 12, 3] (left, right): flat ovals turned 60 deg from the face plane."""
    a = _RING12[:, 0]
    out = []
    for side in (-1, 1):
        axis = np.array([side * 0.55, 0.0, 0.84])
        centre = np.array([side * (shape.half_width + 5), 0.5 * shape.nose_length - 2, 12.0])
        out.append(centre + 31 * np.cos(a)[:, None] * np.array([0, 1.0, 0]) + 15 * np.sin(a)[:, None] * axis)
    return np.stack(out)


def _body(shape: FaceShape) -> dict[str, np.ndarray]:
    """Neck, shirt (V neck) and long-hair outlines."""
    a, c, j = shape.half_width, shape.chin, shape.jaw_top
    neck = np.array([[-0.62 * a, (j + c) / 2, 25], [-0.7 * a, c + 90, 30], [0.7 * a, c + 90, 30],
                     [0.62 * a, (j + c) / 2, 25]])
    shirt = np.array([[-0.72 * a, c + 50, 30], [-2.6 * a, c + 95, 40], [-2.8 * a, c + 400, 40],
                      [2.8 * a, c + 400, 40], [2.6 * a, c + 95, 40], [0.72 * a, c + 50, 30], [0, c + 95, 20]])
    long_hair = np.array([[-1.1 * a, -40, 25], [-1.35 * a, c + 60, 45], [-0.9 * a, c + 75, 50],
                          [0.9 * a, c + 75, 50], [1.35 * a, c + 60, 45], [1.1 * a, -40, 25]])
    return dict(neck=neck, shirt=shirt, long_hair=long_hair)


def _lenses(shape: FaceShape) -> np.ndarray:
    """Glasses lens outlines [2, 16, 3]. They wrap around the face just in front of the lids (no parallax), so
    a lens covers its eye from every view."""
    a = _RING16[:, 0]
    hx, hy = 0.78 * shape.eye_width, 0.55 * shape.eye_width
    out = []
    for side in (-1, 1):
        dx = hx * np.cos(a)
        x = side * shape.eye_spacing + dx
        y = -1.5 + hy * np.sin(a) - 0.12 * hy * np.sin(a) ** 2
        out.append(np.stack([x, y, _surface_z(shape, x, y) + EYE_RECESS - 1], -1))
    return np.stack(out)


def _props3d(params: FaceParams, lips: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Phone outline and hand anchor, cigarette axis, or hard-negative hand anchor (head frame)."""
    shape, props = params.shape, params.props
    s = props.side
    ear = np.array([s * (shape.half_width + 5), 0.5 * shape.nose_length - 2, 12.0])
    kind = fl.DISTRACTION_CLASSES[props.distraction]
    if kind == "phone":
        length, width = 140.0, 70.0
        long_axis = np.array([0.0, np.cos(props.tilt), -np.sin(props.tilt)])
        across = (np.array([0.0, np.sin(props.tilt), np.cos(props.tilt)]) * np.cos(PHONE_TURN)
                  + np.array([s, 0, 0]) * np.sin(PHONE_TURN))
        centre = ear + np.array([s * 20.0, 15.0, -25.0])
        outline = centre + (0.5 * length * _sgnpow(np.cos(_RING24), 0.3) * long_axis
                            + 0.5 * width * _sgnpow(np.sin(_RING24), 0.3) * across)
        palm = centre + 0.25 * length * long_axis + np.array([s * 10.0, 0, -10.0])
        return dict(phone=outline, hand=np.stack([palm, palm - 60 * long_axis]))
    if kind == "smoking":
        inner_up, inner_lo = lips["inner_up"], lips["inner_lo"]
        k = 6 if s > 0 else 2                                  # seam point at 1/2 of the inner half width
        start = (inner_up[k] + inner_lo[k]) / 2 + np.array([0, 0, -3.0])
        direction = np.array([s * 0.8, 0.25 + props.tilt, -0.5])
        direction /= np.linalg.norm(direction)
        t = np.array([0.0, 0.3, 0.95, 1.0])[:, None] * props.length
        return dict(cigarette=start + t * direction)
    if props.hand:
        anchor = ear if props.hand_at_ear else np.array([s * shape.half_width, shape.mouth_y, -20.0])
        palm = anchor + np.array([s * 28.0, 15.0, -5.0])
        return dict(hand=np.stack([palm, palm + np.array([s * 10.0, -60.0, 0])]))
    return {}


def _geometry(params: FaceParams) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All curves of the face in head coordinates, and the landmark array [98, 3]."""
    shape = params.shape
    rot = fl.euler_to_matrix(params.yaw, params.pitch, params.roll)
    camera = -rot.T @ params.translation
    g = dict(jaw=_jaw(shape, params.mouth_opening, camera), brows=_brows(shape), ears=_ears(shape),
             cranium=_cranium_outline(shape, rot, params.translation),
             hairline=_hairline(shape, params.look.hairline), lenses=_lenses(shape), **_nose(shape),
             **_lips(shape, params.mouth_opening), **_body(shape))
    for i, side in enumerate((-1, 1)):
        g[f"upper{i}"], g[f"lower{i}"] = _eye(shape, side, params.eye_opening[i])
        for key, value in _eye_extras(shape, side, params.gaze).items():
            g[f"{key}{i}"] = value
    g.update(_props3d(params, g))
    landmarks = np.concatenate([
        g["jaw"], g["brows"][0], g["brows"][1], g["bridge"], g["nostrils"],
        g["upper0"][[0, 2, 4, 6, 8]], g["lower0"][[6, 4, 2]],
        g["upper1"][[8, 6, 4, 2, 0]], g["lower1"][[2, 4, 6]],
        g["outer_up"][[0, 2, 4, 6, 8, 10, 12]], g["outer_lo"][[10, 8, 6, 4, 2]],
        g["inner_up"][[0, 2, 4, 6, 8]], g["inner_lo"][[6, 4, 2]], g["iris_centre0"], g["iris_centre1"],
    ])
    return g, landmarks


# ----------------------------------------------------------------------------------------------
# Camera and crop


def _to_camera(points: np.ndarray, rot: np.ndarray, translation: np.ndarray) -> np.ndarray:
    return points @ rot.T + translation


def _rendered_ratios(quads: np.ndarray, rot: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Rendered |top - bottom| / |corner - corner| (Eq. 2.2) of (corner, top, bottom, corner) quads [G, 4, 3]."""
    cam = _to_camera(quads, rot, translation)
    uv = cam[..., :2] / cam[..., 2:]
    return np.linalg.norm(uv[:, 1] - uv[:, 2], axis=-1) / np.linalg.norm(uv[:, 0] - uv[:, 3], axis=-1)


def _solve_openings(shape: FaceShape, rot, translation, ear_targets, mar_target) -> tuple[np.ndarray, float]:
    """Eyelid openings [2] and inner-lip opening (mm) that render the target EARs and MAR under this pose
    (the ratios grow monotonically with the openings: interpolated on a grid of openings)."""
    grid = _SOLVER_GRID
    eyes = []
    for target, side in zip(ear_targets, (-1, 1)):
        upper, lower = _eye(shape, side, grid * shape.eye_width)
        quads = np.stack([upper[:, 0], upper[:, 4], lower[:, 4], upper[:, 8]], 1)
        eyes.append(np.interp(target, _rendered_ratios(quads, rot, translation), grid * shape.eye_width))
    lips = _lips(shape, grid * MOUTH_MAX_OPENING)
    up, lo = lips["inner_up"], lips["inner_lo"]
    ratios = _rendered_ratios(np.stack([up[:, 0], up[:, 4], lo[:, 4], up[:, 8]], 1), rot, translation)
    return np.array(eyes), float(np.interp(mar_target, ratios, grid * MOUTH_MAX_OPENING))


def _project(params: FaceParams) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """Every curve in crop units ([0, 1] over the crop; the landmarks under 'landmarks'), the camera depth of
    every point (mm) and the crop side in normalised camera units (u = X / Z)."""
    rot = fl.euler_to_matrix(params.yaw, params.pitch, params.roll)
    g, landmarks = _geometry(params)
    g["landmarks"] = landmarks
    names = list(g)
    cam = _to_camera(np.concatenate([g[k].reshape(-1, 3) for k in names]), rot, params.translation)
    uv = cam[:, :2] / cam[:, 2:]
    lm = uv[-fl.NUM_LANDMARKS:]
    lo, extent = lm.min(0), np.ptp(lm, 0)
    side = float(extent.max() * params.roi_scale)
    corner = lo - params.roi_shift * (side - extent)
    crop = (uv - corner) / side
    points, depth, start = {}, {}, 0
    for k in names:
        stop = start + g[k].size // 3
        points[k] = crop[start:stop].reshape(g[k].shape[:-1] + (2,))
        depth[k] = cam[start:stop, 2].reshape(g[k].shape[:-1])
        start = stop
    return points, depth, side


def project_landmarks(params: FaceParams) -> np.ndarray:
    """The 98 labelled landmarks of `params`: float32 [98, 2], (x, y) in crop units [0, 1]."""
    return np.clip(_project(params)[0]["landmarks"], 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Sampling

_SKIN_LIGHT, _SKIN_DARK = np.array([0.96, 0.80, 0.69]), np.array([0.34, 0.22, 0.15])
_HAIR = np.array([[0.06, 0.05, 0.05], [0.20, 0.12, 0.07], [0.40, 0.26, 0.14], [0.78, 0.64, 0.40],
                  [0.62, 0.62, 0.60], [0.50, 0.20, 0.08]])
_HAIR_PROBS = (0.3, 0.3, 0.15, 0.1, 0.1, 0.05)
_IRIS = np.array([[0.35, 0.20, 0.10], [0.15, 0.10, 0.07], [0.30, 0.45, 0.62], [0.35, 0.45, 0.25],
                  [0.45, 0.35, 0.15]])
_NEAR_SIDE_YAW = np.deg2rad(5.0)       # beyond this yaw, props go on the side turned toward the camera


def _background_shapes(rng: np.random.Generator) -> tuple:
    """2-6 random polygons (boxes, ovals, bands, blobs) in crop units, with colours."""
    shapes = []
    for _ in range(rng.integers(2, 7)):
        kind, colour = rng.integers(4), rng.uniform(0.03, 0.9, 3)
        centre, half = rng.uniform(-0.1, 1.1, 2), rng.uniform(0.05, 0.45, 2)
        if kind == 0:
            unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1.0]])
        elif kind == 1:
            unit = np.hstack([np.cos(_RING16), np.sin(_RING16)])
        elif kind == 2:                                   # a band (seat belt, pillar, window frame)
            half = np.array([rng.uniform(0.6, 1.0), rng.uniform(0.03, 0.08)])
            unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1.0]])
        else:
            a = np.sort(rng.uniform(0, _TWO_PI, rng.integers(3, 7)))
            unit = np.stack([np.cos(a), np.sin(a)], -1) * rng.uniform(0.5, 1.0, (len(a), 1))
        angle = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shapes.append((colour, centre + (unit * half) @ rot.T))
    return tuple(shapes)


def _sample_shape(rng: np.random.Generator) -> FaceShape:
    """Face proportions (mm), uniform in plausible adult ranges."""
    nose_length = rng.uniform(36, 47)
    mouth_y = nose_length + rng.uniform(17, 25)
    lower_lip = rng.uniform(5, 9.5)
    return FaceShape(half_width=rng.uniform(64, 76), jaw_top=rng.uniform(0, 12),
                     chin=mouth_y + lower_lip + rng.uniform(24, 38), squareness=rng.uniform(2.0, 3.2),
                     eye_spacing=rng.uniform(29, 34), eye_width=rng.uniform(26, 31), eye_crease=rng.uniform(7, 10),
                     canthal_tilt=rng.uniform(-1, 3), brow_height=rng.uniform(13, 19), brow_arch=rng.uniform(1, 4.5),
                     brow_thickness=rng.uniform(3.5, 7), nose_length=nose_length, nose_depth=rng.uniform(16, 25),
                     nose_width=rng.uniform(13, 18), mouth_y=mouth_y, mouth_width=rng.uniform(21, 27),
                     upper_lip=rng.uniform(4, 7.5), lower_lip=lower_lip)


def _sample_look(rng: np.random.Generator) -> Look:
    """Skin tone (light to dark), lip, hair and eye colours, hair style, light, background, sensor noise."""
    skin = np.clip(_SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * rng.uniform() + rng.uniform(-0.03, 0.03, 3), 0, 1)
    hair = _HAIR[rng.choice(len(_HAIR), p=_HAIR_PROBS)] * rng.uniform(0.8, 1.2)
    hair_style = int(rng.choice(3, p=HAIR_STYLE_PROBS))
    return Look(skin=skin, lips=np.clip(skin * [0.92, 0.62, 0.62] + rng.uniform(-0.04, 0.04, 3), 0, 1),
                hair=np.clip(hair, 0, 1), brows=np.clip(hair * 0.75 if hair_style else hair * 0.6, 0, 1),
                iris=_IRIS[rng.integers(len(_IRIS))] * rng.uniform(0.8, 1.2), sclera=rng.uniform(0.78, 0.95),
                clothes=rng.uniform(0.05, 0.8, 3), hair_style=hair_style,
                hairline=np.array([rng.uniform(-68, -50), rng.uniform(-32, -18)]),
                light_x=rng.uniform(-0.5, 0.5) + rng.uniform(-0.12, 0.12, 3), light_y=rng.uniform(-0.5, 0.5),
                gain=rng.uniform(0.75, 1.15), background=rng.uniform(0.05, 0.85, 3),
                shapes=_background_shapes(rng), grayscale=bool(rng.random() < P_GRAYSCALE),
                noise=rng.uniform(0.004, 0.03))


def _sample_props(rng: np.random.Generator, yaw: float, skin: np.ndarray, class_probs) -> Props:
    """Glasses, eye occluder, distraction class and its scene; props go on the side turned toward the camera."""
    r = rng.random()
    glasses = 2 if r < P_SUNGLASSES else 1 if r < P_SUNGLASSES + P_GLASSES else 0
    occluded = int(rng.integers(2)) if glasses != 2 and rng.random() < P_EYE_OCCLUDER else -1
    distraction = int(rng.choice(len(fl.DISTRACTION_CLASSES), p=class_probs))
    side = int(np.sign(yaw)) if abs(yaw) > _NEAR_SIDE_YAW else int(rng.choice([-1, 1]))
    phone = fl.DISTRACTION_CLASSES[distraction] == "phone"
    dark_case = rng.random() < 0.6
    return Props(glasses=glasses,
                 glasses_color=rng.uniform(0.02, 0.18, 3) if glasses == 2 else rng.uniform(0.0, 0.6, 3),
                 occluded_eye=occluded, occluder_is_hand=bool(rng.random() < 0.6),
                 occluder_color=rng.uniform(0.1, 0.9, 3), occluder_size=rng.uniform(1.3, 2.0),
                 hand_color=np.clip(skin * rng.uniform(0.88, 1.02) + rng.uniform(-0.03, 0.03, 3), 0, 1),
                 distraction=distraction, side=side, hand_at_ear=bool(rng.random() < 0.5),
                 hand=bool(rng.random() < P_HAND_NEGATIVE),
                 object_color=rng.uniform(0.02, 0.15, 3) if dark_case else rng.uniform(0.1, 0.7, 3),
                 tilt=rng.uniform(0.5, 1.0) if phone else rng.uniform(-0.2, 0.4), length=rng.uniform(70, 90))


def _roi_shift(u: np.ndarray, roi: face_roi.RoIAugment) -> np.ndarray:
    """Crop corner position per axis as a fraction of the slack (0.5: centred) for uniform draws u in [0, 1):
    moved from the centre by U[roi.shift] of the slack / 2, in a random direction (u's side of 0.5)."""
    v = 2 * u - 1
    low, high = roi.shift
    return 0.5 + np.sign(v) * (low + np.abs(v) * (high - low)) / 2


def sample_face(rng: np.random.Generator, class_probs=DEFAULT_CLASS_PROBS,
                roi: face_roi.RoIAugment = face_roi.TRAIN) -> FaceParams:
    """Draws a face: identity, pose, camera, expression, RoI (scale and shift ranges of `roi`), look and props
    (see the module docstring)."""
    shape = _sample_shape(rng)
    yaw, pitch, roll = np.deg2rad(rng.uniform(-1, 1, 3) * [YAW_DEG, PITCH_DEG, ROLL_DEG])
    distance = rng.uniform(*DISTANCE_MM)
    translation = np.array([*(rng.uniform(-OFF_AXIS, OFF_AXIS, 2) * distance), distance])
    r = rng.random()
    closed = [True, True] if r < P_BLINK else list(rng.permutation([True, False])) if r < P_BLINK + P_WINK \
        else [False, False]
    open_ear = rng.uniform(*OPEN_EAR)
    ear_targets = [rng.uniform(*CLOSED_EAR) if c else np.clip(open_ear + rng.uniform(-0.02, 0.02), *OPEN_EAR)
                   for c in closed]
    mar_target = rng.uniform(*MOUTH_TARGET_MAR[rng.integers(len(MOUTH_TARGET_MAR))])
    rot = fl.euler_to_matrix(yaw, pitch, roll)
    look = _sample_look(rng)
    eye_opening, mouth_opening = _solve_openings(shape, rot, translation, ear_targets, mar_target)
    return FaceParams(shape=shape, yaw=float(yaw), pitch=float(pitch), roll=float(roll), translation=translation,
                      eye_opening=eye_opening, gaze=rng.uniform([-0.35, -0.2], [0.35, 0.2]),
                      mouth_opening=mouth_opening, roi_scale=rng.uniform(*roi.scale),
                      roi_shift=_roi_shift(rng.uniform(0, 1, 2), roi),
                      look=look, props=_sample_props(rng, yaw, look.skin, class_probs))


def mirror_face(params: FaceParams) -> FaceParams:
    """The same face and scene seen in a mirror: its landmarks are `face_landmarks.flip_landmarks` of these."""
    look, props = params.look, params.props
    mirror_x = np.array([-1.0, 1.0])
    look = dataclasses.replace(look, light_x=-look.light_x,
                               shapes=tuple((c, p * mirror_x + [1.0, 0.0]) for c, p in look.shapes))
    props = dataclasses.replace(props, side=-props.side,
                                occluded_eye=props.occluded_eye if props.occluded_eye < 0 else 1 - props.occluded_eye)
    return dataclasses.replace(params, yaw=-params.yaw, roll=-params.roll,
                               translation=params.translation * [-1.0, 1.0, 1.0],
                               eye_opening=params.eye_opening[::-1].copy(), gaze=params.gaze * mirror_x,
                               roi_shift=np.array([1 - params.roi_shift[0], params.roi_shift[1]]), look=look,
                               props=props)


# ----------------------------------------------------------------------------------------------
# Drawing


def _rgb(colour) -> tuple[int, ...]:
    """PIL colour of an RGB triple in [0, 1] (clipped)."""
    return tuple(min(255, max(0, int(c * 255 + 0.5))) for c in np.asarray(colour, np.float64).tolist())


def _flat(points: np.ndarray) -> list[float]:
    return points.reshape(-1).tolist()


def _cross2(a: np.ndarray, b: np.ndarray) -> float:
    """z component of a x b for 2D vectors (> 0: b is clockwise of a on screen, y down)."""
    return float(a[0] * b[1] - a[1] * b[0])


class _Painter:
    """Draws the projected curves on the 2x canvas: crop units -> canvas pixels, mm -> pixels at each depth."""

    def __init__(self, image: Image.Image, points: dict, depth: dict, side: float):
        self.image, self.draw = image, ImageDraw.Draw(image)
        self.points, self.depth, self.side = points, depth, side
        self.n = image.size[0]
        self.offset = np.zeros(2)            # canvas position of self.image's corner (see `clipped`)
        self._scale: dict[str, float] = {}

    def xy(self, name: str) -> np.ndarray:
        """Canvas pixel coordinates of curve `name` (PIL puts pixel centres at integers)."""
        return self.points[name] * self.n - 0.5

    def px(self, name: str, mm: float) -> float:
        """`mm` at the mean depth of curve `name`, in canvas pixels."""
        if name not in self._scale:
            self._scale[name] = self.n / (self.side * float(self.depth[name].mean()))
        return mm * self._scale[name]

    def polygon(self, xy: np.ndarray, colour) -> None:
        self.draw.polygon(_flat(xy - self.offset), fill=_rgb(colour))

    def line(self, xy: np.ndarray, colour, width: float) -> None:
        width = max(1, int(round(width)))
        self.draw.line(_flat(xy - self.offset), fill=_rgb(colour), width=width, joint="curve" if width > 2 else None)

    def disc(self, centre: np.ndarray, radius: float, colour) -> None:
        r, (x, y) = max(radius, 0.5), centre - self.offset
        self.draw.ellipse([x - r, y - r, x + r, y + r], fill=_rgb(colour))

    def stroke(self, a: np.ndarray, b: np.ndarray, colour, width: float) -> None:
        """A thick segment with round caps."""
        self.line(np.stack([a, b]), colour, width)
        self.disc(a, width / 2, colour)
        self.disc(b, width / 2, colour)

    def clipped(self, clip: np.ndarray, paint) -> None:
        """Runs `paint(painter)` with a painter on the canvas region around polygon `clip` (same canvas
        coordinates), keeping only what it draws inside `clip`."""
        lo = np.maximum(np.floor(clip.min(0)).astype(int), 0)
        hi = np.minimum(np.ceil(clip.max(0)).astype(int) + 1, self.n)
        if (hi <= lo).any():
            return
        box = (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
        patch = self.image.crop(box)
        sub = copy.copy(self)
        sub.image, sub.draw, sub.offset = patch, ImageDraw.Draw(patch), lo.astype(np.float64)
        paint(sub)
        mask = Image.new("L", patch.size, 0)
        ImageDraw.Draw(mask).polygon(_flat(clip - lo), fill=255)
        self.image.paste(patch, box, mask)


def _background(look: Look, n: int) -> Image.Image:
    """Background colour and random shapes, at n x n."""
    image = Image.new("RGB", (n, n), _rgb(look.background))
    draw = ImageDraw.Draw(image)
    for colour, points in look.shapes:
        draw.polygon(_flat(points * n - 0.5), fill=_rgb(colour))
    return image


def _hand(p: _Painter, palm: np.ndarray, fingers: np.ndarray, size: float, colour, thumb: float = 1.0) -> None:
    """A hand: a palm at `palm` (canvas px) with four fingers toward `fingers` and a thumb on the `thumb` (+-1)
    side; `size` px long."""
    d = (fingers - palm) / (np.linalg.norm(fingers - palm) + 1e-9)
    nrm = thumb * np.array([-d[1], d[0]])
    a = _RING16
    outline = palm + 0.28 * size * _sgnpow(np.cos(a), 0.7) * d + 0.25 * size * _sgnpow(np.sin(a), 0.7) * nrm
    width, grow = 0.11 * size, max(2.0, 0.025 * size)
    bases = palm + 0.15 * size * d + np.array([-0.18, -0.06, 0.06, 0.18])[:, None] * size * nrm
    tips = bases + np.array([0.4, 0.48, 0.46, 0.36])[:, None] * size * d
    thumb_base, thumb_tip = palm + 0.18 * size * nrm - 0.05 * size * d, palm + 0.36 * size * nrm + 0.12 * size * d
    dark = np.asarray(colour) * 0.7
    p.polygon(palm + (outline - palm) * (1 + grow / (0.25 * size)), dark)
    p.polygon(outline, colour)
    for b, t, w in [(thumb_base, thumb_tip, 1.15 * width)] + [(b, t, width) for b, t in zip(bases, tips)]:
        p.stroke(b, t, dark, w + grow)
        p.stroke(b, t, colour, w)


def _draw_head(p: _Painter, params: FaceParams, ears_in_front) -> None:
    """Long hair, neck, shirt, ears (behind the head or, turned toward the camera, in front), cranium and
    the face with two-tone shading."""
    look = params.look
    skin, skin_edge = look.skin, look.skin * 0.86
    if look.hair_style == 2:
        p.polygon(p.xy("long_hair"), look.hair * 0.85)
    p.polygon(p.xy("neck"), skin * 0.72)
    p.polygon(p.xy("shirt"), look.clothes)

    def ear(i):
        xy = p.xy("ears")[i]
        p.polygon(xy, skin * 0.82)
        centre = xy.mean(0)
        p.line(centre + 0.55 * (xy[4:11] - centre), skin * 0.62, p.px("ears", 1.5))

    for i in range(2):
        if not ears_in_front[i]:
            ear(i)
    p.polygon(p.xy("cranium"), look.hair if look.hair_style else skin_edge)
    face = np.vstack([p.xy("jaw"), p.xy("hairline")])
    p.polygon(face, skin_edge)
    centre = face.mean(0)
    radius = np.sqrt(((face - centre) ** 2).sum(1).mean())
    light = np.array([look.light_x.mean(), look.light_y])
    shift = light / (np.linalg.norm(light) + 1e-9) * 0.06 * radius
    p.polygon(centre + shift + 0.82 * (face - centre), skin)
    for i in range(2):
        if ears_in_front[i]:
            ear(i)


def _draw_eyes(p: _Painter, params: FaceParams) -> None:
    """Eye sockets, sclera, iris and pupil clipped to the lids, lid lines, creases and brows."""
    look, skin = params.look, params.look.skin
    for i in range(2):
        p.polygon(p.xy("brows")[i], look.brows)
        upper, lower, crease = p.xy(f"upper{i}"), p.xy(f"lower{i}"), p.xy(f"crease{i}")
        below = lower + np.array([0.0, p.px(f"lower{i}", 2.5)])
        p.polygon(np.vstack([upper[:1], crease, upper[-1:], below[::-1]]), skin * 0.9)
        p.line(crease, skin * 0.72, p.px(f"crease{i}", 0.7))
        opening = np.vstack([upper, lower[::-1]])
        if params.eye_opening[i] > 0.3:
            p.polygon(opening, np.full(3, look.sclera))
            iris, centre = p.xy(f"iris{i}"), p.xy(f"iris_centre{i}")[0]
            glint = centre + np.array([-0.3, -0.3]) * np.ptp(iris, 0)

            def paint(q, iris=iris, centre=centre, glint=glint):
                q.polygon(iris, look.iris)
                q.polygon(centre + PUPIL_RATIO * (iris - centre), (0.03, 0.03, 0.03))
                q.disc(glint, 0.08 * np.ptp(iris, 0).max(), (0.96, 0.96, 0.96))

            p.clipped(opening, paint)
            p.line(lower, skin * 0.6, p.px(f"lower{i}", 0.6))
        p.line(upper, (0.08, 0.06, 0.05), p.px(f"upper{i}", 1.2 if params.eye_opening[i] > 0.3 else 1.5))


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull [k, 2] of points [n, 2] (monotone chain)."""
    pts = points[np.lexsort((points[:, 1], points[:, 0]))].tolist()
    chains = []
    for seq in (pts, pts[::-1]):
        chain = []
        for q in seq:
            while len(chain) >= 2 and ((chain[-1][0] - chain[-2][0]) * (q[1] - chain[-2][1])
                                       - (chain[-1][1] - chain[-2][1]) * (q[0] - chain[-2][0])) <= 0:
                chain.pop()
            chain.append(q)
        chains.append(chain[:-1])
    return np.array(chains[0] + chains[1])


def _draw_nose(p: _Painter, params: FaceParams) -> None:
    """Nose body (it may protrude past the cheek), shaded bridge side, wings, nostrils."""
    skin = params.look.skin
    bridge = p.xy("bridge")
    p.polygon(_convex_hull(np.vstack([bridge, p.xy("nostrils"), p.xy("wings").reshape(-1, 2)])), skin * 0.97)
    shade = np.sign(params.look.light_x.mean()) or 1.0
    width = p.px("bridge", params.shape.nose_width * 0.35)
    p.line(bridge[1:] + np.array([-shade * width, 0]), skin * 0.8, p.px("bridge", 1.2))
    for i in range(2):
        p.line(p.xy("wings")[i], skin * 0.72, p.px("wings", 1.0))
        p.polygon(p.xy("holes")[i], skin * 0.3)
    p.line(p.xy("nostrils"), skin * 0.62, p.px("nostrils", 0.8))


def _draw_mouth(p: _Painter, params: FaceParams) -> None:
    """Lips (darker upper lip); an open mouth shows its dark inside and the upper teeth, a closed one a seam."""
    lips = params.look.lips
    outer_up, outer_lo = p.xy("outer_up"), p.xy("outer_lo")
    inner_up, inner_lo = p.xy("inner_up"), p.xy("inner_lo")
    p.polygon(np.vstack([outer_up, outer_lo[::-1]]), lips)
    p.polygon(np.vstack([outer_up, inner_up[::-1]]), lips * 0.85)
    if params.mouth_opening > OPEN_LIPS_MM:
        p.polygon(np.vstack([inner_up, inner_lo[::-1]]), (0.22, 0.06, 0.06))
        teeth = inner_up[1:-1] + 0.3 * (inner_lo[1:-1] - inner_up[1:-1])
        p.polygon(np.vstack([inner_up[1:-1], teeth[::-1]]), (0.9, 0.88, 0.8))
    else:
        p.line(inner_up, lips * 0.45, p.px("inner_up", 0.8))


def _eye_points(p: _Painter, i: int) -> np.ndarray:
    """Canvas points of eye i: lids and pupil."""
    return np.vstack([p.xy(f"upper{i}"), p.xy(f"lower{i}"), p.xy(f"iris_centre{i}")])


def _draw_glasses(p: _Painter, params: FaceParams, ears_in_front) -> None:
    """Clear glasses (frames) or sunglasses. Each lens is the convex hull of its outline and of its eye
    enlarged by LENS_MARGIN, so sunglasses cover the eyes from every view (also where the outline folds
    around the side of the face)."""
    props = params.props
    frame = props.glasses_color if props.glasses == 1 else props.glasses_color * 0.6
    width = p.px("lenses", 1.5)
    outlines = p.xy("lenses")
    for i in range(2):
        eye = _eye_points(p, i)
        centre = eye.mean(0)
        lens = _convex_hull(np.vstack([outlines[i], centre + LENS_MARGIN * (eye - centre)]))
        if props.glasses == 2:
            p.polygon(lens, props.glasses_color)
            p.line(centre + 0.7 * (outlines[i][9:12] - centre), props.glasses_color + 0.12, width)
        p.line(np.vstack([lens, lens[:1]]), frame, width)
    p.line(np.stack([outlines[0][0], outlines[1][8]]), frame, width)
    for i, outer in ((0, 8), (1, 0)):
        if ears_in_front[i]:
            p.line(np.stack([outlines[i][outer], p.xy("ears")[i][6]]), frame, width)


def _draw_occluder(p: _Painter, params: FaceParams) -> None:
    """A hand or an object over one eye. It covers all of that eye's landmarks and is cut off halfway across
    the gap to the other eye, which stays uncovered."""
    props = params.props
    eye, other = _eye_points(p, props.occluded_eye), _eye_points(p, 1 - props.occluded_eye)
    centre = eye.mean(0)
    u = other.mean(0) - centre
    u /= np.linalg.norm(u) + 1e-9                            # toward the other eye
    up = p.xy("bridge")[0] - p.xy("bridge")[-1]
    v = np.array([-u[1], u[0]])
    v *= np.sign(v @ up) or 1.0                              # toward the forehead
    cut = (((eye - centre) @ u).max() + ((other - centre) @ u).min()) / 2
    far = 4.0 * p.n
    clip = centre + np.array([[cut, -far], [cut, far], [-far, far], [-far, -far]]) @ np.stack([u, v])
    radius = np.sqrt(((eye - centre) ** 2).sum(1).max()) + 2

    def paint(q):
        if props.occluder_is_hand:
            _hand(q, centre, centre + v, 5 * radius, props.hand_color, thumb=-np.sign(_cross2(v, u)) or 1.0)
        else:
            half = radius * props.occluder_size
            corners = np.array([[-1, -0.8], [1, -0.8], [1, 1.6], [-1, 1.6]]) * half
            q.polygon(centre + corners @ np.stack([u, v]), props.occluder_color)

    p.clipped(clip, paint)


def _draw_distraction(p: _Painter, params: FaceParams) -> None:
    """The phone (with its holding hand), the cigarette (filter, paper, ash, glow) or the hard-negative hand."""
    props = params.props
    if "phone" in p.points:
        phone = p.xy("phone")
        p.polygon(phone, props.object_color)
        p.line(np.vstack([phone, phone[:1]]), props.object_color + 0.25, p.px("phone", 2.0))
    if "cigarette" in p.points:
        start, filter_end, ash, tip = p.xy("cigarette")
        width = p.px("cigarette", 8.0)
        p.stroke(filter_end, ash, (0.95, 0.94, 0.9), width)
        p.stroke(start, filter_end, (0.85, 0.6, 0.3), width)
        p.stroke(ash, tip, (0.5, 0.48, 0.46), width)
        p.disc(tip, width * 0.45, (1.0, 0.45, 0.1))
    if "hand" in p.points:
        palm, fingers = p.xy("hand")
        outward = _cross2(fingers - palm, palm - p.xy("bridge")[0])           # thumb away from the face
        _hand(p, palm, fingers, p.px("hand", HAND_MM), props.hand_color, thumb=-np.sign(outward) or 1.0)


def _finish(canvas: Image.Image, look: Look, size: int, noise_seed) -> np.ndarray:
    """2x box downsampling, light gradient, optional grey conversion and sensor noise: float32 [0, 1].

    Works on [size, 3 size] rows (x and channel merged) so that every numpy loop is long."""
    ramp = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    gain = np.float32(look.gain / 255)
    down = (1 + np.float32(look.light_y) * ramp[:, None]) * gain                             # [size, 1]
    across = (ramp[:, None] * look.light_x.astype(np.float32)).reshape(1, -1) * gain       # [1, 3 size]
    image = np.asarray(canvas.reduce(2)).reshape(size, -1) * (down + across)
    if look.grayscale:
        grey = image.reshape(size, size, 3) @ np.array([0.299, 0.587, 0.114], np.float32)
        image = np.repeat(grey, 3, axis=1)
    image += _noise(np.random.default_rng(noise_seed), 3 * size * size).reshape(size, -1) * np.float32(look.noise)
    return np.clip(image, 0.0, 1.0, out=image).reshape(size, size, 3)


_NOISE_LEN = 1 << 20


@functools.lru_cache(maxsize=1)
def _noise_tile() -> np.ndarray:
    return np.random.default_rng(20260301).standard_normal(_NOISE_LEN, np.float32)


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """n consecutive values from a random offset of a fixed unit-variance noise sequence (wrapping around)."""
    start = int(rng.integers(_NOISE_LEN))
    if start + n <= _NOISE_LEN:
        return _noise_tile()[start:start + n]
    return _noise_tile().take(start + np.arange(n), mode="wrap")


def _check_size(size) -> None:
    if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"synthetic faces: size must be an int >= {MIN_SIZE}, got {size!r}")


def labels(params: FaceParams, landmarks: np.ndarray) -> dict:
    """Eye, mouth, pose and distraction labels of `params` with its labelled `landmarks` [98, 2]."""
    props = params.props
    visible = np.array([props.glasses != 2 and props.occluded_eye != i for i in range(2)])
    opened = visible & (fl.eye_aspect_ratios(landmarks) > EYE_OPEN_EAR)
    mar = float(fl.mouth_aspect_ratio(landmarks))
    return dict(eyes=np.stack([visible, opened], -1).reshape(4).astype(np.float32),
                mouth=np.int32((mar > face_labels.MOUTH_SEMI_MAR) + (mar > face_labels.MOUTH_OPEN_MAR)),
                head_pose=np.array([params.yaw, params.pitch, params.roll], np.float32),
                distraction=np.int32(props.distraction), confidence=np.float32(1.0))


def render_face(params: FaceParams, size: int = 160, noise_seed=0) -> dict:
    """Draws `params` into a `size` x `size` crop; returns image float32 [size, size, 3] in [0, 1], landmarks
    float32 [98, 2] in [0, 1], eyes float32 [4], mouth int32, head_pose float32 [3] (yaw, pitch, roll),
    distraction int32, confidence float32. `noise_seed` only picks the sensor noise."""
    _check_size(size)
    points, depth, side = _project(params)
    p = _Painter(_background(params.look, 2 * size), points, depth, side)
    ears_in_front = depth["ears"].mean(1) < params.translation[2] - EAR_IN_FRONT_MM
    _draw_head(p, params, ears_in_front)
    _draw_eyes(p, params)
    _draw_nose(p, params)
    _draw_mouth(p, params)
    if params.props.glasses:
        _draw_glasses(p, params, ears_in_front)
    _draw_distraction(p, params)
    if params.props.occluded_eye >= 0:
        _draw_occluder(p, params)
    landmarks = np.clip(points["landmarks"], 0.0, 1.0).astype(np.float32)
    return dict(image=_finish(p.image, params.look, size, noise_seed), landmarks=landmarks,
                **labels(params, landmarks))


class SyntheticFaces:
    """grain RandomAccessDataSource of synthetic DMS face crops; 'train' and 'val' sample disjoint faces.

    Example i of split s is a pure function of (seed, s, i); see `render_face` for its keys.
    """

    def __init__(self, split: str, num: int, size: int = 160, seed: int = 0, class_probs=DEFAULT_CLASS_PROBS):
        if split not in _SPLITS:
            raise ValueError(f"SyntheticFaces: unknown split {split!r}; expected one of {sorted(_SPLITS)}")
        if not isinstance(num, (int, np.integer)) or num <= 0:
            raise ValueError(f"SyntheticFaces: num must be a positive int, got {num!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"SyntheticFaces: seed must be a non-negative int, got {seed!r}")
        probs = np.asarray(class_probs, np.float64)
        if probs.shape != (len(fl.DISTRACTION_CLASSES),) or (probs < 0).any() or not np.isclose(probs.sum(), 1):
            raise ValueError(f"SyntheticFaces: class_probs must be {len(fl.DISTRACTION_CLASSES)} non-negative "
                             f"probabilities summing to 1, got {class_probs!r}")
        _check_size(size)
        self.split, self.num, self.size, self.seed, self.class_probs = split, int(num), size, seed, probs

    def __len__(self) -> int:
        return self.num

    def params(self, index: int) -> FaceParams:
        """The sampled face of example `index` (resolution free)."""
        if not 0 <= index < self.num:
            raise IndexError(f"SyntheticFaces({self.split!r}) index {index} out of range [0, {self.num})")
        return sample_face(np.random.default_rng([self.seed, _SPLITS[self.split], int(index)]), self.class_probs,
                           _SPLIT_ROI[self.split])

    def __getitem__(self, index: int) -> dict:
        return render_face(self.params(index), self.size,
                           noise_seed=[self.seed, _SPLITS[self.split], int(index), self.size])

    def __repr__(self) -> str:
        return (f"SyntheticFaces(split={self.split!r}, num={self.num}, size={self.size}, seed={self.seed}, "
                f"class_probs={tuple(self.class_probs.tolist())})")
