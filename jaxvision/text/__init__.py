"""Text data for the DCT-Former experiments (thesis ch. 4): WordPiece tokenizer, corpus / IMDb readers,
MLM masking and a synthetic long-range task, as grain sources (see `jaxvision.text.sources`)."""

from jaxvision.text.corpus import TextCorpus
from jaxvision.text.imdb import IMDbReviews
from jaxvision.text.long_range import LongRangeMajority
from jaxvision.text.masking import MaskedTokens, mask_tokens
from jaxvision.text.sources import TokenSource, pack_sequence
from jaxvision.text.tokenizer import (CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID, load_tokenizer,
                                      train_tokenizer)

__all__ = ["CLS_ID", "IMDbReviews", "LongRangeMajority", "MASK_ID", "MaskedTokens", "PAD_ID", "SEP_ID",
           "SPECIAL_TOKENS", "TextCorpus", "TokenSource", "UNK_ID", "load_tokenizer", "mask_tokens",
           "pack_sequence", "train_tokenizer"]
