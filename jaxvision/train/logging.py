"""Run logs: `workdir/metrics.jsonl`, TensorBoard event files and a progress bar (process 0 only)."""

from __future__ import annotations

import json
import math
import os
import sys
import time

import jax
import numpy as np
import tqdm

from jaxvision.fileio import write_atomic


class MetricsWriter:
    """Appends one JSON object per logging event and mirrors scalars to TensorBoard."""

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter  # TensorBoard events without TensorFlow
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: dict) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in scalars.items() if np.ndim(v) == 0}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **clean}) + "\n")
        for key, value in clean.items():
            if math.isfinite(value):
                self._tb.add_scalar(key, value, int(step))
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def truncate_after(path: str, step: int) -> None:
    """Drops log lines written after `step` (a resumed run rewrites them), atomically."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    write_atomic(path, "".join(lines))


class Progress:
    """tqdm bar showing step, loss, examples/s ('img/s', or `unit`/s) and ETA."""

    def __init__(self, start_step: int, total_steps: int, batch_size: int, unit: str = "img"):
        self.batch_size, self.unit = batch_size, unit
        self.bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                             disable=jax.process_index() != 0, file=sys.stderr, mininterval=1.0)
        self._last_time, self._last_step = time.perf_counter(), start_step

    def update(self, step: int, loss: float | None = None) -> float:
        """Advances the bar to `step`; returns examples/s since the last update."""
        now = time.perf_counter()
        steps = step - self._last_step
        images_per_s = steps * self.batch_size / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        postfix = {f"{self.unit}/s": f"{images_per_s:.1f}"}
        if loss is not None:
            postfix["loss"] = f"{loss:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(steps)
        return images_per_s

    def close(self) -> None:
        self.bar.close()
