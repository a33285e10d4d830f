"""Pictures: Cityscapes colours, coloured depth, a PNG grid of predictions, training curves.

Everything is numpy + PIL; curves use matplotlib's Agg canvas directly (no pyplot, no display).
Files are written atomically: to a temporary file in the same folder, then `os.replace`.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxvision.fileio import atomic_path

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

# Official Cityscapes colours of the 19 train ids (cityscapesScripts labels.py); other ids render black.
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)
CITYSCAPES_PALETTE.setflags(write=False)

DEPTH_COLORMAP = "plasma"  # its darkest colour is blue, so invalid (black) pixels stay distinguishable

# prediction grid layout, in pixels
GRID_COLUMNS = ("input", "predicted seg", "true seg", "predicted depth", "true depth")
GRID_PAD = 4
GRID_TITLE_HEIGHT = 20
GRID_MAX_TILE_WIDTH = 512


def colorize_semseg(labels) -> np.ndarray:
    """[H,W] train ids -> uint8 [H,W,3] Cityscapes colours (ignore 255 and unknown ids -> black)."""
    labels = np.asarray(labels)
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(CITYSCAPES_PALETTE)] = CITYSCAPES_PALETTE
    in_range = (labels >= 0) & (labels < 256)
    return lut[np.where(in_range, labels, 255).astype(np.int64)]


def _depth_range(*depths) -> tuple[float, float]:
    """(min, max) over the valid (> 0, finite) pixels of the first array that has some; (1, 100) otherwise."""
    for depth in depths:
        depth = np.asarray(depth, np.float64)
        valid = depth[(depth > 0) & np.isfinite(depth)]
        if valid.size:
            return float(valid.min()), float(valid.max())
    return 1.0, 100.0


def colorize_depth(depth, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """[H,W] metres -> uint8 [H,W,3]: colormap on inverse depth (near = bright), invalid (<= 0) black.

    vmin/vmax (metres) default to this image's valid range; pass the same pair for a prediction
    and its ground truth so their colours compare.
    """
    from matplotlib import colormaps

    depth = np.asarray(depth, np.float64)
    valid = (depth > 0) & np.isfinite(depth)
    lo, hi = _depth_range(depth)
    vmin = lo if vmin is None else float(vmin)
    vmax = hi if vmax is None else float(vmax)
    if not 0 < vmin <= vmax:
        raise ValueError(f"colorize_depth: need 0 < vmin <= vmax, got vmin={vmin}, vmax={vmax}")
    inv = 1.0 / np.where(valid, depth, vmax)
    span = 1.0 / vmin - 1.0 / vmax
    t = np.clip((inv - 1.0 / vmax) / span, 0.0, 1.0) if span > 0 else np.ones_like(inv)
    rgb = (colormaps[DEPTH_COLORMAP](t)[..., :3] * 255.0 + 0.5).astype(np.uint8)
    return np.where(valid[..., None], rgb, 0).astype(np.uint8)


def _to_uint8_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_prediction_grid(path: str, images, pred_semseg, gt_semseg, pred_depth, gt_depth, max_rows: int = 4) -> None:
    """PNG with one row per example: input | predicted seg | true seg | predicted depth | true depth.

    images [B,H,W,3] float in [0,1] (or uint8); semseg [B,H,W] train ids; depth [B,H,W] metres. Each
    row's depth colours share the ground truth's range. Tiles wider than GRID_MAX_TILE_WIDTH are
    shrunk. Layout: GRID_TITLE_HEIGHT px of column titles, then tiles separated by GRID_PAD px.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"save_prediction_grid: images must be [B,H,W,3], got {images.shape}")
    rows = min(len(images), max_rows)
    if rows < 1:
        raise ValueError("save_prediction_grid: no examples to draw")
    height, width = images.shape[1:3]
    scale = min(1.0, GRID_MAX_TILE_WIDTH / width)
    tile_w, tile_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = Image.new("RGB", (len(GRID_COLUMNS) * (tile_w + GRID_PAD) + GRID_PAD,
                               GRID_TITLE_HEIGHT + rows * (tile_h + GRID_PAD)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for col, title in enumerate(GRID_COLUMNS):
        draw.text((GRID_PAD + col * (tile_w + GRID_PAD), 4), title, fill="black", font=font)
    for row in range(rows):
        vmin, vmax = _depth_range(gt_depth[row], pred_depth[row])
        tiles = (
            (_to_uint8_image(images[row]), Image.BILINEAR),
            (colorize_semseg(pred_semseg[row]), Image.NEAREST),
            (colorize_semseg(gt_semseg[row]), Image.NEAREST),
            (colorize_depth(pred_depth[row], vmin, vmax), Image.NEAREST),
            (colorize_depth(gt_depth[row], vmin, vmax), Image.NEAREST),
        )
        for col, (tile, resample) in enumerate(tiles):
            if tile.shape[:2] != (height, width):
                raise ValueError(f"save_prediction_grid: {GRID_COLUMNS[col]} of example {row} is "
                                 f"{tile.shape[:2]}, expected {(height, width)}")
            picture = Image.fromarray(tile)
            if (tile_w, tile_h) != (width, height):
                picture = picture.resize((tile_w, tile_h), resample)
            canvas.paste(picture, (GRID_PAD + col * (tile_w + GRID_PAD), GRID_TITLE_HEIGHT + row * (tile_h + GRID_PAD)))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


FACE_TILE = 192          # face crops are drawn at this size
FACE_TEXT_HEIGHT = 40   # two lines of text under each face


def _face_caption(pred: dict, true: dict, i: int) -> list[str]:
    """Two lines: eyes / mouth / distraction as predicted (true), and the head pose in degrees."""
    from jaxvision.data.face_landmarks import DISTRACTION_CLASSES, MOUTH_LEVELS  # noqa: PLC0415
    eyes = "".join("o" if p > 0.5 else "-" for p in pred["eyes"][i])
    eyes_true = "".join("o" if t > 0.5 else "-" for t in true["eyes"][i])
    mouth, distraction = MOUTH_LEVELS[int(np.argmax(pred["mouth"][i]))], DISTRACTION_CLASSES[int(np.argmax(
        pred["distraction"][i]))]
    pose = " ".join(f"{np.degrees(v):+.0f}" for v in pred["head_pose"][i])
    pose_true = " ".join(f"{np.degrees(v):+.0f}" for v in true["head_pose"][i])
    return [f"eyes {eyes}({eyes_true}) {mouth[:4]}({MOUTH_LEVELS[int(true['mouth'][i])][:4]}) "
            f"{distraction[:5]}({DISTRACTION_CLASSES[int(true['distraction'][i])][:5]})",
            f"ypr {pose} ({pose_true})"]


def save_face_grid(path: str, images, pred: dict, true: dict, max_images: int = 16, columns: int = 4) -> None:
    """PNG grid of face crops: predicted landmarks in green, true ones in red, and under each face the
    predicted (true) eyes (o open, - closed/hidden; left visible, left open, right visible, right open),
    mouth level, distraction class and yaw / pitch / roll in degrees.

    images [B,H,W,3] in [0,1]; pred / true: 'landmarks' [B,98,2] in [0,1], 'eyes' [B,4] probabilities / labels,
    'mouth' and 'distraction' probabilities [B,3] / class ids [B], 'head_pose' [B,3] radians.
    """
    images = np.asarray(images)
    count = min(len(images), max_images)
    if count < 1:
        raise ValueError("save_face_grid: no faces to draw")
    pred = {k: np.asarray(v) for k, v in pred.items()}
    rows, cols = -(-count // columns), min(columns, count)
    cell_w, cell_h = FACE_TILE + GRID_PAD, FACE_TILE + FACE_TEXT_HEIGHT + GRID_PAD
    canvas = Image.new("RGB", (cols * cell_w + GRID_PAD, rows * cell_h + GRID_PAD), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i in range(count):
        x0, y0 = GRID_PAD + (i % columns) * cell_w, GRID_PAD + (i // columns) * cell_h
        face = Image.fromarray(_to_uint8_image(images[i])).resize((FACE_TILE, FACE_TILE), Image.BILINEAR)
        canvas.paste(face, (x0, y0))
        for points, colour in ((true["landmarks"][i], (230, 40, 40)), (pred["landmarks"][i], (40, 220, 40))):
            for x, y in np.asarray(points) * FACE_TILE:
                draw.ellipse((x0 + x - 1.5, y0 + y - 1.5, x0 + x + 1.5, y0 + y + 1.5), fill=colour)
        for line, text in enumerate(_face_caption(pred, true, i)):
            draw.text((x0, y0 + FACE_TILE + 2 + 14 * line), text, fill="black", font=font)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


SCENE_TILE_WIDTH = 384    # driving scenes are drawn this wide
LANE_COLOURS = ((255, 220, 0), (0, 200, 255), (255, 120, 0), (180, 90, 255), (0, 255, 140), (255, 60, 160),
                (140, 255, 0), (255, 255, 255))


def draw_scene(image, boxes, classes, lanes, lane_classes, class_names, occluded=None, scores=None) -> Image.Image:
    """The scene `image` ([H, W, 3], [0, 1] or uint8) with boxes (x1, y1, x2, y2 pixels; dashed outline when
    occluded, the score after the class name) and lane polylines coloured by lane class, drawn at
    SCENE_TILE_WIDTH pixels wide."""
    picture = Image.fromarray(_to_uint8_image(image))
    scale = SCENE_TILE_WIDTH / picture.width
    picture = picture.resize((SCENE_TILE_WIDTH, round(picture.height * scale)), Image.BILINEAR)
    draw = ImageDraw.Draw(picture)
    for lane, lane_class in zip(lanes, lane_classes):
        points = [tuple(p) for p in np.asarray(lane, np.float64) * scale]
        draw.line(points, fill=LANE_COLOURS[int(lane_class) % len(LANE_COLOURS)], width=2)
    for i, (box, cls) in enumerate(zip(np.asarray(boxes).reshape(-1, 4) * scale, classes)):
        colour = tuple(int(c) for c in CITYSCAPES_PALETTE[(3 * int(cls) + 11) % len(CITYSCAPES_PALETTE)])
        draw.rectangle(tuple(box), outline=colour, width=1 if occluded is not None and occluded[i] > 0.5 else 2)
        label = class_names[int(cls)] + ("" if scores is None else f" {scores[i]:.2f}")
        draw.text((box[0] + 2, box[1] + 1), label, fill=colour)
    return picture


def save_scene_grid(path: str, images, predictions: list[dict], truths: list[dict], class_names, score_threshold,
                    max_rows: int = 4) -> None:
    """PNG grid, one row per image: predicted boxes (score >= `score_threshold`) and lanes | ground truth.

    predictions / truths: per image {'boxes', 'classes', 'occluded', 'lanes', 'lane_classes'} (+ 'scores')."""
    count = min(len(images), len(predictions), max_rows)
    if count < 1:
        raise ValueError("save_scene_grid: no scenes to draw")
    tiles = []
    for i in range(count):
        pred, true = predictions[i], truths[i]
        keep = np.asarray(pred["scores"]) >= score_threshold
        tiles.append((draw_scene(images[i], pred["boxes"][keep], pred["classes"][keep], pred["lanes"],
                                 pred["lane_classes"], class_names, pred["occluded"][keep], pred["scores"][keep]),
                      draw_scene(images[i], true["boxes"], true["classes"], true["lanes"], true["lane_classes"],
                                 class_names, true["occluded"])))
    tile_w, tile_h = tiles[0][0].size
    canvas = Image.new("RGB", (2 * tile_w + 3 * GRID_PAD, GRID_TITLE_HEIGHT + count * (tile_h + GRID_PAD)), "white")
    draw = ImageDraw.Draw(canvas)
    for col, title in enumerate(("predicted", "ground truth")):
        draw.text((GRID_PAD + col * (tile_w + GRID_PAD), 4), title, fill="black")
    for row, pair in enumerate(tiles):
        for col, picture in enumerate(pair):
            canvas.paste(picture, (GRID_PAD + col * (tile_w + GRID_PAD), GRID_TITLE_HEIGHT + row * (tile_h + GRID_PAD)))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def _read_jsonl(path: str) -> list[dict]:
    """Rows of a metrics.jsonl; a last line cut short (a writer mid-append) is skipped."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"plot_training_curves: {path} does not exist (train first)")
    with open(path) as f:
        lines = f.read().split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines):  # no trailing newline yet
                break
            raise ValueError(f"{path}:{number}: not a JSON object ({e})") from None
    return [row for row in rows if isinstance(row, dict) and "step" in row]


def _series(rows: list[dict], key: str) -> tuple[list, list]:
    points = [(row["step"], row[key]) for row in rows
              if isinstance(row.get(key), (int, float)) and np.isfinite(row[key])]
    return [s for s, _ in points], [v for _, v in points]


_EVAL_FIRST = ("eval/total", "eval/semseg", "eval/depth", "eval/miou", "eval/silog_rmse")


def plot_training_curves(metrics_jsonl_path: str, out_png: str) -> None:
    """Plots train losses, learning rate and each eval metric of a metrics.jsonl against step.

    Keys are read with or without a 'train/' prefix ('loss', 'train/loss_depth', 'lr', ...); every
    numeric 'eval/...' key gets its own panel. Missing keys are allowed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = _read_jsonl(metrics_jsonl_path)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    bare = lambda k: k.removeprefix("train/")  # noqa: E731
    loss_keys = [k for k in keys if not k.startswith("eval/") and bare(k).startswith("loss")]
    lr_keys = [k for k in keys if bare(k) in ("lr", "learning_rate")]
    eval_keys = sorted((k for k in keys if k.startswith("eval/") and _series(rows, k)[0]),
                       key=lambda k: _EVAL_FIRST.index(k) if k in _EVAL_FIRST else len(_EVAL_FIRST))
    panels = [("train losses", loss_keys)] if loss_keys else []
    panels += [("learning rate", lr_keys)] if lr_keys else []
    panels += [(k, [k]) for k in eval_keys]

    ncols = min(3, max(1, len(panels)))
    nrows = max(1, -(-len(panels) // ncols))
    fig = Figure(figsize=(5 * ncols, 3.5 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    if not panels:
        fig.text(0.5, 0.5, f"no metrics in {metrics_jsonl_path} yet", ha="center", va="center")
    for i, (title, series_keys) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for key in series_keys:
            steps, values = _series(rows, key)
            ax.plot(steps, values, label=bare(key), marker="o" if key.startswith("eval/") else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if len(series_keys) > 1:
            ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
