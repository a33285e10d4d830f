"""Driver monitoring (seed 000, ch. 2): the face model's five tasks, their losses (Eq. 2.13) and metrics (2.4.1).

The model returns the raw vector of Table 2.1 ([B, 209], `models.dms.split_outputs`); batches hold the crop
'image', 'landmarks' [B, 98, 2] in [0, 1], 'eyes' [B, 4] 0/1, 'mouth' and 'distraction' class ids [B],
'head_pose' [B, 3] radians and the per-sample confidence 'confidence' [B] (gamma of Eq. 2.13; 1 for LaPa and
synthetic faces, Eq. 2.4 for pseudo-labelled images).

`config.loss`:
  weights: task -> alpha_i of Eq. 2.13 (a task with weight 0 is not trained, e.g. the single-task runs).
  landmark: 'l1' | 'l2' | 'smooth_l1' | 'wing' | 'rectified_wing' on the coordinates in crop pixels
    (x `data.height`), so Wing's w and eps (`wing_w`, `wing_eps`) are in pixels as in Feng et al.
  distraction: 'ce' | 'focal' (gamma `focal_gamma`), with `distraction_class_weights` (W1 = (1, .5, .5)
    down-weights the minority classes, the thesis' release configuration).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxvision import landmark_losses, landmark_metrics, saliency, visualize
from jaxvision.config import ConfigError
from jaxvision.data.face_landmarks import DISTRACTION_CLASSES, EYE_LABELS, MOUTH_LEVELS
from jaxvision.models.dms import decode, split_outputs

TASKS = ("landmarks", "eyes", "mouth", "head_pose", "distraction")
# Tasks with class scores for saliency maps, and the name of each score.
SALIENCY_TASKS = {"eyes": EYE_LABELS, "mouth": MOUTH_LEVELS, "distraction": DISTRACTION_CLASSES}
SALIENCY_METHODS = ("gradient", "score_cam")
DISTRACTION_LOSSES = ("ce", "focal")


def check_loss_config(loss_config) -> None:
    """ConfigError naming the field for an unknown task weight, landmark loss or distraction loss."""
    unknown = sorted(set(loss_config.weights) - set(TASKS))
    if unknown:
        raise ConfigError(f"loss.weights has unknown task(s) {unknown}; tasks: {', '.join(TASKS)}")
    if loss_config.landmark not in landmark_losses.LANDMARK_LOSSES:
        raise ConfigError(f"loss.landmark '{loss_config.landmark}' is unknown; choose one of "
                          f"{', '.join(landmark_losses.LANDMARK_LOSSES)}")
    if loss_config.distraction not in DISTRACTION_LOSSES:
        raise ConfigError(f"loss.distraction '{loss_config.distraction}' is unknown; choose 'ce' or 'focal'")
    if len(loss_config.distraction_class_weights) != 3:
        raise ConfigError("loss.distraction_class_weights needs 3 values (normal, phone, smoking)")


class DMSTask:
    """Eq. 2.13 over the tasks with a positive weight; NME, eye / mouth / distraction accuracy and head-pose
    error for evaluation."""

    main_metrics = ("nme", "eyes_accuracy", "mouth_accuracy", "distraction_accuracy", "yaw_mae", "pitch_mae",
                    "roll_mae")
    sweep_columns = (("nme", "NME % ↓", 3), ("eyes_accuracy", "Eyes ↑", 3), ("mouth_accuracy", "Mouth ↑", 3),
                     ("yaw_mae", "yaw °", 2), ("pitch_mae", "pitch °", 2), ("roll_mae", "roll °", 2))
    sweep_note = "NME over the inter-pupil distance (%), support-weighted accuracies, head-pose MAE in degrees."

    def __init__(self, config):
        check_loss_config(config.loss)
        self.loss_config = config.loss
        self.pixels = float(config.data.height)
        self.weights = {task: float(w) for task, w in config.loss.weights.items() if w > 0}

    def init_loss_params(self) -> dict:
        return {}

    def per_sample_losses(self, outputs: jnp.ndarray, batch: dict) -> dict:
        """Task -> loss per sample [B] for the weighted tasks."""
        cfg, pred = self.loss_config, split_outputs(outputs)
        losses = {}
        if "landmarks" in self.weights:
            params = {"w": cfg.wing_w, "eps": cfg.wing_eps} if "wing" in cfg.landmark else {}
            losses["landmarks"] = landmark_losses.landmark_loss(
                pred["landmarks"] * self.pixels, batch["landmarks"] * self.pixels, cfg.landmark, **params)
        if "eyes" in self.weights:
            losses["eyes"] = landmark_losses.binary_cross_entropy(pred["eyes"], batch["eyes"].astype(jnp.float32))
        if "mouth" in self.weights:
            losses["mouth"] = landmark_losses.cross_entropy(pred["mouth"], batch["mouth"])
        if "head_pose" in self.weights:
            losses["head_pose"] = landmark_losses.euler_loss(pred["head_pose"], batch["head_pose"])
        if "distraction" in self.weights:
            weights = jnp.asarray(cfg.distraction_class_weights, jnp.float32)
            if cfg.distraction == "focal":
                losses["distraction"] = landmark_losses.focal_loss(pred["distraction"], batch["distraction"],
                                                                   cfg.focal_gamma, class_weights=weights)
            else:
                losses["distraction"] = landmark_losses.cross_entropy(pred["distraction"], batch["distraction"],
                                                                      weights)
        return losses

    def loss(self, outputs: jnp.ndarray, batch: dict):
        total, terms = landmark_losses.total_loss(self.per_sample_losses(outputs, batch), self.weights,
                                                  batch["confidence"].astype(jnp.float32))
        nme = landmark_metrics.nme_per_sample(split_outputs(outputs)["landmarks"], batch["landmarks"])
        return total, {**{f"loss_{task}": value for task, value in terms.items()}, "nme": 100 * jnp.mean(nme)}

    def eval_sums(self, outputs: jnp.ndarray, batch: dict) -> dict:
        targets = {task: batch[task] for task in TASKS}
        return landmark_metrics.eval_sums(decode(outputs), targets, batch["mask"])

    def finalize(self, sums: dict) -> dict:
        return landmark_metrics.finalize(sums)

    def format(self, results: dict) -> str:
        return landmark_metrics.format_table(results)

    def save_predictions(self, path: str, batch: dict, outputs, max_rows: int) -> None:
        """PNG grid of face crops with the predicted (green) and true (red) landmarks and the other outputs."""
        visualize.save_face_grid(path, np.asarray(batch["image"]), decode(jnp.asarray(outputs)),
                                 {task: np.asarray(batch[task]) for task in TASKS}, max_images=4 * max_rows)


def saliency_maps(model, variables, images, task: str = "distraction", target=None,
                  methods=SALIENCY_METHODS, feature_stride: int = 16) -> tuple[dict, np.ndarray]:
    """({method: [B, H, W] maps in [0, 1]}, targets [B]) of section 2.4.1 for one classification task.

    `target`: the score explained (a class index, or an eye label index), one for all images or one per image;
    None explains each image's predicted class (for 'eyes': its most confident label). The thesis sets it to
    the class a false positive would trigger (e.g. 'phone'). Score-CAM weighs the channels of the map
    at `feature_stride` (16: B3, the last block)."""
    if task not in SALIENCY_TASKS:
        raise ValueError(f"saliency task '{task}' has no class scores; choose one of {', '.join(SALIENCY_TASKS)}")
    unknown = sorted(set(methods) - set(SALIENCY_METHODS))
    if unknown:
        raise ValueError(f"saliency method(s) {unknown} unknown; choose from {', '.join(SALIENCY_METHODS)}")
    images = jnp.asarray(images, jnp.float32)
    score_fn = lambda x: split_outputs(model.apply(variables, x, train=False))[task]  # noqa: E731
    features_fn = lambda x: model.apply(variables, x, train=False, features=True)[1][feature_stride]  # noqa: E731
    if target is None:
        target = jnp.argmax(score_fn(images), axis=-1)
    target = np.broadcast_to(np.asarray(target, np.int32), (images.shape[0],))
    maps = {}
    if "gradient" in methods:
        maps["gradient"] = np.asarray(saliency.gradient_saliency(score_fn, images, target))
    if "score_cam" in methods:
        maps["score_cam"] = np.asarray(saliency.score_cam(features_fn, score_fn, images, target))
    return maps, target


def save_saliency(path: str, model, variables, images, task: str = "distraction", target=None,
                  methods=SALIENCY_METHODS) -> None:
    """PNG: each face with its saliency maps (`saliency_maps`), captioned with the explained class and its score."""
    scores = np.asarray(decode(model.apply(variables, jnp.asarray(images, jnp.float32), train=False))[task])
    maps, targets = saliency_maps(model, variables, images, task, np.argmax(scores, -1) if target is None else target,
                                  methods)
    names = SALIENCY_TASKS[task]
    titles = [f"{names[t]} {scores[i, t]:.2f}" for i, t in enumerate(targets)]
    saliency.save_saliency_grid(path, np.asarray(images), maps, titles)
