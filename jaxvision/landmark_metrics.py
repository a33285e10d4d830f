"""Evaluation metrics of the driver-monitoring face model (seed 000, section 2.4.1, Eq. 2.14-2.15).

Per batch (inside `jax.jit`), `eval_sums` returns arrays that add up across batches; at the end `finalize`
turns the totals into the thesis' numbers and `format_table` prints them like Tables 2.4 / 2.6.

Definitions (N = the counted samples: batch['mask'] > 0):
  NME (Eq. 2.14): per sample, the mean over the 98 points of |p_i - g_i| divided by the inter-pupil distance
    of the target (points 96 and 97); reported as a percentage averaged over the samples (2.35 = 2.35 %).
  Failure rate @10 %: the percentage of samples whose NME exceeds 0.1 (as WFLW papers report it).
  Per-label / per-class accuracy (Eq. 2.15): for an eye label l, the fraction of its labelled samples whose
    thresholded probability (> 0.5) equals the 0/1 label; for a mouth or distraction class c, the fraction of
    the samples of true class c predicted as c (the class recall).
  Accuracy weighted by support: sum_j n_j acc_j / sum_j n_j, n_j the support of label / class j, i.e. the
    number of samples it is evaluated on. That is the fraction of all correct decisions: for the eyes the
    correct (sample, label) pairs over all labelled pairs (the plain mean of the 4 accuracies when every
    sample has all 4 labels), for mouth and distraction the overall accuracy trace(M) / sum(M).
  Macro F1: the mean over classes of 2 TP / (2 TP + FP + FN), over the classes seen in the targets or the
    predictions.
  Head pose error: per angle, the mean of the circular absolute difference |(g - p + pi) mod 2 pi - pi| in
    degrees (so 179 deg vs -179 deg is 2 deg); yaw, pitch and roll are reported separately.
Missing labels are not counted: an eye label < 0, a class label outside [0, C).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.data.face_landmarks import DISTRACTION_CLASSES, EYE_LABELS, LEFT_PUPIL, MOUTH_LEVELS, RIGHT_PUPIL

FAILURE_THRESHOLD = 0.1
POSE_ANGLES = ("yaw", "pitch", "roll")
_CLASS_TASKS = {"mouth": MOUTH_LEVELS, "distraction": DISTRACTION_CLASSES}


def nme_per_sample(pred: jax.Array, target: jax.Array, min_iod: float = 1e-6) -> jax.Array:
    """Eq. 2.14: mean point error over the target's inter-pupil distance (clamped at `min_iod`); [B, 98, 2] -> [B]."""
    pred = pred.reshape(pred.shape[0], -1, 2)
    target = target.reshape(target.shape[0], -1, 2)
    iod = jnp.linalg.norm(target[:, LEFT_PUPIL] - target[:, RIGHT_PUPIL], axis=-1)
    return jnp.linalg.norm(pred - target, axis=-1).mean(axis=-1) / jnp.maximum(iod, min_iod)


def circular_error(pred: jax.Array, target: jax.Array) -> jax.Array:
    """|(g - p + pi) mod 2 pi - pi|: the absolute angle difference in [0, pi] radians, elementwise."""
    return jnp.abs(jnp.mod(target - pred + jnp.pi, 2 * jnp.pi) - jnp.pi)


def _confusion(pred_labels: jax.Array, labels: jax.Array, counted: jax.Array, num_classes: int) -> jax.Array:
    """[C, C] int32 counts, rows = target, columns = prediction; labels outside [0, C) give all-zero one-hots."""
    truth = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32) * counted[:, None]
    return truth.T @ jax.nn.one_hot(pred_labels, num_classes, dtype=jnp.int32)


def eval_sums(pred: dict, target: dict, mask: jax.Array, failure_threshold: float = FAILURE_THRESHOLD) -> dict:
    """Additive per-batch sums over the samples with mask [B] > 0, for the tasks in both `pred` and `target`.

    pred: 'landmarks' [B, 98, 2], 'eyes' probabilities [B, 4], 'mouth' / 'distraction' logits or
    probabilities [B, 3], 'head_pose' [B, 3] radians. target: 'landmarks', 'eyes' 0/1 [B, 4] (< 0: missing),
    'mouth' / 'distraction' int [B], 'head_pose'. Keys: 'count' and, per task present, 'nme_sum', 'failures';
    'eyes_correct', 'eyes_support' [4]; 'mouth_confusion', 'distraction_confusion' [3, 3];
    'pose_error_sum' [3] degrees.
    """
    counted = mask > 0
    tasks = set(pred) & set(target)
    sums = {"count": jnp.sum(counted).astype(jnp.int32)}
    if "landmarks" in tasks:
        nme = nme_per_sample(pred["landmarks"], target["landmarks"])
        sums["nme_sum"] = jnp.sum(jnp.where(counted, nme, 0.0))
        sums["failures"] = jnp.sum(counted & (nme > failure_threshold)).astype(jnp.int32)
    if "eyes" in tasks:
        labelled = counted[:, None] & (target["eyes"] >= 0)
        correct = (pred["eyes"] > 0.5) == (target["eyes"] > 0.5)
        sums["eyes_correct"] = jnp.sum(labelled & correct, axis=0).astype(jnp.int32)
        sums["eyes_support"] = jnp.sum(labelled, axis=0).astype(jnp.int32)
    for task, classes in _CLASS_TASKS.items():
        if task in tasks:
            sums[f"{task}_confusion"] = _confusion(jnp.argmax(pred[task], axis=-1), target[task], counted, len(classes))
    if "head_pose" in tasks:
        error = jnp.degrees(circular_error(pred["head_pose"], target["head_pose"]))
        sums["pose_error_sum"] = jnp.sum(jnp.where(counted[:, None], error, 0.0), axis=0)
    return sums


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def _classification(task: str, confusion, classes: tuple[str, ...]) -> dict:
    """Support-weighted accuracy (= overall accuracy), per-class accuracy (recall) and macro F1 of a confusion."""
    confusion = np.asarray(confusion, np.float64)
    tp, support = np.diag(confusion), confusion.sum(axis=1)
    results = {f"{task}_accuracy": _ratio(tp.sum(), support.sum())}
    for name, hits, n in zip(classes, tp, support):
        results[f"{task}_{name}_accuracy"] = _ratio(hits, n)
    f1_den = support + confusion.sum(axis=0)             # 2 TP + FP + FN
    seen = f1_den > 0
    results[f"{task}_f1"] = float(np.mean(2 * tp[seen] / f1_den[seen])) if seen.any() else math.nan
    return results


def finalize(sums: dict) -> dict:
    """Dataset metrics (floats, NaN where undefined) from the summed `eval_sums`; see the module docstring.

    'nme' and 'failure_rate' are percentages; accuracies and F1 fractions; '{yaw,pitch,roll}_mae' degrees.
    Per label / class: 'eyes_{left_visible,...}_accuracy', 'mouth_{closed,...}_accuracy', 'distraction_...'.
    """
    count = float(sums["count"])
    results = {}
    if "nme_sum" in sums:
        results["nme"] = 100.0 * _ratio(sums["nme_sum"], count)
        results["failure_rate"] = 100.0 * _ratio(sums["failures"], count)
    if "eyes_correct" in sums:
        correct = np.asarray(sums["eyes_correct"], np.float64)
        support = np.asarray(sums["eyes_support"], np.float64)
        results["eyes_accuracy"] = _ratio(correct.sum(), support.sum())
        for name, hits, n in zip(EYE_LABELS, correct, support):
            results[f"eyes_{name}_accuracy"] = _ratio(hits, n)
    for task, classes in _CLASS_TASKS.items():
        if f"{task}_confusion" in sums:
            results.update(_classification(task, sums[f"{task}_confusion"], classes))
    if "pose_error_sum" in sums:
        for name, total in zip(POSE_ANGLES, np.asarray(sums["pose_error_sum"], np.float64)):
            results[f"{name}_mae"] = _ratio(total, count)
    return results


_TABLE_COLUMNS = (
    ("NME [%] ↓", ("nme",), "{:.2f}"),
    ("FR@10 [%] ↓", ("failure_rate",), "{:.2f}"),
    ("Eyes ↑", ("eyes_accuracy",), "{:.3f}"),
    ("Mouth ↑", ("mouth_accuracy",), "{:.3f}"),
    ("Distraction ↑", ("distraction_accuracy",), "{:.3f}"),
    ("Head (yaw, pitch, roll) [deg] ↓", tuple(f"{a}_mae" for a in POSE_ANGLES), "{:.3f}"),
)


def format_table(results: dict) -> str:
    """Markdown table in the columns of Tables 2.4 / 2.6: one `finalize` dict, or {row name: finalize dict}.

    Columns no row has are left out; a row without a column's metric shows '-'."""
    rows = results if results and all(isinstance(v, dict) for v in results.values()) else {"": results}
    columns = [c for c in _TABLE_COLUMNS if any(c[1][0] in row for row in rows.values())]

    def cell(row, keys, fmt):
        if keys[0] not in row:
            return "-"
        values = [fmt.format(float(row[k])) for k in keys]
        return values[0] if len(values) == 1 else f"({', '.join(values)})"

    lines = ["| model | " + " | ".join(c[0] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(row, keys, fmt) for _, keys, fmt in columns) + " |")
    return "\n".join(lines)
