"""WordPiece tokenizer (BERT-style) trained locally with the `tokenizers` package, saved as tokenizer.json.

Lower-casing BERT normaliser (accents stripped, Chinese characters spaced), BERT pre-tokeniser
(whitespace and punctuation), WordPiece model with `##` continuation pieces. The special tokens
take the first ids: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4; a loaded file that disagrees is refused.

    python -m jaxvision.text.tokenizer --out tokenizer.json --vocab-size 30522 corpus/*.txt
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from jaxvision.fileio import atomic_path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))


def _empty_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def train_tokenizer(files: Sequence[str], out_path: str, vocab_size: int = 30522,
                    min_frequency: int = 2) -> Tokenizer:
    """Trains a WordPiece vocabulary of at most `vocab_size` entries on the text `files` and writes it to
    `out_path` (tokenizer.json, atomically); returns the tokenizer. FileNotFoundError names a missing file."""
    if not files:
        raise ValueError("train_tokenizer: no text files given")
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer training text not found: {path}")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} must exceed the {len(SPECIAL_TOKENS)} special tokens")
    tokenizer = _empty_tokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tokenizer.train(list(files), trainer)
    save_tokenizer(tokenizer, out_path)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: str) -> None:
    """Writes `tokenizer` as JSON to `path`, atomically (a temporary file renamed into place)."""
    with atomic_path(path) as tmp:
        tokenizer.save(tmp)


def load_tokenizer(path: str) -> Tokenizer:
    """The tokenizer saved at `path`; FileNotFoundError / ValueError name the file when it is missing, unreadable,
    or does not give the special tokens their ids (SPECIAL_TOKENS)."""
    if not path:
        raise ValueError("no tokenizer file given: set data.tokenizer (train one with "
                         "`python -m jaxvision.text.tokenizer --out tokenizer.json FILES`)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception as e:  # the Rust library raises plain Exceptions for bad JSON
        raise ValueError(f"cannot read tokenizer {path}: {e}") from e
    ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise ValueError(f"tokenizer {path} maps {list(SPECIAL_TOKENS)} to ids {ids}; expected 0..{len(ids) - 1}")
    return tokenizer


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train a tokenizer on text files and write tokenizer.json."""
    parser = argparse.ArgumentParser(prog="python -m jaxvision.text.tokenizer",
                                     description="train a BERT-style WordPiece tokenizer on text files")
    parser.add_argument("files", nargs="+", help="plain-text training files")
    parser.add_argument("--out", required=True, help="tokenizer.json to write")
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--min-frequency", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        tokenizer = train_tokenizer(args.files, args.out, args.vocab_size, args.min_frequency)
    except (OSError, ValueError) as e:
        print(f"jaxvision: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {os.path.abspath(args.out)}: {tokenizer.get_vocab_size()} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
