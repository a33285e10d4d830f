"""IMDb movie reviews (Maas et al. 2011) in the aclImdb folder layout, for sentiment classification.

    {root}/train/pos/{id}_{rating}.txt   positive reviews (rating 7..10), label 1
    {root}/train/neg/{id}_{rating}.txt   negative reviews (rating 1..4), label 0
    {root}/test/pos/..., {root}/test/neg/...

(`train/unsup` and the other files of the archive are not read.) A review is one UTF-8 file whose
HTML line breaks `<br />` become spaces; it is encoded as [CLS] tokens [SEP] truncated to max_len
(the thesis: 1024) and padded with [PAD]. Examples are ordered negatives then positives, each by id.
"""

from __future__ import annotations

import os
import re

import numpy as np

from jaxvision.data import files
from jaxvision.text.sources import TokenSource, pack_sequence
from jaxvision.text.tokenizer import load_tokenizer

SPLITS = ("train", "test")
LABELS = (("neg", 0), ("pos", 1))
_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")


def read_review(path: str) -> str:
    """The text of review file `path` with `<br />` line breaks as spaces; ValueError naming the file if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise
    except UnicodeDecodeError as e:
        raise ValueError(f"cannot read review {path}: not UTF-8 ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise ValueError(f"cannot read review {path}: {e.strerror or e}") from e
    return re.sub(r"<br\s*/?>", " ", text)


def list_reviews(root: str, split: str) -> list[tuple[str, int]]:
    """[(path, label)] of a split, negatives then positives, each sorted by review id.

    FileNotFoundError names a missing folder; ValueError a `.txt` file not named `{id}_{rating}.txt`
    or a split without reviews.
    """
    if split not in SPLITS:
        raise ValueError(f"IMDb split {split!r} is unknown; expected one of {SPLITS}")
    files.require_dir(root, "IMDb dataset root (aclImdb)")
    reviews = []
    for folder, label in LABELS:
        directory = files.require_dir(os.path.join(root, split, folder), f"IMDb {split}/{folder}")
        numbered = []
        for name in os.listdir(directory):
            if not name.endswith(".txt"):
                continue
            match = _NAME.match(name)
            if not match:
                raise ValueError(f"IMDb review file name is not {{id}}_{{rating}}.txt: {os.path.join(directory, name)}")
            numbered.append((int(match.group(1)), os.path.join(directory, name)))
        reviews += [(path, label) for _, path in sorted(numbered)]
    if not reviews:
        raise ValueError(f"no {{id}}_{{rating}}.txt reviews in {os.path.join(root, split)}/pos or /neg")
    return reviews


class IMDbReviews(TokenSource):
    """grain source of one split: {'tokens': int32 [max_len], 'label': int32 (1 = positive)}."""

    labelled = True

    def __init__(self, root: str, split: str, tokenizer_path: str, max_len: int = 1024):
        self.root, self.split, self.max_len = root, split, max_len
        self.reviews = list_reviews(root, split)
        self.tokenizer = load_tokenizer(tokenizer_path)
        self.vocab_size = self.tokenizer.get_vocab_size()

    def __len__(self) -> int:
        return len(self.reviews)

    def __getitem__(self, index: int) -> dict:
        path, label = self.reviews[files.check_index(repr(self), index, len(self))]
        ids = self.tokenizer.encode(read_review(path), add_special_tokens=False).ids
        return {"tokens": pack_sequence(ids, self.max_len), "label": np.int32(label)}

    def __repr__(self) -> str:
        return f"IMDbReviews(root={self.root!r}, split={self.split!r}, {len(self)} reviews)"
