"""BERT masked-language-model inputs with a fixed number of prediction slots (the sparse MLM head's).

Of the real tokens of a sequence (not [PAD], [CLS], [SEP], [MASK]), round(mask_prob * count) (at
least 1, at most max_predictions) are chosen uniformly without replacement; each chosen token becomes
[MASK] with probability 0.8, a uniformly random non-special token with probability 0.1, and stays
unchanged otherwise (Devlin et al. 2019). The thesis masks with probability 0.1.

Outputs: 'tokens' (the masked input), 'mlm_positions' int32 [max_predictions] (sorted, padded with 0),
'mlm_ids' int32 (the original tokens there, 0 on padding), 'mlm_weights' float32 (1 real, 0 padding).
"""

from __future__ import annotations

import numpy as np

from jaxvision.text.sources import TokenSource
from jaxvision.text.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS

NOT_MASKABLE = (PAD_ID, CLS_ID, SEP_ID, MASK_ID)
MASK_FRACTION, RANDOM_FRACTION = 0.8, 0.1


def mask_tokens(tokens: np.ndarray, rng: np.random.Generator, mask_prob: float, max_predictions: int,
                vocab_size: int) -> dict:
    """The MLM example of int token ids [N] (see the module docstring); `rng` draws every random choice."""
    candidates = np.flatnonzero(~np.isin(tokens, NOT_MASKABLE))
    num = min(max_predictions, max(1, round(mask_prob * len(candidates)))) if len(candidates) else 0
    positions = np.sort(rng.choice(candidates, num, replace=False)) if num else np.zeros(0, np.int64)
    kind = rng.random(num)
    inputs = np.asarray(tokens, np.int32).copy()
    inputs[positions[kind < MASK_FRACTION]] = MASK_ID
    random_slots = positions[(kind >= MASK_FRACTION) & (kind < MASK_FRACTION + RANDOM_FRACTION)]
    inputs[random_slots] = rng.integers(len(SPECIAL_TOKENS), vocab_size, len(random_slots))
    out = {"mlm_positions": np.zeros(max_predictions, np.int32), "mlm_ids": np.zeros(max_predictions, np.int32),
           "mlm_weights": np.zeros(max_predictions, np.float32)}
    out["mlm_positions"][:num] = positions
    out["mlm_ids"][:num] = tokens[positions]
    out["mlm_weights"][:num] = 1.0
    return {"tokens": inputs, **out}


class MaskedTokens(TokenSource):
    """A token source whose examples are masked for MLM: freshly in every training position (the train
    stream's rng), and deterministically per (`eval_seed`, index) for evaluation."""

    def __init__(self, base: TokenSource, mask_prob: float, max_predictions: int, eval_seed: int = 0):
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"data.mask_prob={mask_prob} must be in (0, 1)")
        if max_predictions < 1:
            raise ValueError(f"data.max_predictions={max_predictions} must be >= 1")
        self.base, self.mask_prob, self.max_predictions, self.eval_seed = base, mask_prob, max_predictions, eval_seed
        self.max_len, self.vocab_size, self.labelled = base.max_len, base.vocab_size, base.labelled

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        return self.base[index]

    def _mask(self, example: dict, rng: np.random.Generator) -> dict:
        masked = mask_tokens(example["tokens"], rng, self.mask_prob, self.max_predictions, self.vocab_size)
        return {**example, **masked}

    def train_example(self, example: dict, rng: np.random.Generator) -> dict:
        return self._mask(example, rng)

    def eval_example(self, example: dict, index: int) -> dict:
        return self._mask(example, np.random.default_rng([self.eval_seed, index]))

    def padding_example(self) -> dict:
        example = self.base.padding_example()
        zeros = np.zeros(self.max_predictions, np.int32)
        return {**example, "mlm_positions": zeros, "mlm_ids": zeros.copy(),
                "mlm_weights": np.zeros(self.max_predictions, np.float32)}

    def __repr__(self) -> str:
        return f"MaskedTokens({self.base!r}, mask_prob={self.mask_prob}, max_predictions={self.max_predictions})"
