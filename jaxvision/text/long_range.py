"""A synthetic long-range classification task that a CPU learns in minutes ("long-range majority").

Each example is [CLS] x_1 ... x_{L-2} [SEP] [PAD]... with L uniform in [min_len, max_len]. The x are
random "noise" tokens except for k_a copies of marker A and k_b copies of marker B at uniformly random
positions, with k_a != k_b drawn uniformly from 1..max_count (so both labels are equally likely). The
label is 1 when A occurs more often than B. The markers are spread over the whole sequence, so the
label depends on all of it: a window of w tokens sees about w / L of the markers, and the closer the
counts the more the decision needs every one of them (about a third of the pairs differ by 1 or 2).

A first idea, "is the symbol in the first quarter the same as the one in the last quarter", is not
used: its label is uncorrelated with any single token, and a 2-block model at width 64 stayed at
chance (loss 0.693) for 275 steps of 32 sequences of 192..256 tokens.

Token ids: the 5 special tokens (jaxvision.text.tokenizer), A = 5, B = 6, then the noise tokens up to
vocab_size - 1. An example is a pure function of (split, index): train and val are disjoint random
streams of `num` examples each.
"""

from __future__ import annotations

import numpy as np

from jaxvision.data import files
from jaxvision.text.sources import TokenSource
from jaxvision.text.tokenizer import CLS_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS

_SPLIT_SEED = {"train": 0, "val": 1}
MARKER_A, MARKER_B = len(SPECIAL_TOKENS), len(SPECIAL_TOKENS) + 1
FIRST_NOISE = MARKER_B + 1


class LongRangeMajority(TokenSource):
    """grain source: {'tokens': int32 [max_len], 'label': int32} (see the module docstring)."""

    labelled = True

    def __init__(self, split: str, num: int, max_len: int = 256, min_len: int | None = None, vocab_size: int = 64,
                 max_count: int = 8):
        if split not in _SPLIT_SEED:
            raise ValueError(f"long-range split {split!r} is unknown; expected one of {tuple(_SPLIT_SEED)}")
        min_len = max_len if min_len is None else min_len
        if not 2 * max_count + 2 <= min_len <= max_len:
            raise ValueError(f"long-range lengths need 2 * data.max_count + 2 ({2 * max_count + 2}) <= data.min_len "
                             f"({min_len}) <= data.max_len ({max_len})")
        if max_count < 2 or vocab_size <= FIRST_NOISE:
            raise ValueError(f"long-range task: data.max_count={max_count} must be >= 2 and data.vocab_size="
                             f"{vocab_size} must exceed {FIRST_NOISE} (special tokens, 2 markers, noise)")
        self.split, self.num, self.max_len, self.min_len = split, num, max_len, min_len
        self.vocab_size, self.max_count = vocab_size, max_count

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> dict:
        index = files.check_index(repr(self), index, self.num)
        rng = np.random.default_rng([_SPLIT_SEED[self.split], index])
        length = int(rng.integers(self.min_len, self.max_len + 1))
        tokens = np.full(self.max_len, PAD_ID, np.int32)
        tokens[0], tokens[length - 1] = CLS_ID, SEP_ID
        tokens[1:length - 1] = rng.integers(FIRST_NOISE, self.vocab_size, length - 2)
        count_a, count_b = 1 + rng.choice(self.max_count, 2, replace=False)
        positions = 1 + rng.choice(length - 2, count_a + count_b, replace=False)
        tokens[positions[:count_a]], tokens[positions[count_a:]] = MARKER_A, MARKER_B
        return {"tokens": tokens, "label": np.int32(count_a > count_b)}

    def __repr__(self) -> str:
        return f"LongRangeMajority(split={self.split!r}, {self.num} examples, length {self.min_len}..{self.max_len})"
