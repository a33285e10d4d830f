"""What the text tasks share: the vocabulary check, dummy init inputs, the metrics table and atomic writes."""

from __future__ import annotations

import os

import numpy as np

from jaxvision.config import ConfigError
from jaxvision.data import pipeline
from jaxvision.fileio import write_atomic
from jaxvision.text.tokenizer import CLS_ID, PAD_ID


def check_vocab(config) -> None:
    """ConfigError when the data's token ids (its source's vocab_size) do not fit model.vocab_size."""
    need = pipeline.get_source(config.data, "val").vocab_size
    have = config.model.get("vocab_size", 0)
    if have < need:
        raise ConfigError(f"model.vocab_size={have} is smaller than the data's vocabulary ({need} ids, "
                          f"data.name={config.data.name!r}); set --config.model.vocab_size={need}")


def dummy_tokens(config) -> np.ndarray:
    """int32 [1, data.max_len]: [CLS] then [PAD]s, to initialise a text model."""
    tokens = np.full((1, config.data.max_len), PAD_ID, np.int32)
    tokens[0, 0] = CLS_ID
    return tokens


def format_metrics(results: dict, names: tuple[str, ...]) -> str:
    """Markdown table of the scalar `results` in the order of `names`."""
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {float(results[k]):.4f} |" for k in names if k in results]
    return "\n".join(lines)


def write_markdown(path: str, text: str) -> str:
    """Writes `text` to `path` with its extension replaced by .md (atomically); returns that path."""
    path = os.path.splitext(path)[0] + ".md"
    write_atomic(path, text)
    return path
