"""Masked-language-model pretraining (thesis ch. 4.5.1): cross-entropy over the masked positions only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.tasks import _text


def masked_nll(logits: jnp.ndarray, ids: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(negative log-likelihood, 1 if argmax is right) per slot, for logits [B, P, V] and ids [B, P]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, ids[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return nll, (jnp.argmax(logits, axis=-1) == ids).astype(jnp.float32)


class MLMTask:
    """Loss: weighted mean cross-entropy over the MLM slots (`mlm_weights` 0 on padding slots).
    Metrics: `loss` (mean cross-entropy per masked token), `accuracy` (top-1 over masked tokens) and
    `perplexity` = exp(loss). The model takes `tokens` and `mlm_positions`."""

    main_metrics = ("loss", "accuracy", "perplexity")
    sweep_columns = (("loss", "loss ↓", 4), ("accuracy", "accuracy ↑", 4), ("perplexity", "perplexity ↓", 3))
    sweep_note = "MLM cross-entropy, top-1 accuracy and perplexity over the masked tokens of the validation split."
    input_keys = ("tokens", "mlm_positions")

    def __init__(self, config):
        if config.data.get("mask_prob", 0.0) <= 0:
            raise ValueError("task 'mlm' needs masked examples: set data.mask_prob > 0 (the thesis: 0.1)")
        _text.check_vocab(config)
        self.tokenizer_path = config.data.get("tokenizer", "")

    def init_inputs(self, config) -> tuple[np.ndarray, np.ndarray]:
        """Dummy (tokens [1, max_len], mlm_positions [1, max_predictions]) to initialise the model."""
        return _text.dummy_tokens(config), np.zeros((1, config.data.max_predictions), np.int32)

    def init_loss_params(self) -> dict:
        return {}

    def loss(self, outputs: jnp.ndarray, batch: dict):
        nll, correct = masked_nll(outputs, batch["mlm_ids"])
        weights = batch["mlm_weights"]
        count = jnp.maximum(jnp.sum(weights), 1.0)
        loss = jnp.sum(nll * weights) / count
        return loss, {"accuracy": jnp.sum(correct * weights) / count}

    def eval_sums(self, outputs: jnp.ndarray, batch: dict) -> dict:
        """Sums over the real slots of the real examples (batch['mask'] 0 marks eval padding)."""
        nll, correct = masked_nll(outputs, batch["mlm_ids"])
        weights = batch["mlm_weights"] * batch["mask"][:, None]
        real = weights > 0
        return {"nll": jnp.sum(jnp.where(real, nll * weights, 0.0)), "correct": jnp.sum(correct * weights),
                "count": jnp.sum(weights)}

    def finalize(self, sums: dict) -> dict:
        count = max(float(sums["count"]), 1.0)
        loss = float(sums["nll"]) / count
        return {"loss": loss, "accuracy": float(sums["correct"]) / count, "perplexity": float(np.exp(loss))}

    def format(self, results: dict) -> str:
        return _text.format_metrics(results, self.main_metrics)

    def save_predictions(self, path: str, batch: dict, outputs, max_rows: int) -> None:
        """predictions.md (next to `path`): per sequence, the masked tokens and the model's top-1 guesses."""
        name = _token_namer(self.tokenizer_path)
        predicted = np.argmax(np.asarray(outputs), -1)
        lines = ["| sequence | position | true | predicted |", "|---|---|---|---|"]
        for row in range(min(max_rows, len(predicted))):
            for slot in np.flatnonzero(np.asarray(batch["mlm_weights"][row]) > 0):
                lines.append(f"| {row} | {int(batch['mlm_positions'][row][slot])} | "
                             f"{name(int(batch['mlm_ids'][row][slot]))} | {name(int(predicted[row, slot]))} |")
        _text.write_markdown(path, "# MLM predictions on the first validation sequences\n\n" + "\n".join(lines) + "\n")


def _token_namer(tokenizer_path: str):
    """id -> its token string when a tokenizer is configured, else the id as text."""
    if not tokenizer_path:
        return str
    from jaxvision.text.tokenizer import load_tokenizer  # noqa: PLC0415
    tokenizer = load_tokenizer(tokenizer_path)
    return lambda i: f"`{tokenizer.id_to_token(i)}`"
