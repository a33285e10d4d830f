"""ADAS perception (seed 000, ch. 3): detection with occlusion, lanes and scene tags; losses (3.4.2), metrics (3.4.3).

Batches come from jaxvision/data/adas_inputs.py. The loss is the weighted sum of the terms of
jaxvision/adas_losses.py; `config.loss.weights` gives one weight per term ('heatmap', 'box_offsets',
'occlusion', 'lane_heatmap', 'lane_offsets', 'tags'); the thesis uses 1 for all and 0.1 for the tags' sum.

Evaluation decodes the outputs under jit (jaxvision/adas_decode.py: peaks, boxes, lane keypoints and their
clusters) and collects them on the host (`accumulate`): `finalize` computes COCO AP@0.5 per class and its mean
after dropping scores < `eval.score_threshold` (0.25), occlusion accuracy on Hungarian-matched detections, the
lane IoU of rasterised polylines (fitted per cluster) and the micro F1 of each tag task.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import adas_decode, adas_losses, detection_metrics, visualize
from jaxvision.config import ConfigError
from jaxvision.data import lane_geometry

TERMS = ("heatmap", "box_offsets", "occlusion", "lane_heatmap", "lane_offsets", "tags")
GROUND_TRUTH = ("gt_boxes", "gt_classes", "gt_occluded", "gt_box_mask", "gt_lanes", "gt_lane_classes", "gt_lane_mask")
LANE_THICKNESS = 8  # pixels, at the 640 x 320 input of the thesis; scaled with the input width


class ADASTask:
    """The multi-task loss of section 3.4.2 and the metrics of Table 3.3."""

    main_metrics = ("map", "occlusion_accuracy", "lane_iou")
    sweep_columns = (("map", "Boxes mAP@.5 ↑", 3), ("occlusion_accuracy", "Occl ↑", 3),
                     ("lane_iou", "Lane IoU ↑", 3))
    sweep_note = "COCO 101-point AP at IoU 0.5 (scores >= 0.25), occlusion accuracy of matched boxes, lane mask IoU."

    def __init__(self, config):
        unknown = sorted(set(config.loss.weights) - set(TERMS))
        if unknown:
            raise ConfigError(f"loss.weights has unknown term(s) {unknown}; terms: {', '.join(TERMS)}")
        self.weights = {term: float(w) for term, w in config.loss.weights.items() if w > 0}
        self.adas = config.data.adas
        self.tags = tuple(self.adas.tags)
        self.tag_classes = {task: int(classes) for task, classes in config.model.tags}
        model_tags = tuple(self.tag_classes)
        if model_tags != self.tags:
            raise ConfigError(f"model.tags {model_tags} and data.adas.tags {self.tags} name different tag tasks")
        self.eval_config = config.eval
        self.class_names = tuple(self.adas.class_names)
        self.size = (config.data.height, config.data.width)
        self.main_metrics = ADASTask.main_metrics + tuple(f"{tag}_f1" for tag in self.tags)

    def init_loss_params(self) -> dict:
        return {}

    def loss(self, outputs: dict, batch: dict):
        terms = {}
        objects = jnp.sum(batch["det_mask"])
        if "heatmap" in self.weights:
            terms["heatmap"] = adas_losses.heatmap_loss(outputs["heatmap"], batch["heatmap"], objects)
        if "box_offsets" in self.weights:
            terms["box_offsets"] = adas_losses.offset_loss(outputs["box_offsets"], batch["det_index"],
                                                           batch["det_offsets"], batch["det_mask"], objects)
        if "occlusion" in self.weights:
            terms["occlusion"] = adas_losses.occlusion_loss(outputs["occlusion"], batch["det_index"],
                                                            batch["det_occluded"], batch["det_mask"])
        if "lane_heatmap" in self.weights:
            terms["lane_heatmap"] = adas_losses.heatmap_loss(outputs["lane_heatmap"], batch["lane_heatmap"],
                                                             jnp.sum(batch["lane_mask"]))
        if "lane_offsets" in self.weights:
            lanes = adas_losses.lane_instances(batch["lane_instance"], batch["lane_mask"])
            terms["lane_offsets"] = adas_losses.offset_loss(outputs["lane_offsets"], batch["lane_index"],
                                                            batch["lane_votes"], batch["lane_mask"], lanes)
        if "tags" in self.weights:
            terms["tags"] = sum(adas_losses.tag_loss(outputs[tag], batch[tag]) for tag in self.tags)
        total = sum(self.weights[term] * value for term, value in terms.items())
        return total, {f"loss_{term}": value for term, value in terms.items()}

    def decode(self, outputs: dict) -> dict:
        """Jit-compatible decoding: detections, lane keypoints with cluster labels, tag predictions."""
        cfg = self.eval_config
        decoded = adas_decode.decode_outputs(outputs, self.adas.stride, cfg.top_k, cfg.lane_top_k, cfg.lane_threshold,
                                             cfg.lane_cluster_distance)
        return {**decoded, "tags": {tag: jnp.argmax(outputs[tag], axis=-1) for tag in self.tags}}

    def eval_sums(self, outputs: dict, batch: dict) -> dict:
        """Not sums: the decoded predictions and the ground truth of the batch, gathered by `accumulate`."""
        truth = {key: batch[key] for key in GROUND_TRUTH + self.tags}
        return {**self.decode(outputs), "truth": truth, "mask": batch["mask"]}

    def accumulate(self, collected: list | None, batch_results: dict) -> list:
        """Appends one batch's host results (the eval loop calls this instead of adding sums)."""
        return (collected or []) + [batch_results]

    def host_predictions(self, results: dict) -> list[dict]:
        """Per real example: {'boxes', 'scores', 'classes', 'occluded', 'lanes', 'lane_classes', tags}."""
        dets, lanes = results["detections"], results["lanes"]
        fitted = lane_geometry.fit_lanes(lanes["points"], lanes["labels"], lanes["classes"], lanes["valid"])
        examples = []
        for i in np.flatnonzero(np.asarray(results["mask"]) > 0):
            polylines, classes = fitted[i]
            examples.append({"boxes": dets["boxes"][i], "scores": dets["scores"][i], "classes": dets["classes"][i],
                             "occluded": dets["occluded"][i], "lanes": polylines, "lane_classes": classes,
                             **{tag: int(results["tags"][tag][i]) for tag in self.tags}})
        return examples

    @staticmethod
    def host_truth(results: dict) -> list[dict]:
        """Per real example: {'boxes', 'classes', 'occluded', 'lanes', 'lane_classes', tags} without padding."""
        truth, examples = results["truth"], []
        for i in np.flatnonzero(np.asarray(results["mask"]) > 0):
            boxes = truth["gt_box_mask"][i] > 0
            lanes = truth["gt_lane_mask"][i] > 0
            examples.append({"boxes": truth["gt_boxes"][i][boxes], "classes": truth["gt_classes"][i][boxes],
                             "occluded": truth["gt_occluded"][i][boxes].astype(bool),
                             "lanes": list(truth["gt_lanes"][i][lanes]),
                             "lane_classes": truth["gt_lane_classes"][i][lanes],
                             **{k: int(v[i]) for k, v in truth.items() if k not in GROUND_TRUTH}})
        return examples

    def finalize(self, collected: list) -> dict:
        predictions = [p for results in collected for p in self.host_predictions(results)]
        truths = [t for results in collected for t in self.host_truth(results)]
        threshold = self.eval_config.score_threshold
        ap = detection_metrics.average_precision(predictions, truths, len(self.class_names),
                                                 score_threshold=threshold)
        out = {"map": float(ap["map"]), **{f"ap_{name}": float(v) for name, v in zip(self.class_names, ap["ap"])},
               "occlusion_accuracy": detection_metrics.occlusion_accuracy(predictions, truths,
                                                                          score_threshold=threshold)}
        lane_iou = detection_metrics.LaneIoU(*self.size, thickness=max(1, round(LANE_THICKNESS * self.size[1] / 640)))
        for pred, true in zip(predictions, truths):
            lane_iou.add(pred["lanes"], true["lanes"])
        out["lane_iou"] = lane_iou.result()
        for tag, classes in self.tag_classes.items():
            f1 = detection_metrics.f1_scores(np.array([p[tag] for p in predictions]),
                                             np.array([t[tag] for t in truths]), classes)
            out[f"{tag}_f1"], out[f"{tag}_macro_f1"] = float(f1["micro"]), float(f1["macro"])
        out["examples"] = len(truths)
        return out

    def format(self, results: dict) -> str:
        rows = [("mAP@0.5", results["map"])] + [(f"  AP {n}", results[f"ap_{n}"]) for n in self.class_names]
        rows += [("occlusion accuracy", results["occlusion_accuracy"]), ("lane IoU", results["lane_iou"])]
        rows += [(f"{tag} F1 (micro / macro)", f"{results[f'{tag}_f1']:.3f} / {results[f'{tag}_macro_f1']:.3f}")
                 for tag in self.tags]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value if isinstance(value, str) else f'{value:.3f}'}" for name, value in rows]
        return "\n".join(lines + [f"({results['examples']} images)"])

    def save_predictions(self, path: str, batch: dict, outputs: dict, max_rows: int) -> None:
        """PNG grid: each image with its predicted boxes (score >= threshold) and lanes, next to the ground truth."""
        results = jax.tree.map(np.asarray, {**self.decode(outputs), "mask": np.asarray(batch["mask"])})
        results["truth"] = {key: np.asarray(batch[key]) for key in GROUND_TRUTH + self.tags}
        visualize.save_scene_grid(path, np.asarray(batch["image"]), self.host_predictions(results),
                                  self.host_truth(results), self.class_names, self.eval_config.score_threshold,
                                  max_rows=max_rows)
