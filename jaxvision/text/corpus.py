"""Plain-text corpus for MLM pretraining: documents tokenised and packed into [CLS] ... [SEP] sequences.

A file holds one document per line (`separator='line'`) or paragraphs separated by blank lines
(`separator='blank'`, the lines of a paragraph joined by spaces). Documents are tokenised without
special tokens and cut into pieces of at most max_len - 2 tokens; pieces are packed greedily, in file
order, as [CLS] piece [SEP] piece [SEP] ... while they fit in max_len tokens, the rest [PAD]. So every
sequence starts with [CLS] and ends its last piece with [SEP], and documents are split only when
longer than a sequence. Packing runs once per (file, tokenizer, max_len) in a process (cached).
"""

from __future__ import annotations

import functools
import os

import numpy as np

from jaxvision.data import files
from jaxvision.text.sources import TokenSource
from jaxvision.text.tokenizer import CLS_ID, SEP_ID, load_tokenizer

SEPARATORS = ("line", "blank")


def read_documents(path: str, separator: str = "line") -> list[str]:
    """The non-empty documents of text file `path`; ValueError naming the file when it is not UTF-8."""
    if separator not in SEPARATORS:
        raise ValueError(f"document separator {separator!r} is unknown; choose one of {SEPARATORS}")
    files.require_file(path, "text corpus file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"cannot read text corpus {path}: not UTF-8 ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise ValueError(f"cannot read text corpus {path}: {e.strerror or e}") from e
    if separator == "line":
        return [line.strip() for line in text.splitlines() if line.strip()]
    paragraphs = [" ".join(line.strip() for line in block.splitlines()) for block in text.split("\n\n")]
    return [p.strip() for p in paragraphs if p.strip()]


def pack_documents(documents: list[list[int]], max_len: int) -> list[list[int]]:
    """Greedy packing of token-id documents into [CLS] piece [SEP] piece [SEP] ... sequences (unpadded)."""
    piece_len = max_len - 2
    if piece_len < 1:
        raise ValueError(f"max_len={max_len} leaves no room between [CLS] and [SEP]")
    sequences, current = [], [CLS_ID]
    for ids in documents:
        for start in range(0, len(ids), piece_len):
            piece = ids[start:start + piece_len]
            if len(current) + len(piece) + 1 > max_len:
                sequences.append(current)
                current = [CLS_ID]
            current += piece + [SEP_ID]
    if len(current) > 1:
        sequences.append(current)
    return sequences


@functools.lru_cache(maxsize=4)
def _packed(path: str, separator: str, tokenizer_path: str, max_len: int, _stamp: tuple) -> np.ndarray:
    """int32 [num_sequences, max_len] of the packed corpus (`_stamp`: file sizes and mtimes, for the cache)."""
    tokenizer = load_tokenizer(tokenizer_path)
    encodings = tokenizer.encode_batch(read_documents(path, separator), add_special_tokens=False)
    sequences = pack_documents([e.ids for e in encodings], max_len)
    if not sequences:
        raise ValueError(f"text corpus {path} holds no tokens")
    array = np.zeros((len(sequences), max_len), np.int32)
    for row, ids in zip(array, sequences):
        row[:len(ids)] = ids
    array.setflags(write=False)
    return array


def _stamp(*paths: str) -> tuple:
    return tuple((os.path.getsize(p), os.path.getmtime(p)) for p in paths)


class TextCorpus(TokenSource):
    """grain source of the packed sequences of one text file: {'tokens': int32 [max_len]}."""

    def __init__(self, path: str, tokenizer_path: str, max_len: int, separator: str = "line"):
        files.require_file(path, "text corpus file")
        self.path, self.max_len = path, max_len
        self.vocab_size = load_tokenizer(tokenizer_path).get_vocab_size()
        self.sequences = _packed(os.path.abspath(path), separator, os.path.abspath(tokenizer_path), max_len,
                                 _stamp(path, tokenizer_path))

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict:
        return {"tokens": self.sequences[files.check_index(repr(self), index, len(self))].copy()}

    def __repr__(self) -> str:
        return f"TextCorpus({self.path!r}, {len(self)} sequences of {self.max_len})"
