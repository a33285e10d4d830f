"""Joint semantic segmentation + depth: losses, evaluation sums and the prediction grid."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxvision import losses, metrics, visualize


class SegDepthTask:
    """Cross-entropy + depth loss training (`config.loss`: depth loss, weighting, deep supervision, see
    jaxvision/losses.py); mIoU, SI-log RMSE, `total` and the depth metrics for eval."""

    main_metrics = ("total", "miou", "silog_rmse", "abs_rel", "rmse", "delta1")
    # `jaxvision sweep` results columns (metric, header, decimals) and the line under the table: the reports' format.
    sweep_columns = (("semseg", "semseg ↑", 3), ("depth", "depth ↓", 3), ("total", "total ↑", 3),
                     ("miou", "mIoU", 4), ("silog_rmse", "SI-log RMSE", 4))
    sweep_note = "semseg = 100 mIoU, depth = 100 SI-log RMSE, total = semseg - depth, on the validation split."

    def __init__(self, config):
        losses.check_loss_config(config.loss)
        self.loss_config = config.loss
        self.num_classes = config.data.num_classes

    def init_loss_params(self) -> dict:
        """Learnable loss parameters, trained and checkpointed with the model's (TrainState.params['loss']):
        the log-variances of weighting 'uncertainty', {} otherwise."""
        return losses.init_loss_params(self.loss_config)

    def loss(self, outputs: dict, batch: dict, loss_params: dict | None = None):
        return losses.segdepth_loss(outputs, batch, self.loss_config, loss_params)

    def eval_sums(self, outputs: dict, batch: dict) -> dict:
        """Per-batch sums that add up over the dataset (padded examples masked out); outputs['aux'] is
        not evaluated."""
        mask = batch.get("mask")
        pred_labels = jnp.argmax(outputs["semseg"], axis=-1)
        sums = metrics.depth_metric_sums(outputs["depth"], batch["depth"], mask=mask)
        sums["confusion"] = metrics.confusion_matrix(pred_labels, batch["semseg"], self.num_classes, mask=mask)
        return sums

    def finalize(self, sums: dict) -> dict:
        depth_sums = {k: v for k, v in sums.items() if k != "confusion"}
        return metrics.finalize(sums["confusion"], depth_sums)

    def format(self, results: dict) -> str:
        names = visualize.CITYSCAPES_CLASSES if self.num_classes == len(visualize.CITYSCAPES_CLASSES) else None
        return metrics.format_table(results, class_names=names)

    def save_predictions(self, path: str, batch: dict, outputs: dict, max_rows: int) -> None:
        """PNG grid: input, predicted / true segmentation, predicted / true depth."""
        visualize.save_prediction_grid(
            path, np.asarray(batch["image"]), np.argmax(np.asarray(outputs["semseg"]), -1),
            np.asarray(batch["semseg"]), np.asarray(outputs["depth"]), np.asarray(batch["depth"]), max_rows=max_rows)
