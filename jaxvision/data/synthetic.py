"""Procedural driving scenes: a small 3D street world ray-cast through a pinhole camera.

World frame: X right, Y up, Z forward (along the street), ground plane Y = 0, camera at (0, h, 0)
looking along +Z, pitched down by `pitch` radians. Everything is an axis-aligned box (buildings,
cars, persons, poles, signs, trees, hedges) or the ground plane, whose X bands give road,
sidewalk and terrain. Each pixel's ray is intersected with the ground and every box whose screen
rectangle covers it (vectorised numpy); the nearest hit gives the class (Cityscapes train ids), the
metric depth (z along the optical axis, as in Cityscapes/KITTI; 0 for sky) and the colour:
per-object albedo, lambertian sun shading, window and lane-paint detail, texture noise, distance
fog, weather and time of day.

A scene is a pure function of (seed, index): the world is sampled with
`numpy.random.default_rng([seed, index])` before the resolution is known, so rendering the same
scene at another resolution shows the same world (only the texture noise is per pixel).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from PIL import Image

# Cityscapes train ids used by the generator.
ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_SIGN, VEGETATION, TERRAIN, SKY = 0, 1, 2, 5, 7, 8, 9, 10
PERSON, CAR, TRUCK = 11, 13, 14
INSTANCE_CLASSES = (PERSON, CAR, TRUCK)

WEATHERS = ("clear", "overcast", "rain", "fog")
TIMES_OF_DAY = ("day", "dusk", "night")
LANE_CLASSES = ("solid", "dashed")
# Scene type tag (BDD100K's vocabulary), set by the number of traffic lanes: 2, 3 or 4.
SCENE_TYPES = ("residential", "city street", "highway")
# Object classes of the detection task, as train ids (INSTANCE_CLASSES) and names.
DETECTION_CLASSES = ("person", "car", "truck")
LANE_POINTS = 16
HFOV_DEG = 65.0
OCCLUDED_BELOW = 0.7          # visible fraction under which an object is flagged occluded

_SPLIT_SEED_OFFSET = {"train": 0, "val": 1}
_MIN_SIZE = 8

# Ground bands (index into the ground material table) and their classes.
_G_ROAD, _G_PAINT, _G_SIDEWALK, _G_VERGE, _G_YARD = range(5)
_GROUND_CLASSES = np.array([ROAD, ROAD, SIDEWALK, TERRAIN, TERRAIN], np.uint8)
# Texture-noise amplitude per class (fraction of albedo).
_TEXTURE = {ROAD: 0.06, SIDEWALK: 0.05, BUILDING: 0.05, POLE: 0.03, TRAFFIC_SIGN: 0.03, VEGETATION: 0.22,
            TERRAIN: 0.16, PERSON: 0.05, CAR: 0.03, TRUCK: 0.04}


@dataclasses.dataclass(frozen=True)
class Camera:
    """Pinhole camera at (0, height, 0), pitched down by `pitch` rad, horizontal field of view `hfov` rad."""
    height: float
    pitch: float
    hfov: float = float(np.deg2rad(HFOV_DEG))

    def focal(self, width: int) -> float:
        """Focal length in pixels for an image `width` pixels wide."""
        return 0.5 * width / np.tan(0.5 * self.hfov)

    def intrinsics(self, height: int, width: int) -> np.ndarray:
        """3x3 K (pixel centres at integer + 0.5, principal point at the image centre)."""
        f = self.focal(width)
        return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float32)

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World-frame unit vectors of the camera's right, down and forward axes."""
        s, c = np.sin(self.pitch), np.cos(self.pitch)
        return np.array([1.0, 0, 0]), np.array([0, -c, -s]), np.array([0, -s, c])

    def project(self, points: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """World points [..., 3] -> (pixel coordinates [..., 2], camera z [...])."""
        right, down, fwd = self.basis()
        rel = points - np.array([0.0, self.height, 0.0])
        z = rel @ fwd
        f = self.focal(width)
        uv = np.stack([f * (rel @ right) / z + width / 2, f * (rel @ down) / z + height / 2], -1)
        return uv, z


@dataclasses.dataclass(frozen=True)
class Scene:
    """A sampled world: camera, ground layout, box parts, lighting and weather (resolution free)."""
    camera: Camera
    bands: np.ndarray            # [K+1] increasing X edges of the ground bands (outermost are +-inf)
    band_kind: np.ndarray        # [K] ground material index of each band
    lines: np.ndarray            # [L, 4] lane paint: x centre, half width, dashed (0/1), dash phase
    road_end: float              # Z where the street ends (cross-street facade)
    lo: np.ndarray               # [N, 3] box parts, min corner
    hi: np.ndarray               # [N, 3] box parts, max corner
    part_class: np.ndarray       # [N] train id
    part_albedo: np.ndarray      # [N, 3]
    part_instance: np.ndarray    # [N] instance index (-1: stuff)
    part_windows: np.ndarray     # [N, 3] building facade window grid: (spacing, storey, darkness) or 0
    instance_class: np.ndarray   # [M]
    ground_albedo: np.ndarray    # [5, 3]
    sun: np.ndarray              # [3] unit vector towards the sun
    ambient: float
    direct: float
    light: np.ndarray            # [3] global light colour (time of day)
    fog_color: np.ndarray        # [3]
    visibility: float            # metres; fog transmittance exp(-depth / visibility)
    sky_top: np.ndarray          # [3]
    sky_horizon: np.ndarray      # [3]
    weather: int
    time_of_day: int


# ----------------------------------------------------------------------------------------------
# Scene sampling


class _Parts:
    """Accumulates box parts while a scene is sampled; colours are tinted together at the end."""

    def __init__(self):
        self.lo, self.hi, self.cls, self.base, self.spread, self.instance, self.windows = [], [], [], [], [], [], []
        self.instance_class: list[int] = []

    def add(self, lo, hi, cls, base, spread=0.08, instance=-1, windows=(0.0, 0.0, 0.0)):
        self.lo.append(lo)
        self.hi.append(hi)
        self.cls.append(cls)
        self.base.append(base)
        self.spread.append(spread)
        self.instance.append(instance)
        self.windows.append(windows)

    def new_instance(self, cls: int) -> int:
        self.instance_class.append(cls)
        return len(self.instance_class) - 1


def _tint(rng, base, spread) -> np.ndarray:
    """Random per-object variation of base colours [N, 3]: brightness scale and a small hue shift."""
    base, spread = np.asarray(base, float), np.asarray(spread, float)[:, None]
    scale = 1 + rng.uniform(-1, 1, (len(base), 1)) * spread
    shift = rng.uniform(-0.5, 0.5, base.shape) * spread
    return np.clip(base * scale + shift, 0.02, 1.0)


def _pick(rng, colors):
    return colors[rng.integers(len(colors))]


_BUILDING_COLORS = ((0.62, 0.56, 0.48), (0.55, 0.55, 0.57), (0.58, 0.36, 0.28), (0.80, 0.78, 0.72),
                    (0.45, 0.42, 0.40), (0.70, 0.62, 0.45))
_CAR_COLORS = ((0.75, 0.75, 0.78), (0.12, 0.12, 0.13), (0.55, 0.56, 0.58), (0.60, 0.08, 0.07),
               (0.10, 0.18, 0.45), (0.85, 0.85, 0.82), (0.20, 0.32, 0.22), (0.70, 0.55, 0.15))
_SIGN_COLORS = ((0.10, 0.25, 0.70), (0.75, 0.10, 0.08), (0.90, 0.75, 0.10), (0.88, 0.88, 0.88))
_CLOTHES = ((0.15, 0.15, 0.18), (0.45, 0.12, 0.10), (0.12, 0.22, 0.45), (0.55, 0.50, 0.42),
            (0.30, 0.35, 0.30), (0.75, 0.72, 0.68), (0.60, 0.45, 0.15))
_FOLIAGE, _BARK, _GLASS, _METAL = (0.17, 0.32, 0.12), (0.30, 0.22, 0.15), (0.07, 0.08, 0.10), (0.42, 0.42, 0.44)


def _windows(rng) -> tuple[float, float, float]:
    """Facade window grid: horizontal spacing, storey height, brightness factor of the glass."""
    return rng.uniform(2.4, 4.0), rng.uniform(3.0, 3.8), rng.uniform(0.35, 0.65)


def _building_row(rng, parts, side, facade, z0, z1):
    """Facades along one side of the street between z0 and z1; gaps get trees and a backdrop tree line."""
    z = z0
    while z < z1:
        if rng.random() < 0.25:                                    # gap: a small park
            length = rng.uniform(6, 16)
            for _ in range(rng.integers(1, 3)):
                _tree(rng, parts, side * (facade + rng.uniform(1, 6)), rng.uniform(z + 1, z + length - 1))
        else:
            length = rng.uniform(8, 26)
            x_front = side * (facade + rng.uniform(0, 1.5))
            xs = sorted((x_front, x_front + side * rng.uniform(10, 16)))
            parts.add((xs[0], 0, z), (xs[1], rng.uniform(5, 18), z + length - rng.uniform(0, 1.0)), BUILDING,
                      _pick(rng, _BUILDING_COLORS), windows=_windows(rng))
        z += length
    # Backdrop tree line behind the row (seen through gaps and above low buildings).
    x_back = side * (facade + rng.uniform(18, 30))
    xs = sorted((x_back, x_back + side * 8))
    parts.add((xs[0], 0, z0), (xs[1], rng.uniform(7, 13), z1 + 10), VEGETATION, _FOLIAGE)


def _tree(rng, parts, x, z):
    trunk_h = rng.uniform(1.8, 3.2)
    crown = rng.uniform(2.0, 4.5)
    parts.add((x - 0.15, 0, z - 0.15), (x + 0.15, trunk_h + 0.2, z + 0.15), VEGETATION, _BARK)
    parts.add((x - crown / 2, trunk_h, z - crown / 2), (x + crown / 2, trunk_h + rng.uniform(2.0, 4.0), z + crown / 2),
              VEGETATION, _FOLIAGE, 0.15)


def _car(rng, parts, x, z, truck=False) -> float:
    """A car (body + cabin) or a truck (cab + cargo box) centred at lateral x, starting at depth z; its length."""
    if truck:
        inst = parts.new_instance(TRUCK)
        width, length = rng.uniform(2.3, 2.6), rng.uniform(7, 10)
        cab_len = 2.2
        parts.add((x - width / 2, 0.3, z), (x + width / 2, 2.6, z + cab_len), TRUCK, _pick(rng, _CAR_COLORS), 0.08,
                  inst)
        parts.add((x - width / 2, 0.3, z + cab_len + 0.2), (x + width / 2, rng.uniform(3.0, 3.8), z + length), TRUCK,
                  (0.78, 0.78, 0.76), 0.2, inst)
        return length
    inst = parts.new_instance(CAR)
    width, length = rng.uniform(1.7, 2.0), rng.uniform(3.8, 4.9)
    body_top = rng.uniform(0.85, 1.05)
    parts.add((x - width / 2, 0.18, z), (x + width / 2, body_top, z + length), CAR, _pick(rng, _CAR_COLORS), 0.08, inst)
    c0 = z + length * rng.uniform(0.2, 0.3)
    c1 = c0 + length * rng.uniform(0.45, 0.55)
    parts.add((x - width / 2 + 0.1, body_top, c0), (x + width / 2 - 0.1, body_top + rng.uniform(0.4, 0.55), c1), CAR,
              _GLASS, 0.1, inst)
    return length


def _person(rng, parts, x, z):
    inst = parts.new_instance(PERSON)
    height, width, depth = rng.uniform(1.55, 1.95), rng.uniform(0.45, 0.6), rng.uniform(0.3, 0.4)
    legs = height * 0.47
    parts.add((x - width / 2 + 0.05, 0, z), (x + width / 2 - 0.05, legs, z + depth), PERSON, _pick(rng, _CLOTHES),
              0.1, inst)
    parts.add((x - width / 2, legs, z), (x + width / 2, height, z + depth), PERSON, _pick(rng, _CLOTHES), 0.1, inst)


def _lighting(rng, weather: int, time_of_day: int) -> dict:
    """Sun direction, ambient/direct light, light colour, fog and sky colours for the weather and time of day."""
    elevation = {0: rng.uniform(0.5, 1.2), 1: rng.uniform(0.08, 0.3), 2: rng.uniform(0.3, 1.0)}[time_of_day]
    azimuth = rng.uniform(-np.pi, np.pi)
    sun = np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)])
    ambient, direct = {0: (0.45, 0.75), 1: (0.75, 0.25), 2: (0.7, 0.2), 3: (0.8, 0.1)}[weather]
    light = {0: np.array([1.0, 1.0, 1.0]), 1: np.array([1.0, 0.78, 0.55]) * 0.75,
             2: np.array([0.55, 0.6, 0.85]) * 0.42}[time_of_day] * rng.uniform(0.9, 1.1)
    if time_of_day == 2:
        direct *= 0.3                                               # moon / street lights: flat light
    fog_gray = {0: 0.78, 1: 0.70, 2: 0.62, 3: 0.75}[weather]
    fog_color = fog_gray * light + rng.uniform(-0.03, 0.03, 3)
    visibility = {0: rng.uniform(250, 450), 1: rng.uniform(150, 250), 2: rng.uniform(80, 140),
                  3: rng.uniform(35, 70)}[weather]
    if weather == 0:
        sky_top, sky_horizon = np.array([0.25, 0.45, 0.85]), np.array([0.70, 0.80, 0.92])
    else:
        g = rng.uniform(0.6, 0.8)
        sky_top, sky_horizon = np.array([g, g, g + 0.03]) * 0.85, np.array([g, g, g])
    sky_top, sky_horizon = sky_top * light, sky_horizon * light
    if time_of_day == 1:
        sky_horizon = np.clip(sky_horizon * np.array([1.5, 1.0, 0.7]), 0, 1)
    return dict(sun=sun, ambient=ambient, direct=direct, light=light, fog_color=np.clip(fog_color, 0, 1),
                visibility=visibility, sky_top=sky_top, sky_horizon=sky_horizon)


def sample_scene(seed: int, index: int) -> Scene:
    """Samples the world of scene (`seed`, `index`); independent of the image resolution."""
    rng = np.random.default_rng([seed, index])
    camera = Camera(height=rng.uniform(1.3, 1.7), pitch=np.deg2rad(rng.uniform(-1.0, 3.0)))
    weather = int(rng.choice(4, p=[0.45, 0.25, 0.15, 0.15]))
    time_of_day = int(rng.choice(3, p=[0.6, 0.2, 0.2]))

    # Street cross-section (X), camera in one of the lanes, shifted so the camera is at X = 0.
    lane_w = rng.uniform(3.0, 3.8)
    num_lanes = int(rng.integers(2, 5))
    x0 = -(rng.integers(num_lanes) + 0.5) * lane_w - rng.uniform(-0.4, 0.4)
    road = (x0, x0 + num_lanes * lane_w)
    edges, kinds, facades = [road[0], road[1]], [_G_ROAD], []
    for side, curb in ((-1, road[0]), (1, road[1])):
        x = curb
        for kind, width in ((_G_VERGE, rng.uniform(1, 2.5) if rng.random() < 0.3 else 0),
                            (_G_SIDEWALK, rng.uniform(2, 4.5)),
                            (_G_YARD, rng.uniform(1, 6) if rng.random() < 0.3 else 0)):
            if width == 0:
                continue
            x += side * width
            edges.append(x)
            if side < 0:
                kinds.insert(0, kind)
            else:
                kinds.append(kind)
        facades.append(abs(x))
    kinds = [_G_YARD] + kinds + [_G_YARD]
    bands = np.array([-np.inf] + sorted(edges) + [np.inf])
    sw_idx = [i for i, k in enumerate(kinds) if k == _G_SIDEWALK]
    sidewalk = {-1: (bands[sw_idx[0]], bands[sw_idx[0] + 1]), 1: (bands[sw_idx[-1]], bands[sw_idx[-1] + 1])}

    lines = [(road[0] + 0.3, 0.08, 0, 0.0), (road[1] - 0.3, 0.08, 0, 0.0)]
    phase = rng.uniform(0, 12)
    for k in range(1, num_lanes):
        lines.append((road[0] + k * lane_w, 0.07, 1, phase))
    road_end = rng.uniform(45, 95)

    parts = _Parts()
    for side, facade in zip((-1, 1), facades):
        _building_row(rng, parts, side, facade, -10.0, road_end)
    # Cross street: facades closing the view at road_end.
    x = -150.0
    while x < 150:
        width = rng.uniform(10, 30)
        if rng.random() < 0.2:
            parts.add((x, 0, road_end + 2), (x + width, rng.uniform(6, 12), road_end + 10), VEGETATION, _FOLIAGE)
        else:
            parts.add((x, 0, road_end), (x + width, rng.uniform(6, 22), road_end + 12), BUILDING,
                      _pick(rng, _BUILDING_COLORS), windows=_windows(rng))
        x += width

    # Poles (with signs) and trees along the curbs.
    for side in (-1, 1):
        lo, hi = sorted(sidewalk[side])
        z = rng.uniform(2, 15)
        while z < road_end - 5:
            xp = (lo + 0.5) if side > 0 else (hi - 0.5)
            if rng.random() < 0.55:
                height = rng.uniform(4, 8.5)
                w = rng.uniform(0.22, 0.4)
                parts.add((xp - w / 2, 0, z - w / 2), (xp + w / 2, height, z + w / 2), POLE, _METAL)
                if rng.random() < 0.5:
                    sw, sh = rng.uniform(0.7, 1.1), rng.uniform(0.7, 1.1)
                    top = rng.uniform(2.2, height - 0.2)
                    sx = xp - side * (sw / 2 + w / 2) if rng.random() < 0.5 else xp
                    parts.add((sx - sw / 2, top - sh, z - w / 2 - 0.06), (sx + sw / 2, top, z - w / 2), TRAFFIC_SIGN,
                              _pick(rng, _SIGN_COLORS))
            else:
                _tree(rng, parts, xp + side * rng.uniform(0, 0.5), z)
            z += rng.uniform(8, 22)
        if rng.random() < 0.35:                                     # a hedge along the back of the sidewalk
            hx = (hi - 0.5) if side > 0 else (lo + 0.5)
            z0 = rng.uniform(0, 20)
            parts.add((hx - 0.4, 0, z0), (hx + 0.4, rng.uniform(0.7, 1.5), z0 + rng.uniform(6, 25)), VEGETATION,
                      _FOLIAGE, 0.15)

    # Vehicles per lane; the camera's own lane starts further ahead.
    for k in range(num_lanes):
        xc = road[0] + (k + 0.5) * lane_w
        z = rng.uniform(7, 25) if abs(xc) < lane_w / 2 else rng.uniform(2.5, 25)
        while z < road_end - 6 and rng.random() < 0.75:
            truck = rng.random() < 0.12
            length = _car(rng, parts, xc + rng.uniform(-0.35, 0.35), z, truck)
            z += length + rng.uniform(5, 25)
    # Pedestrians: on sidewalks and a few crossing the road.
    for _ in range(rng.integers(1, 7)):
        side = -1 if rng.random() < 0.5 else 1
        lo, hi = sorted(sidewalk[side])
        _person(rng, parts, rng.uniform(lo + 0.4, hi - 0.4), rng.uniform(4, min(35, road_end - 3)))
    if rng.random() < 0.25:
        for _ in range(rng.integers(1, 4)):
            _person(rng, parts, rng.uniform(road[0] + 0.5, road[1] - 0.5), rng.uniform(8, min(35, road_end - 3)))

    ground_albedo = _tint(rng, [(0.32, 0.32, 0.34), (0.88, 0.88, 0.84), (0.58, 0.55, 0.52), (0.30, 0.42, 0.16),
                                (0.34, 0.40, 0.18)], [0.15, 0.04, 0.12, 0.15, 0.15])
    if weather == 2:                                                # wet road: darker
        ground_albedo[[_G_ROAD, _G_SIDEWALK]] *= 0.75
    return Scene(camera=camera, bands=bands, band_kind=np.array(kinds), lines=np.array(lines), road_end=road_end,
                 lo=np.array(parts.lo, float), hi=np.array(parts.hi, float),
                 part_class=np.array(parts.cls, np.uint8), part_albedo=_tint(rng, parts.base, parts.spread),
                 part_instance=np.array(parts.instance, np.int32), part_windows=np.array(parts.windows, float),
                 instance_class=np.array(parts.instance_class, np.int32), ground_albedo=ground_albedo,
                 weather=weather, time_of_day=time_of_day, **_lighting(rng, weather, time_of_day))


# ----------------------------------------------------------------------------------------------
# Rendering


def _check_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or value < _MIN_SIZE:
            raise ValueError(f"synthetic scenes: {name} must be an int >= {_MIN_SIZE}, got {value!r}")


_CORNERS = np.stack(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij"), -1).reshape(8, 3).astype(bool)


def _screen_rects(scene: Scene, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per box part: pixel rectangle (r0, r1, c0, c1) containing its visible pixels [N, 4], whether it reaches
    behind the camera [N], and whether its projection leaves the image (truncation) [N]."""
    cam = scene.camera
    lo, hi = scene.lo.copy(), scene.hi.copy()
    uv, z = cam.project(np.where(_CORNERS, hi[:, None], lo[:, None]), height, width)
    behind = (z <= 0.05).any(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        outside = behind | (uv < 0).any((1, 2)) | (uv[..., 0] > width).any(1) | (uv[..., 1] > height).any(1)
    # Only the part with camera z >= |X| / tan(hfov / 2) can be in view: clip the box's near Z to it.
    s, c = np.sin(cam.pitch), np.cos(cam.pitch)
    lateral = np.maximum(0, np.maximum(lo[:, 0], -hi[:, 0]))
    drop = np.minimum((lo[:, 1] - cam.height) * s, (hi[:, 1] - cam.height) * s)
    lo[:, 2] = np.maximum(lo[:, 2], (0.999 * lateral / np.tan(cam.hfov / 2) + drop) / c)
    uv, z = cam.project(np.where(_CORNERS, hi[:, None], lo[:, None]), height, width)
    in_front = (z > 0.05).all(1)
    with np.errstate(invalid="ignore"):
        c0, c1 = np.floor(uv[..., 0].min(1)), np.ceil(uv[..., 0].max(1))
        r0, r1 = np.floor(uv[..., 1].min(1)), np.ceil(uv[..., 1].max(1))
    # Still reaching behind the camera: bound by the image half the part lies in (the camera has no yaw).
    c0 = np.where(in_front, c0, np.where(lo[:, 0] > 0, width // 2, 0))
    c1 = np.where(in_front, c1, np.where(hi[:, 0] < 0, width - width // 2, width))
    r0, r1 = np.where(in_front, r0, 0), np.where(in_front, r1, height)
    rects = np.stack([np.clip(r0, 0, height), np.clip(r1, 0, height), np.clip(c0, 0, width), np.clip(c1, 0, width)], 1)
    rects[lo[:, 2] >= hi[:, 2]] = 0
    return rects.astype(np.int64), behind, outside


def _clip_segment(a: np.ndarray, b: np.ndarray, width: int, height: int) -> tuple[float, float] | None:
    """Liang-Barsky: the parameter interval of segment a->b inside [0, width] x [0, height], or None."""
    t0, t1 = 0.0, 1.0
    d = b - a
    for p, q in ((-d[0], a[0]), (d[0], width - a[0]), (-d[1], a[1]), (d[1], height - a[1])):
        if p == 0:
            if q < 0:
                return None
            continue
        r = q / p
        if p < 0:
            t0 = max(t0, r)
        else:
            t1 = min(t1, r)
    return (t0, t1) if t0 < t1 else None


def _lanes(scene: Scene, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Lane lines as [L, LANE_POINTS, 2] pixel polylines (the part inside the image) and their classes."""
    cam = scene.camera
    s, c = np.sin(cam.pitch), np.cos(cam.pitch)
    z_near = max((0.5 - cam.height * s) / c, 0.1)       # ground points at least 0.5 m in front of the camera
    polylines, classes = [], []
    for x, _, dashed, _ in scene.lines:
        ends = np.array([[x, 0.0, z_near], [x, 0.0, scene.road_end]])
        uv, _ = cam.project(ends, height, width)
        span = _clip_segment(uv[0], uv[1], width, height)
        if span is None:
            continue
        t = np.linspace(span[0], span[1], LANE_POINTS)[:, None]
        polylines.append(uv[0] + t * (uv[1] - uv[0]))
        classes.append(int(dashed))
    return (np.array(polylines, np.float32).reshape(-1, LANE_POINTS, 2), np.array(classes, np.int32))


_NOISE_TILE = 1024


@functools.lru_cache(maxsize=1)
def _noise_tiles() -> tuple[np.ndarray, np.ndarray]:
    """Fixed fine (per pixel) and coarse (blotchy, 4-pixel correlated) unit-variance noise tiles."""
    rng = np.random.default_rng(20261125)
    fine = rng.standard_normal((_NOISE_TILE, _NOISE_TILE), np.float32)
    small = rng.standard_normal((_NOISE_TILE // 4, _NOISE_TILE // 4), np.float32)
    coarse = np.asarray(Image.fromarray(small).resize((_NOISE_TILE, _NOISE_TILE), Image.BILINEAR))
    return fine, coarse / coarse.std()


def _noise_crop(tile: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random [height, width] window of a noise tile (wrapping around when the image is larger)."""
    r, c = rng.integers(_NOISE_TILE, size=2)
    if r + height <= _NOISE_TILE and c + width <= _NOISE_TILE:
        return tile[r:r + height, c:c + width]
    return tile.take(r + np.arange(height), 0, mode="wrap").take(c + np.arange(width), 1, mode="wrap")


def _ground_material(scene: Scene, t: np.ndarray, dx: np.ndarray, gz: np.ndarray, width: int) -> np.ndarray:
    """Material index of the ground rows (ray parameters `t` [Hg]): X bands and lane paint.

    Along a row the ground X = t * dx is increasing, so band and paint edges are found per row by a
    search over the columns; the per-pixel work is one cumulative sum.
    """
    rows = np.arange(len(t))
    band_marks = np.zeros((len(t), width + 1), np.int8)
    edges = np.searchsorted(dx, scene.bands[None, 1:-1] / t[:, None])                # [Hg, K-1]
    for k in range(edges.shape[1]):
        band_marks[rows, edges[:, k]] += 1
    paint_marks = np.zeros((len(t), width + 1), np.int8)
    for x, half, dashed, phase in scene.lines:
        on = gz < scene.road_end
        if dashed:
            on &= np.mod(gz + phase, 12.0) < 4.0
        lo, hi = np.searchsorted(dx, np.array([x - half, x + half])[None, :] / t[on, None]).T
        paint_marks[rows[on], lo] += 1
        paint_marks[rows[on], hi] -= 1
    code = 2 * np.cumsum(band_marks[:, :width], 1, dtype=np.int8) + np.cumsum(paint_marks[:, :width], 1, dtype=np.int8)
    kinds = scene.band_kind
    table = np.stack([kinds, np.where(kinds == _G_ROAD, _G_PAINT, kinds)], 1).reshape(-1)
    return table.take(code)


def render(scene: Scene, height: int, width: int, noise_seed: int | list[int] = 0) -> dict:
    """Ray-casts `scene` at `height` x `width`; returns the example dict (see `render_scene`).

    `noise_seed` picks the texture and sensor noise (the only part of the image that is not a function of
    the scene); labels, depth, boxes and lanes do not depend on it.
    """
    _check_size(height, width)
    cam = scene.camera
    f = cam.focal(width)
    s, c = np.sin(cam.pitch), np.cos(cam.pitch)
    u = (np.arange(width) + 0.5 - width / 2) / f                       # camera x / z per column
    v = (np.arange(height) + 0.5 - height / 2) / f                     # camera y / z per row
    # World ray directions scaled so that the camera-z component is 1: the ray parameter is the z-depth.
    dx, dy, dz = u, -c * v - s, c - s * v
    dx = np.where(dx == 0, 1e-9, dx)
    dy = np.where(dy == 0, 1e-9, dy)
    n_ground, n_parts = len(scene.ground_albedo), len(scene.lo)
    sky_material = n_ground + n_parts

    depth = np.full((height, width), np.inf, np.float32)
    material = np.full((height, width), sky_material, np.int32)
    face = np.full((height, width), 2, np.uint8)                       # ground: an upward face
    g0 = int(np.searchsorted(-dy, 0.0, side="right"))                  # rows below the horizon see the ground
    if g0 < height:
        t = cam.height / -dy[g0:]
        depth[g0:] = t[:, None]
        material[g0:] = _ground_material(scene, t, dx, t * dz[g0:], width)

    # Box parts: slab intersections, tested only inside each part's screen rectangle.
    rects, behind, outside = _screen_rects(scene, height, width)
    with np.errstate(divide="ignore", invalid="ignore"):
        slab = []
        for axis, (d, origin) in enumerate(((dx, 0.0), (dy, cam.height), (dz, 0.0))):
            ts = (np.stack([scene.lo[:, axis], scene.hi[:, axis]], 1)[:, :, None] - origin) / d
            slab.append((ts.min(1).astype(np.float32), ts.max(1).astype(np.float32)))
    (x_near, x_far), (y_near, y_far), (z_near, z_far) = slab
    yz_near, yz_far = np.maximum(y_near, z_near), np.minimum(y_far, z_far)
    # Face codes (index into the lambert table of _shade_image): X faces 0/1 seen from the left/right
    # half of the image, Y faces 2 (top) / 3 (bottom), Z faces 4.
    yz_face = np.where(y_near >= z_near, np.where(dy < 0, 2, 3)[None, :], 4).astype(np.uint8)
    x_face = (dx > 0).astype(np.uint8)
    inst_rects, full_masks = _instance_rects(scene, rects)
    for i in np.flatnonzero((rects[:, 0] < rects[:, 1]) & (rects[:, 2] < rects[:, 3])):
        r0, r1, c0, c1 = rects[i]
        xn, yzn = x_near[i, c0:c1], yz_near[i, r0:r1, None]
        t_near = np.maximum(xn, yzn)
        hit = t_near <= np.minimum(x_far[i, c0:c1], yz_far[i, r0:r1, None])
        if behind[i]:
            hit &= t_near > 0
        k = scene.part_instance[i]
        if k >= 0:
            kr = inst_rects[k]
            full_masks[k][r0 - kr[0]:r1 - kr[0], c0 - kr[2]:c1 - kr[2]] |= hit
        depth_win = depth[r0:r1, c0:c1]
        hit &= t_near < depth_win
        np.copyto(depth_win, t_near, where=hit)
        np.copyto(material[r0:r1, c0:c1], n_ground + i, where=hit)
        np.copyto(face[r0:r1, c0:c1], np.where(xn < yzn, yz_face[i, r0:r1, None], x_face[c0:c1]), where=hit)

    sky = material == sky_material
    np.copyto(depth, 0.0, where=sky)
    label = np.concatenate([_GROUND_CLASSES, scene.part_class, [SKY]]).astype(np.uint8).take(material)
    part_pixels = np.bincount(material.reshape(-1), minlength=sky_material + 1)[n_ground:sky_material]
    image = _shade_image(scene, label, material, face, depth, sky, (dx, dy, dz), noise_seed)
    boxes, box_classes, box_occluded = _instance_boxes(scene, part_pixels, outside, inst_rects, full_masks)
    lanes, lane_classes = _lanes(scene, height, width)
    return dict(image=image, semseg=label, depth=depth, boxes=boxes, box_classes=box_classes,
                box_occluded=box_occluded, lanes=lanes, lane_classes=lane_classes,
                weather=np.int32(scene.weather), time_of_day=np.int32(scene.time_of_day),
                scene=np.int32(len(scene.lines) - 3), intrinsics=cam.intrinsics(height, width))


def _instance_rects(scene: Scene, rects: np.ndarray) -> tuple[dict, dict]:
    """Per instance: the union of its parts' screen rectangles and an empty silhouette mask over it."""
    inst_rects = {}
    for i in np.flatnonzero(scene.part_instance >= 0):
        r = rects[i]
        if r[0] >= r[1] or r[2] >= r[3]:
            continue
        k = scene.part_instance[i]
        if k in inst_rects:
            q = inst_rects[k]
            r = np.array([min(q[0], r[0]), max(q[1], r[1]), min(q[2], r[2]), max(q[3], r[3])])
        inst_rects[k] = r
    return inst_rects, {k: np.zeros((r[1] - r[0], r[3] - r[2]), bool) for k, r in inst_rects.items()}


def _facade_detail(scene: Scene, label, material, face, depth, rays) -> np.ndarray:
    """Brightness factor of facade windows (1 elsewhere), from each building pixel's 3D hit point."""
    detail = np.ones(depth.shape, np.float32)
    rows, cols = np.flatnonzero((label == BUILDING).any(1)), np.flatnonzero((label == BUILDING).any(0))
    if len(rows) == 0:
        return detail
    win = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    dx, dy, dz = rays
    t = depth[win]
    grid = np.concatenate([np.zeros((len(scene.ground_albedo), 3)), scene.part_windows, np.zeros((1, 3))])
    spacing, storey, glass = (grid[:, j].astype(np.float32).take(material[win]) for j in range(3))
    hy = (scene.camera.height + t * dy[win[0], None].astype(np.float32)) / np.maximum(storey, 1e-3)
    along = np.where(face[win] <= 1, t * dz[win[0], None].astype(np.float32),
                     t * dx[None, win[1]].astype(np.float32)) / np.maximum(spacing, 1e-3)
    hy_frac, along_frac = hy - np.floor(hy), along - np.floor(along)
    window = ((spacing > 0) & (along_frac > 0.25) & (along_frac < 0.7) & (hy_frac > 0.35) & (hy_frac < 0.8)
              & (hy * storey > 2.5))
    detail[win] = np.where(window, glass, 1.0)
    return detail


def _shade_image(scene, label, material, face, depth, sky, rays, noise_seed) -> np.ndarray:
    """Albedo x sun shading x texture, fogged with distance; sky gradient; sensor noise -> uint8 [H, W, 3]."""
    height, width = depth.shape
    dy = rays[1]
    rng = np.random.default_rng(noise_seed)
    fine, coarse = _noise_tiles()
    texture = 0.6 * _noise_crop(fine, rng, height, width) + 0.8 * _noise_crop(coarse, rng, height, width)
    sun = scene.sun
    normals = np.array([[-1, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, -1]], np.float32)
    lambert = np.maximum(normals @ sun.astype(np.float32), 0).take(face)
    amp = np.zeros(256, np.float32)
    amp[list(_TEXTURE)] = list(_TEXTURE.values())
    lit = ((scene.ambient + scene.direct * lambert) * _facade_detail(scene, label, material, face, depth, rays)
           * (1 + amp.take(label) * texture))
    transmittance = np.exp(depth / np.float32(-scene.visibility))
    lit *= transmittance
    haze = 1 - transmittance
    elevation = (np.clip(-dy / np.sqrt(1 + dy ** 2), 0, 1) ** 0.6)[:, None].astype(np.float32)
    clouds = 1 + (0.06 * coarse[:height, :width] if scene.weather != 0 else 0)
    sensor = _noise_crop(fine, rng, height, width) * np.float32(0.015)
    streaks = None
    if scene.weather == 2:                                          # rain: short bright vertical streaks
        streaks = _noise_crop(fine, rng, height, width) > 2.65
        for shift in range(1, max(2, height // 40)):
            streaks[shift:] |= streaks[:-shift]
    palette = np.concatenate([scene.ground_albedo, scene.part_albedo, np.zeros((1, 3))]).astype(np.float32)
    image = np.empty((height, width, 3), np.uint8)
    for ch in range(3):
        color = (palette[:, ch].take(material) * lit * np.float32(scene.light[ch])
                 + np.float32(scene.fog_color[ch]) * haze)
        sky_color = (scene.sky_horizon[ch] + (scene.sky_top[ch] - scene.sky_horizon[ch]) * elevation) * clouds
        color = np.where(sky, sky_color, color) + sensor
        if streaks is not None:
            color = np.where(streaks, color * 0.6 + 0.34, color)
        image[..., ch] = np.clip(color * 255 + 0.5, 0, 255)
    return image


def _instance_boxes(scene, part_pixels, part_outside, inst_rects, full_masks):
    """2D boxes (x1, y1, x2, y2) of the instances' unoccluded silhouettes, classes and occlusion flags."""
    boxes, classes, occluded = [], [], []
    for k, (r0, _, c0, _) in sorted(inst_rects.items()):
        parts = scene.part_instance == k
        visible, mask = part_pixels[parts].sum(), full_masks[k]
        if visible == 0:
            continue
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        boxes.append((c0 + cols[0], r0 + rows[0], c0 + cols[-1] + 1, r0 + rows[-1] + 1))
        classes.append(scene.instance_class[k])
        occluded.append(bool(part_outside[parts].any()) or visible / mask.sum() < OCCLUDED_BELOW)
    return (np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int32), np.array(occluded, bool))


def render_scene(seed: int, index: int, height: int, width: int) -> dict:
    """Renders scene (`seed`, `index`) at `height` x `width`.

    Returns image uint8 [H, W, 3]; semseg uint8 [H, W] (train ids); depth float32 [H, W] (metres along the
    optical axis, 0 for sky); boxes float32 [N, 4] (x1, y1, x2, y2 pixels of the unoccluded silhouette, inside
    the image); box_classes int32 [N]; box_occluded bool [N] (visible fraction < 0.7 or truncated);
    lanes float32 [L, LANE_POINTS, 2] (pixel polylines inside the image); lane_classes int32 [L]
    (index into LANE_CLASSES); weather, time_of_day, scene int32 scalars (indices into WEATHERS, TIMES_OF_DAY,
    SCENE_TYPES: the scene type follows the number of lanes, 2 to 4);
    intrinsics float32 [3, 3].
    """
    _check_size(height, width)
    return render(sample_scene(seed, index), height, width, noise_seed=[seed, index, height, width])


class SyntheticScenes:
    """grain RandomAccessDataSource of rendered scenes; 'train' and 'val' draw from disjoint scene seeds."""

    def __init__(self, split: str, num_examples: int, height: int, width: int, seed: int = 0):
        if split not in _SPLIT_SEED_OFFSET:
            raise ValueError(f"SyntheticScenes: unknown split {split!r}; expected one of {sorted(_SPLIT_SEED_OFFSET)}")
        if not isinstance(num_examples, (int, np.integer)) or num_examples <= 0:
            raise ValueError(f"SyntheticScenes: num_examples must be a positive int, got {num_examples!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"SyntheticScenes: seed must be a non-negative int, got {seed!r}")
        _check_size(height, width)
        self.split, self.num_examples, self.seed = split, int(num_examples), seed
        self.height, self.width = height, width
        self.scene_seed = 2 * seed + _SPLIT_SEED_OFFSET[split]

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"SyntheticScenes({self.split!r}) index {index} out of range [0, {self.num_examples})")
        return render_scene(self.scene_seed, int(index), self.height, self.width)

    def __repr__(self) -> str:
        return (f"SyntheticScenes(split={self.split!r}, num_examples={self.num_examples}, height={self.height}, "
                f"width={self.width}, seed={self.seed})")
