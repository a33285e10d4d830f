"""Standalone runtime for exported models, for the device: numpy, Pillow and ONNX Runtime, no JAX.

    rt = Runtime("model.onnx")            # reads model.json (the sidecar) beside it
    result = rt.predict(rgb_uint8_image)  # resize + normalise + layout, run, post-process

For a segmentation + depth model `predict` returns `labels` [H, W], `color` (the labels through the
sidecar's palette) [H, W, 3] uint8 and `depth` [H, W] metres, at the model's input size; for the
driver-monitoring face model (a face crop in) `landmarks` [98, 2] in the given image's pixels, `eyes`
(label -> probability), `mouth` and `distraction` (class names and probabilities) and `head_pose_deg`
(yaw, pitch, roll); for the ADAS model `boxes` [N, 4] (x1, y1, x2, y2 in the given image's pixels, scores >=
the sidecar's threshold) with `scores`, `classes`, `class_names`, `occluded`, `lanes` (polylines fitted per lane
instance, in the image's pixels) with `lane_classes`, and per tag task its class and probabilities; for a
classifier `class_index`, `probability` and the full `probabilities`.

    python -m jaxvision.export.runtime model.onnx image.png --out prediction   (writes prediction_*.png)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image


class Runtime:
    """An exported ONNX graph with its sidecar: pre-processing, inference and the task's post-processing."""

    def __init__(self, path: str, providers: list[str] | None = None, threads: int = 0):
        import onnxruntime as ort
        meta_path = os.path.splitext(path)[0] + ".json"
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no exported model at {path}")
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(f"no sidecar {meta_path} beside {path}: export with `jaxvision export`")
        with open(meta_path) as f:
            self.meta = json.load(f)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=providers or ["CPUExecutionProvider"])
        self.input = self.meta["input"]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def preprocess(self, images) -> np.ndarray:
        """RGB images (uint8 [H, W, 3] arrays or PIL images, any size) -> the graph's float32 input batch."""
        size = (self.input["width"], self.input["height"])
        batch = []
        for image in images:
            pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
            batch.append(np.asarray(pil.convert("RGB").resize(size, Image.BILINEAR), np.float32))
        x = np.stack(batch)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if self.input["layout"] == "NCHW" else x

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs by name for an already pre-processed batch."""
        return dict(zip(self.output_names, self.session.run(None, {self.input["name"]: batch})))

    def predict(self, image) -> dict[str, np.ndarray]:
        """Pre-process one image, run it, and post-process per the sidecar's task."""
        out = {k: v[0] for k, v in self.run(self.preprocess([image])).items()}
        if self.meta["task"] == "adas_network":      # exported without decoding: the raw maps
            return out
        if self.meta["task"] == "dms":
            width, height = image.size if isinstance(image, Image.Image) else np.asarray(image).shape[1::-1]
            return _face_outputs(out, self.meta, width, height)
        if self.meta["task"] == "adas":
            width, height = image.size if isinstance(image, Image.Image) else np.asarray(image).shape[1::-1]
            return _scene_outputs(out, self.meta, width / self.input["width"], height / self.input["height"])
        if self.meta["task"] == "segdepth":
            labels = out["semseg_labels"].astype(np.int64)
            palette = np.asarray(self.meta.get("palette") or _grey_palette(self.meta.get("num_classes", 256)),
                                 np.uint8)
            return {"labels": labels, "color": palette[np.clip(labels, 0, len(palette) - 1)], "depth": out["depth"]}
        probabilities = out["probabilities"]
        return {"class_index": int(np.argmax(probabilities)), "probability": float(np.max(probabilities)),
                "probabilities": probabilities}


def _face_outputs(out: dict, meta: dict, width: int, height: int) -> dict:
    """The face model's outputs, named: landmarks in the image's pixels, labelled probabilities, pose in degrees."""
    mouth, distraction = out["mouth"], out["distraction"]
    return {"landmarks": out["landmarks"] * np.array([width, height], np.float32),
            "eyes": dict(zip(meta["eye_labels"], map(float, out["eyes"]))),
            "mouth": meta["mouth_levels"][int(np.argmax(mouth))], "mouth_probabilities": mouth,
            "distraction": meta["distraction_classes"][int(np.argmax(distraction))],
            "distraction_probabilities": distraction,
            "head_pose_deg": dict(zip(("yaw", "pitch", "roll"), map(float, np.degrees(out["head_pose"]))))}


def _scene_outputs(out: dict, meta: dict, sx: float, sy: float) -> dict:
    """The ADAS graph's decoded outputs for one image: confident boxes and fitted lanes in the image's pixels."""
    from jaxvision.data.lane_geometry import fit_lanes
    keep = out["scores"] >= meta["score_threshold"]
    scale = np.array([sx, sy, sx, sy], np.float32)
    classes = out["classes"][keep]
    (lanes, lane_classes), = fit_lanes(out["lane_points"][None], out["lane_instances"][None],
                                       out["lane_classes"][None], (out["lane_instances"] >= 0)[None])
    result = {"boxes": out["boxes"][keep] * scale, "scores": out["scores"][keep], "classes": classes,
              "class_names": [meta["class_names"][c] for c in classes], "occluded": out["occluded"][keep] > 0.5,
              "lanes": [lane * np.array([sx, sy], np.float32) for lane in lanes], "lane_classes": lane_classes}
    for tag, names in meta["tag_names"].items():
        result[tag] = names[int(np.argmax(out[tag]))]
        result[f"{tag}_probabilities"] = out[tag]
    return result


def draw_scene(image: Image.Image, result: dict) -> Image.Image:
    """A copy of `image` with the ADAS result's boxes (thin when occluded) and lanes drawn."""
    from PIL import ImageDraw
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for lane in result["lanes"]:
        draw.line([tuple(p) for p in lane.astype(float)], fill=(255, 220, 0), width=3)
    for box, name, score, occluded in zip(result["boxes"], result["class_names"], result["scores"], result["occluded"]):
        draw.rectangle(tuple(box.astype(float)), outline=(40, 220, 40), width=1 if occluded else 3)
        draw.text((float(box[0]) + 2, float(box[1]) + 1), f"{name} {score:.2f}", fill=(40, 220, 40))
    return canvas


def draw_landmarks(image: Image.Image, landmarks: np.ndarray) -> Image.Image:
    """A copy of `image` with the landmarks (pixels) drawn as green dots."""
    from PIL import ImageDraw
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    radius = max(1.0, canvas.size[0] / 160)
    for x, y in landmarks:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(40, 220, 40))
    return canvas


def _grey_palette(n: int) -> list[list[int]]:
    return [[int(255 * i / max(1, n - 1))] * 3 for i in range(n)]


def depth_to_image(depth: np.ndarray) -> np.ndarray:
    """Depth [H, W] metres -> uint8 grey (near bright), scaled by the image's own range."""
    inverse = 1.0 / np.maximum(depth, 1e-3)
    lo, hi = float(inverse.min()), float(inverse.max())
    return (255 * (inverse - lo) / max(hi - lo, 1e-9)).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run an exported jaxvision model on one image (no JAX needed)")
    parser.add_argument("model", help="exported .onnx (with its .json sidecar beside it)")
    parser.add_argument("image", help="RGB image file")
    parser.add_argument("--out", default="prediction",
                        help="prefix of the PNGs written (segmentation + depth, or the face's landmarks)")
    args = parser.parse_args(argv)
    runtime = Runtime(args.model)
    try:
        image = Image.open(args.image)
        image.load()
    except (OSError, ValueError) as e:
        print(f"cannot read image {args.image}: {e}", file=sys.stderr)
        return 1
    result = runtime.predict(image)
    if "lanes" in result:
        draw_scene(image, result).save(f"{args.out}_scene.png")
        tags = {tag: result[tag] for tag in runtime.meta["tag_names"]}
        print(json.dumps({"objects": len(result["boxes"]), "lanes": len(result["lanes"]), **tags}))
        print(f"wrote {args.out}_scene.png")
        return 0
    if "landmarks" in result:
        draw_landmarks(image, result["landmarks"]).save(f"{args.out}_landmarks.png")
        summary = {k: v for k, v in result.items() if k in ("eyes", "mouth", "distraction", "head_pose_deg")}
        print(json.dumps(summary))
        print(f"wrote {args.out}_landmarks.png")
        return 0
    if "labels" not in result:
        print(f"class {result['class_index']} (p = {result['probability']:.3f})")
        return 0
    resized = np.asarray(image.convert("RGB").resize(result["color"].shape[1::-1], Image.BILINEAR), np.float32)
    overlay = (0.5 * resized + 0.5 * result["color"]).astype(np.uint8)
    Image.fromarray(overlay).save(f"{args.out}_semseg.png")
    Image.fromarray(depth_to_image(result["depth"])).save(f"{args.out}_depth.png")
    print(f"wrote {args.out}_semseg.png, {args.out}_depth.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
