"""Text data (jaxvision/text): tokenizer, corpus and IMDb readers on fixtures in the real layouts, MLM masking,
the synthetic long-range task, and their grain pipelines."""

import json
import os

import ml_collections
import numpy as np
import pytest

from jaxvision.data import pipeline
from jaxvision.text import (CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID, IMDbReviews, LongRangeMajority, MaskedTokens,
                            TextCorpus, load_tokenizer, mask_tokens, pack_sequence, train_tokenizer)
from jaxvision.text import tokenizer as tokenizer_module
from jaxvision.text.corpus import pack_documents, read_documents

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A lazy dog sleeps in the warm sun all day long.",
    "Quick thinking saves the day, said the brown fox!",
    "The sun is warm; the dog is lazy; the fox is quick.",
]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """{train,val}.txt (one document per line) and a WordPiece tokenizer trained on train.txt."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "train.txt").write_text("\n".join(SENTENCES * 3) + "\n")
    (root / "val.txt").write_text(SENTENCES[0] + "\n\n" + SENTENCES[1] + "\n")
    train_tokenizer([str(root / "train.txt")], str(root / "tokenizer.json"), vocab_size=120, min_frequency=1)
    return root


def decode(tokenizer, ids) -> str:
    return tokenizer.decode([int(i) for i in ids if i not in (PAD_ID, CLS_ID, SEP_ID)])


# ---------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip_and_special_ids(corpus_dir):
    tokenizer = load_tokenizer(str(corpus_dir / "tokenizer.json"))
    assert [tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    assert 40 < tokenizer.get_vocab_size() <= 120
    ids = tokenizer.encode("The LAZY fox sleeps.", add_special_tokens=False).ids
    assert tokenizer.decode(ids) == "the lazy fox sleeps."          # lower-cased, punctuation split off
    assert UNK_ID in tokenizer.encode("zebra", add_special_tokens=False).ids   # 'z' never seen
    assert tokenizer.encode("[MASK]", add_special_tokens=False).ids == [MASK_ID]
    assert sorted(os.listdir(corpus_dir)) == ["tokenizer.json", "train.txt", "val.txt"]   # no temporary left


def test_tokenizer_command_line_and_errors(tmp_path, corpus_dir, capsys):
    out = tmp_path / "sub" / "tok.json"
    assert tokenizer_module.main([str(corpus_dir / "train.txt"), "--out", str(out), "--vocab-size", "60",
                                  "--min-frequency", "1"]) == 0
    assert load_tokenizer(str(out)).get_vocab_size() == 60
    missing = tmp_path / "missing.txt"
    assert tokenizer_module.main([str(missing), "--out", str(out)]) == 1
    assert str(missing) in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.json")):
        load_tokenizer(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=str(bad)):
        load_tokenizer(str(bad))
    # A tokenizer whose special tokens sit at other ids is refused.
    swapped = json.loads((corpus_dir / "tokenizer.json").read_text())
    vocab = swapped["model"]["vocab"]
    vocab["[PAD]"], vocab["[UNK]"] = vocab["[UNK]"], vocab["[PAD]"]
    for entry in swapped["added_tokens"]:
        entry["id"] = vocab[entry["content"]]
    bad.write_text(json.dumps(swapped))
    with pytest.raises(ValueError, match=r"maps .* to ids \[1, 0, 2, 3, 4\]"):
        load_tokenizer(str(bad))


# ---------------------------------------------------------------------------------------------- corpus


def test_pack_sequence_truncates_and_pads():
    np.testing.assert_array_equal(pack_sequence([7, 8, 9], 6), [CLS_ID, 7, 8, 9, SEP_ID, PAD_ID])
    np.testing.assert_array_equal(pack_sequence(range(10, 20), 5), [CLS_ID, 10, 11, 12, SEP_ID])


def test_pack_documents_hand_computed():
    docs = [[10, 11, 12], [13], list(range(14, 21))]    # max_len 6: pieces of at most 4 tokens
    assert pack_documents(docs, 6) == [[CLS_ID, 10, 11, 12, SEP_ID], [CLS_ID, 13, SEP_ID],
                                       [CLS_ID, 14, 15, 16, 17, SEP_ID], [CLS_ID, 18, 19, 20, SEP_ID]]
    assert pack_documents([[10], [11], [12]], 8) == [[CLS_ID, 10, SEP_ID, 11, SEP_ID, 12, SEP_ID]]


def test_read_documents_lines_and_paragraphs(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("first line\nof one\n\n\nsecond  \n\nthird\n")
    assert read_documents(str(path), "line") == ["first line", "of one", "second", "third"]
    assert read_documents(str(path), "blank") == ["first line of one", "second", "third"]
    path.write_bytes(b"ok\n\xff\xfe broken\n")
    with pytest.raises(ValueError, match=f"{path}: not UTF-8|{path}.*not UTF-8"):
        read_documents(str(path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none.txt")):
        read_documents(str(tmp_path / "none.txt"))


def test_text_corpus_packs_the_documents_in_order(corpus_dir):
    tokenizer = load_tokenizer(str(corpus_dir / "tokenizer.json"))
    corpus = TextCorpus(str(corpus_dir / "train.txt"), str(corpus_dir / "tokenizer.json"), max_len=32)
    lengths = [len(tokenizer.encode(s, add_special_tokens=False).ids) for s in SENTENCES * 3]
    expected = pack_documents([[5] * n for n in lengths], 32)
    assert len(corpus) == len(expected) > 1
    tokens = np.stack([corpus[i]["tokens"] for i in range(len(corpus))])
    assert tokens.shape == (len(corpus), 32) and tokens.dtype == np.int32
    assert (tokens[:, 0] == CLS_ID).all()
    assert [(row != PAD_ID).sum() for row in tokens] == [len(s) for s in expected]
    stream = np.concatenate([row[(row != PAD_ID) & (row != CLS_ID) & (row != SEP_ID)] for row in tokens])
    documents = [tokenizer.encode(s, add_special_tokens=False).ids for s in SENTENCES * 3]
    np.testing.assert_array_equal(stream, np.concatenate(documents))          # every token, in file order
    assert tokenizer.decode(documents[0]) == "the quick brown fox jumps over the lazy dog."
    assert [int((row == SEP_ID).sum()) for row in tokens] == [s.count(SEP_ID) for s in expected]
    with pytest.raises(IndexError):
        corpus[len(corpus)]
    with pytest.raises(FileNotFoundError, match=str(corpus_dir / "test.txt")):
        TextCorpus(str(corpus_dir / "test.txt"), str(corpus_dir / "tokenizer.json"), 32)


# ---------------------------------------------------------------------------------------------- IMDb


REVIEWS = {("train", "pos", "10_9.txt"): "A great film.<br /><br />Loved it",
           ("train", "pos", "2_7.txt"): "Good fun",
           ("train", "neg", "0_2.txt"): "Dull and long",
           ("train", "neg", "1_1.txt"): "The worst " + "bad " * 40,
           ("test", "pos", "0_10.txt"): "Great",
           ("test", "neg", "0_3.txt"): "Bad"}


@pytest.fixture
def imdb_root(tmp_path, corpus_dir):
    """aclImdb as the archive lays it out, with the files the reader must skip (unsup/, labeledBow.feat, urls)."""
    root = tmp_path / "aclImdb"
    for (split, folder, name), text in REVIEWS.items():
        os.makedirs(root / split / folder, exist_ok=True)
        (root / split / folder / name).write_text(text)
    os.makedirs(root / "train" / "unsup")
    (root / "train" / "unsup" / "0_0.txt").write_text("unlabelled")
    (root / "train" / "labeledBow.feat").write_text("0 0:1\n")
    (root / "train" / "urls_pos.txt").write_text("http://\n")
    (root / "imdb.vocab").write_text("the\n")
    return root


def test_imdb_reads_labels_in_order_and_truncates(imdb_root, corpus_dir):
    tok_path = str(corpus_dir / "tokenizer.json")
    tokenizer = load_tokenizer(tok_path)
    train = IMDbReviews(str(imdb_root), "train", tok_path, max_len=16)
    assert len(train) == 4
    assert [os.path.basename(p) for p, _ in train.reviews] == ["0_2.txt", "1_1.txt", "2_7.txt", "10_9.txt"]
    examples = [train[i] for i in range(4)]
    assert [int(e["label"]) for e in examples] == [0, 0, 1, 1]
    first = examples[3]["tokens"]
    assert first.dtype == np.int32 and first.shape == (16,) and first[0] == CLS_ID
    assert decode(tokenizer, first) == tokenizer.decode(tokenizer.encode("a great film. loved it").ids)
    assert "<" not in decode(tokenizer, first) and "br" not in decode(tokenizer, first).split()
    long = examples[1]["tokens"]
    assert (long != PAD_ID).all() and long[-1] == SEP_ID                      # truncated to 16: no padding
    short = examples[2]["tokens"]
    ids = tokenizer.encode("good fun", add_special_tokens=False).ids
    assert 2 <= len(ids) <= 12
    assert list(short[:len(ids) + 2]) == [CLS_ID, *ids, SEP_ID] and (short[len(ids) + 2:] == PAD_ID).all()
    test = IMDbReviews(str(imdb_root), "test", tok_path, max_len=16)
    assert [int(test[i]["label"]) for i in range(2)] == [0, 1]


def test_imdb_errors_name_the_path(imdb_root, corpus_dir):
    tok_path = str(corpus_dir / "tokenizer.json")
    bad_name = imdb_root / "train" / "pos" / "review.txt"
    bad_name.write_text("x")
    with pytest.raises(ValueError, match=str(bad_name)):
        IMDbReviews(str(imdb_root), "train", tok_path)
    os.remove(bad_name)
    broken = imdb_root / "train" / "neg" / "5_2.txt"
    broken.write_bytes(b"\xff\xfe\xfa")
    reader = IMDbReviews(str(imdb_root), "train", tok_path)
    with pytest.raises(ValueError, match=str(broken)):
        reader[2]
    os.rename(imdb_root / "test" / "neg", imdb_root / "test" / "negative")
    with pytest.raises(FileNotFoundError, match=str(imdb_root / "test" / "neg")):
        IMDbReviews(str(imdb_root), "test", tok_path)
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        IMDbReviews(str(imdb_root), "train", str(imdb_root / "tokenizer.json"))


def test_imdb_through_the_pipeline_evaluates_the_test_split(imdb_root, corpus_dir):
    config = text_config("imdb", root=str(imdb_root), tokenizer=str(corpus_dir / "tokenizer.json"), max_len=12)
    batches = list(pipeline.make_eval_iterator(config, 4, 0, 1))
    assert len(batches) == 1
    np.testing.assert_array_equal(batches[0]["mask"], [1, 1, 0, 0])
    np.testing.assert_array_equal(batches[0]["label"], [0, 1, 0, 0])
    assert (batches[0]["tokens"][2:, 0] == CLS_ID).all() and (batches[0]["tokens"][2:, 1:] == PAD_ID).all()
    train = next(pipeline.make_train_iterator(config, 4, seed=0, process_index=0, process_count=1))
    assert sorted(train["label"].tolist()) == [0, 0, 1, 1]          # one epoch of the 4 train reviews


# ---------------------------------------------------------------------------------------------- masking


def test_masking_statistics():
    rng = np.random.default_rng(0)
    vocab = 1000
    tokens = np.full(128, PAD_ID, np.int32)
    tokens[0], tokens[121] = CLS_ID, SEP_ID
    counts = {"mask": 0, "random": 0, "same": 0}
    for _ in range(800):
        tokens[1:121] = rng.integers(5, vocab, 120)
        out = mask_tokens(tokens, rng, 0.1, 20, vocab)
        n = int(out["mlm_weights"].sum())
        assert n == 12                                                 # round(0.1 * 120 real tokens)
        pos = out["mlm_positions"][:n]
        assert (np.diff(pos) > 0).all() and (pos >= 1).all() and (pos <= 120).all()
        assert (out["mlm_positions"][n:] == 0).all() and (out["mlm_ids"][n:] == 0).all()
        np.testing.assert_array_equal(out["mlm_ids"][:n], tokens[pos])
        unmasked = np.setdiff1d(np.arange(128), pos)
        np.testing.assert_array_equal(out["tokens"][unmasked], tokens[unmasked])
        new = out["tokens"][pos]
        counts["mask"] += int((new == MASK_ID).sum())
        counts["same"] += int((new == tokens[pos]).sum())
        counts["random"] += int(((new != MASK_ID) & (new != tokens[pos])).sum())
        assert (new[new != MASK_ID] >= 5).all()
    total = sum(counts.values())
    assert total == 800 * 12
    assert abs(counts["mask"] / total - 0.8) < 0.02                     # 3 sigma ~ 0.012
    assert abs(counts["random"] / total - 0.1) < 0.015
    assert abs(counts["same"] / total - 0.1) < 0.015


def test_masking_caps_and_skips_special_tokens():
    rng = np.random.default_rng(1)
    tokens = np.array([CLS_ID, *range(5, 105), SEP_ID, PAD_ID], np.int32)
    out = mask_tokens(tokens, rng, 0.5, 7, 200)
    assert out["mlm_weights"].sum() == 7                               # 50 wanted, capped at 7 slots
    short = mask_tokens(np.array([CLS_ID, 9, SEP_ID, PAD_ID], np.int32), rng, 0.1, 3, 200)
    np.testing.assert_array_equal(short["mlm_positions"], [1, 0, 0])   # at least one prediction
    none = mask_tokens(np.array([CLS_ID, SEP_ID, PAD_ID], np.int32), rng, 0.1, 3, 200)
    assert none["mlm_weights"].sum() == 0


def test_masked_source_is_deterministic_per_seed_and_index():
    source = MaskedTokens(LongRangeMajority("val", 10, 64, 64, vocab_size=300), 0.15, 12)
    a, b = source.eval_example(source[3], 3), source.eval_example(source[3], 3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    other = source.eval_example(source[3], 4)
    assert not np.array_equal(a["mlm_positions"], other["mlm_positions"])
    config = text_config("long_range", max_len=64, min_len=64, vocab_size=300, max_count=8, num_train=40,
                         num_val=6, mask_prob=0.15, max_predictions=12)
    first = list(pipeline.make_eval_iterator(config, 4, 0, 1))
    second = list(pipeline.make_eval_iterator(config, 4, 0, 1))
    np.testing.assert_array_equal(first[0]["mlm_positions"], second[0]["mlm_positions"])
    np.testing.assert_array_equal(first[1]["mask"], [1, 1, 0, 0])
    assert (first[1]["mlm_weights"][2:] == 0).all()
    train = pipeline.make_train_iterator(config, 4, seed=3, process_index=0, process_count=1)
    again = pipeline.make_train_iterator(config, 4, seed=3, start_step=1, process_index=0, process_count=1)
    next(train)
    step1 = next(train)
    np.testing.assert_array_equal(step1["tokens"], next(again)["tokens"])      # resumable stream
    assert set(step1) == {"tokens", "label", "mlm_positions", "mlm_ids", "mlm_weights"}


# ---------------------------------------------------------------------------------------------- long range


def test_long_range_examples_follow_the_rule():
    source = LongRangeMajority("train", 600, max_len=96, min_len=64, vocab_size=40, max_count=8)
    labels, gaps, spans = [], [], []
    for i in range(len(source)):
        example = source[i]
        tokens, label = example["tokens"], int(example["label"])
        length = int((tokens != PAD_ID).sum())
        assert 64 <= length <= 96 and tokens[0] == CLS_ID and tokens[length - 1] == SEP_ID
        assert (tokens[length:] == PAD_ID).all() and (tokens[1:length - 1] >= 5).all()
        count_a, count_b = int((tokens == 5).sum()), int((tokens == 6).sum())
        assert 1 <= count_a <= 8 and 1 <= count_b <= 8 and count_a != count_b
        assert label == int(count_a > count_b)
        labels.append(label)
        gaps.append(abs(count_a - count_b))
        markers = np.flatnonzero((tokens == 5) | (tokens == 6))
        spans.append((markers[-1] - markers[0]) / length)
    assert abs(np.mean(labels) - 0.5) < 0.07
    assert abs(np.mean(np.array(gaps) <= 2) - 26 / 56) < 0.07          # 26 of the 56 ordered pairs differ by 1 or 2
    assert np.median(spans) > 0.5                                       # markers spread over the sequence
    np.testing.assert_array_equal(source[5]["tokens"], LongRangeMajority("train", 600, 96, 64, 40)[5]["tokens"])
    assert not np.array_equal(source[5]["tokens"], LongRangeMajority("val", 600, 96, 64, 40)[5]["tokens"])
    with pytest.raises(ValueError, match="vocab_size=7"):
        LongRangeMajority("train", 1, 64, vocab_size=7)
    with pytest.raises(ValueError, match=r"data.min_len \(10\)"):
        LongRangeMajority("train", 1, 64, min_len=10)


def text_config(name, **fields) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(name=name, num_threads=1, prefetch=1, **fields))
