"""Binary sequence classification (thesis ch. 4.5.1, IMDb sentiment): one logit per sequence, BCE loss."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from jaxvision.tasks import _text


class TextClassificationTask:
    """Loss: binary cross-entropy of the logit against `label` (0/1). Metrics: `loss`, `accuracy`, and
    `precision` / `recall` / `f1` macro-averaged over the two classes (Table 4.2's averaged Pr / Re / F1)."""

    main_metrics = ("loss", "accuracy", "f1", "precision", "recall")
    sweep_columns = (("loss", "loss ↓", 4), ("accuracy", "accuracy ↑", 4), ("f1", "F1 ↑", 4))  # thesis Table 4.2
    sweep_note = "BCE loss, accuracy and macro F1 on the validation split."
    input_keys = ("tokens",)

    def __init__(self, config):
        _text.check_vocab(config)

    def init_inputs(self, config) -> tuple[np.ndarray]:
        """Dummy (tokens [1, max_len],) to initialise the model."""
        return (_text.dummy_tokens(config),)

    def init_loss_params(self) -> dict:
        return {}

    def loss(self, outputs: jnp.ndarray, batch: dict):
        labels = batch["label"].astype(jnp.float32)
        loss = jnp.mean(optax.sigmoid_binary_cross_entropy(outputs, labels))
        return loss, {"accuracy": jnp.mean(((outputs > 0) == (labels > 0.5)).astype(jnp.float32))}

    def eval_sums(self, outputs: jnp.ndarray, batch: dict) -> dict:
        """Confusion counts and the BCE sum over the real examples (batch['mask'] 0 marks eval padding)."""
        real = batch["mask"] > 0
        labels, predicted = batch["label"] > 0, outputs > 0
        count = lambda m: jnp.sum(m & real)  # noqa: E731
        bce = optax.sigmoid_binary_cross_entropy(outputs, labels.astype(jnp.float32))
        return {"tp": count(predicted & labels), "fp": count(predicted & ~labels), "fn": count(~predicted & labels),
                "tn": count(~predicted & ~labels), "bce": jnp.sum(jnp.where(real, bce, 0.0))}

    def finalize(self, sums: dict) -> dict:
        tp, fp, fn, tn = (float(sums[k]) for k in ("tp", "fp", "fn", "tn"))
        total = max(tp + fp + fn + tn, 1.0)
        per_class = [_prf(tp, fp, fn), _prf(tn, fn, fp)]  # positive class, negative class
        precision, recall, f1 = (float(np.mean(values)) for values in zip(*per_class))
        return {"loss": float(sums["bce"]) / total, "accuracy": (tp + tn) / total, "f1": f1,
                "precision": precision, "recall": recall}

    def format(self, results: dict) -> str:
        return _text.format_metrics(results, self.main_metrics)

    def save_predictions(self, path: str, batch: dict, outputs, max_rows: int) -> None:
        """predictions.md (next to `path`): label, probability and prediction of the first sequences."""
        logits = np.asarray(outputs)
        lines = ["| sequence | label | p(positive) | predicted |", "|---|---|---|---|"]
        for row in range(min(max_rows, len(logits))):
            lines.append(f"| {row} | {int(batch['label'][row])} | {1 / (1 + np.exp(-logits[row])):.3f} | "
                         f"{int(logits[row] > 0)} |")
        _text.write_markdown(path, "# predictions on the first validation sequences\n\n" + "\n".join(lines) + "\n")


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    """Precision, recall, F1 of one class from its counts (0 where undefined)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
