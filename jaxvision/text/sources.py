"""The contract of the text data sources and the [CLS] ... [SEP] [PAD]... layout they share.

A token source is a grain random-access source (`__len__`, `__getitem__`) whose examples hold
'tokens' int32 [max_len] (and 'label' int32 for classification). Unlike the image sources, it says
itself how an example becomes model-ready, so `jaxvision.data.pipeline` needs no text knowledge:
`train_example(example, rng)` in the train stream (rng: a function of (seed, stream position)),
`eval_example(example, index)` in the eval pass (deterministic per index) and `padding_example()` for
the slots that fill the last eval batch (its first token is [CLS], so attention has a real key).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxvision.text.tokenizer import CLS_ID, PAD_ID, SEP_ID


def pack_sequence(ids: Sequence[int], max_len: int) -> np.ndarray:
    """[CLS] ids[:max_len - 2] [SEP] [PAD]... as int32 [max_len] (longer inputs are truncated)."""
    if max_len < 3:
        raise ValueError(f"max_len={max_len} leaves no room between [CLS] and [SEP]")
    body = list(ids)[:max_len - 2]
    tokens = np.full(max_len, PAD_ID, np.int32)
    tokens[0], tokens[1:1 + len(body)], tokens[1 + len(body)] = CLS_ID, body, SEP_ID
    return tokens


class TokenSource:
    """Base class of the text sources; subclasses set `max_len`, `vocab_size`, `labelled` and implement
    `__len__` / `__getitem__`. Examples pass through unchanged unless a subclass (masking) says otherwise."""

    max_len: int
    vocab_size: int
    labelled: bool = False

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        raise NotImplementedError

    def train_example(self, example: dict, rng: np.random.Generator) -> dict:
        """The example as the model is trained on it (`rng` drives any randomness)."""
        return example

    def eval_example(self, example: dict, index: int) -> dict:
        """The example as it is evaluated (a pure function of `index`)."""
        return example

    def padding_example(self) -> dict:
        """A filler example shaped like the real ones: [CLS] then [PAD]s (label 0)."""
        tokens = np.full(self.max_len, PAD_ID, np.int32)
        tokens[0] = CLS_ID
        return {"tokens": tokens, "label": np.int32(0)} if self.labelled else {"tokens": tokens}
