"""The BERT-style text model (jaxvision/models/bert.py), the mlm / text_classification tasks, encoder transfer from
an MLM run, and the long-range config trained end to end through the `jaxvision` CLI."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import ROOT, run_cli
from jaxvision.models import count_params
from jaxvision import models
from jaxvision.models.bert import Classifier
from jaxvision.tasks.mlm import MLMTask
from jaxvision.tasks.text_classification import TextClassificationTask
from jaxvision.text import CLS_ID, PAD_ID, SEP_ID
from jaxvision.train import parallel
from jaxvision.train.checkpoint import Checkpointer
from jaxvision.train.loop import load_encoder_from_run
from jaxvision.train.state import TrainState, state_to_tree

LONG_RANGE = os.path.join(ROOT, "configs", "dct_former", "long_range.py")
TINY = dict(vocab_size=50, max_len=40, width=32, depth=2, num_heads=4, mlp_dim=64, dropout_rate=0.0,
            attention_dropout_rate=0.0)


def random_tokens(batch, length, real, seed=0, vocab=50) -> jnp.ndarray:
    """[CLS] random tokens [SEP] then [PAD] up to `length`; `real` tokens per row including [CLS] / [SEP]."""
    rng = np.random.default_rng(seed)
    tokens = np.full((batch, length), PAD_ID, np.int32)
    tokens[:, 1:real - 1] = rng.integers(5, vocab, (batch, real - 2))
    tokens[:, 0], tokens[:, real - 1] = CLS_ID, SEP_ID
    return jnp.asarray(tokens)


@pytest.fixture(scope="module")
def tiny():
    """bert_tiny (TINY sizes, MLM head) and its variables, initialised once (compiled); the tests apply it eagerly,
    which on a CPU is faster than compiling each small call."""
    model = models.create("bert_tiny", **TINY)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), random_tokens(2, 40, 40), jnp.zeros((2, 4), jnp.int32))
    return model, variables


def encoder_cls(model, variables, tokens):
    """The encoder's hidden state of the [CLS] token [B, width], in eval mode."""
    return model.apply(variables, tokens, method=lambda m, t: m.encoder(t, False)[:, 0])


def test_bert_small_parameter_count_by_hand():
    v, n, d, f = 30522, 512, 512, 2048                 # vocab, position rows, width, FFN
    # per block: norm1, attn/qkv, attn/proj, norm2, mlp/fc1, mlp/fc2
    block = (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (2 * d) + (d * f + f) + (f * d + d)
    assert block == 3_152_384
    encoder = v * d + n * d + 2 * d + 4 * block + 2 * d  # token + position embeddings, embedding LN, 4 blocks, final LN
    assert encoder == 28_500_992
    mlm_head = (d * d + d) + 2 * d + v                   # dense, LN, vocabulary bias (decoder tied to the embedding)
    classifier = (d * d + d) + (d + 1)                   # pooler, output logit
    tokens, positions = jnp.zeros((1, 16), jnp.int32), jnp.zeros((1, 3), jnp.int32)
    shapes = lambda model, *x: jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *x))["params"]  # noqa: E731
    mlm = shapes(models.create("bert_small"), tokens, positions)
    cls = shapes(models.create("bert_small", head="classification"), tokens)
    assert count_params(mlm["encoder"]) == count_params(cls["encoder"]) == encoder
    assert count_params(mlm) == encoder + mlm_head == 28_795_194
    assert count_params(cls) == encoder + classifier == 28_764_161
    assert set(mlm) == {"encoder", "mlm_head"} and set(cls) == {"encoder", "classifier"}
    sinusoidal = shapes(models.create("bert_small", positions="sinusoidal"), tokens, positions)
    assert count_params(sinusoidal) == encoder + mlm_head - n * d


def test_sparse_head_equals_the_dense_head_gathered_and_decodes_through_the_embedding(tiny):
    model, variables = tiny
    tokens = random_tokens(2, 40, 20)                 # every test applies [2, 40] tokens: eager ops compile once
    positions = jnp.array([[1, 5, 7, 0], [2, 3, 18, 19]])
    sparse = model.apply(variables, tokens, positions)
    dense = model.apply(variables, tokens)
    assert sparse.shape == (2, 4, 50) and dense.shape == (2, 40, 50) and sparse.dtype == jnp.float32
    np.testing.assert_allclose(sparse, jnp.take_along_axis(dense, positions[..., None], axis=1), atol=1e-5)

    # The head by hand: Dense -> exact GELU -> LayerNorm -> token embedding^T + bias.
    params = variables["params"]
    hidden = model.apply(variables, tokens, method=lambda m, t: m.encoder(t, False))
    h = np.take_along_axis(np.asarray(hidden), np.asarray(positions)[..., None], axis=1)
    head = params["mlm_head"]
    x = h @ np.asarray(head["dense"]["kernel"]) + np.asarray(head["dense"]["bias"])
    x = np.asarray(jax.nn.gelu(x, approximate=False))
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    x = x * np.asarray(head["norm"]["scale"]) + np.asarray(head["norm"]["bias"])
    embedding = np.asarray(params["encoder"]["token_embed"]["embedding"])
    np.testing.assert_allclose(sparse, x @ embedding.T + np.asarray(head["bias"]), atol=2e-5)
    assert all(np.shape(w) != (32, 50) for w in jax.tree.leaves(head))     # no decoder matrix of its own

    cls = models.create("bert_tiny", head="classification", **TINY)
    assert jax.eval_shape(lambda: cls.init(jax.random.PRNGKey(0), tokens))["params"]["classifier"]["out"][
        "kernel"].shape == (32, 1)
    assert jax.eval_shape(lambda: cls.apply({"params": {**params, "classifier": classifier_params()}}, tokens)
                          ).shape == (2,)


def classifier_params():
    return Classifier().init(jax.random.PRNGKey(5), jnp.zeros((1, 32)), False)["params"]


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_padding_does_not_change_the_cls_output(tiny, positions):
    _, variables = tiny
    model = models.create("bert_tiny", positions=positions, **TINY)
    if positions == "sinusoidal":
        encoder = {k: v for k, v in variables["params"]["encoder"].items() if k != "pos_embed"}
        variables = {"params": {**variables["params"], "encoder": encoder}}
    short = random_tokens(2, 12, 12, seed=3)
    padded = jnp.pad(short, ((0, 0), (0, 28)))                               # 28 more [PAD] tokens
    cls_padded = encoder_cls(model, variables, padded)
    np.testing.assert_allclose(encoder_cls(model, variables, short), cls_padded, atol=1e-5)
    changed = padded.at[:, 20].set(7)                                       # a real token there changes it
    assert np.abs(encoder_cls(model, variables, changed) - cls_padded).max() > 1e-3


def test_learned_positions_bound_the_length_and_bad_options_are_named(tiny):
    model, variables = tiny
    with pytest.raises(ValueError, match="max_len=40"):
        model.apply(variables, jnp.zeros((1, 41), jnp.int32))
    with pytest.raises(ValueError, match="model.head='pooled'"):
        models.create("bert_tiny", head="pooled")
    with pytest.raises(ValueError, match="model.positions"):
        models.create("bert_tiny", positions="rotary")


def test_attention_spec_reaches_every_block(tiny):
    _, variables = tiny
    tokens = random_tokens(2, 40, 40)
    cls = {spec: encoder_cls(models.create("bert_tiny", attention=spec, **TINY), variables, tokens)
           for spec in ("vanilla", "dct-0.25")}
    assert np.abs(cls["vanilla"] - cls["dct-0.25"]).max() > 1e-2             # same weights, other attention


# ---------------------------------------------------------------------------------------------- tasks


def task_config(task_name: str, **data) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        task=task_name, model=dict(name="bert_tiny", vocab_size=40),
        data=dict(name="long_range", max_len=32, min_len=32, vocab_size=40, max_count=8, num_train=8, num_val=8,
                  num_threads=1, prefetch=1, **data)))


def test_mlm_loss_and_metrics_hand_computed():
    task = MLMTask(task_config("mlm", mask_prob=0.1, max_predictions=3))
    logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.6, 0.3], [1 / 3, 1 / 3, 1 / 3]]]))
    batch = {"mlm_ids": jnp.array([[0, 2, 1]]), "mlm_weights": jnp.array([[1.0, 1.0, 0.0]]),
             "mask": jnp.array([1.0])}
    loss, aux = task.loss(logits, batch)
    np.testing.assert_allclose(loss, (-np.log(0.5) - np.log(0.3)) / 2, rtol=1e-6)
    np.testing.assert_allclose(aux["accuracy"], 0.5)                         # slot 0 right, slot 1 wrong
    padded = {k: jnp.concatenate([v, v]) for k, v in batch.items()}
    padded["mask"] = jnp.array([1.0, 0.0])                                   # the second copy is eval padding
    results = task.finalize(jax.tree.map(np.asarray, task.eval_sums(jnp.concatenate([logits, logits]), padded)))
    np.testing.assert_allclose(results["loss"], float(loss), rtol=1e-6)
    np.testing.assert_allclose(results["perplexity"], np.exp(float(loss)), rtol=1e-6)
    assert results["accuracy"] == 0.5
    with pytest.raises(ValueError, match="data.mask_prob"):
        MLMTask(task_config("mlm"))


def test_classification_metrics_hand_computed():
    task = TextClassificationTask(task_config("text_classification"))
    # 10 real examples: tp 3, fn 2, fp 1, tn 4; then 2 padding examples that predict wrongly.
    labels = jnp.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0])
    logits = jnp.array([2.0, 1.0, 0.5, -1.0, -2.0, 0.3, -0.2, -1.0, -3.0, -0.5, -4.0, 4.0])
    mask = jnp.array([1.0] * 10 + [0.0] * 2)
    results = task.finalize(jax.tree.map(np.asarray, task.eval_sums(logits, {"label": labels, "mask": mask})))
    assert results["accuracy"] == pytest.approx(0.7)
    p_pos, r_pos, p_neg, r_neg = 3 / 4, 3 / 5, 4 / 6, 4 / 5
    f1 = lambda p, r: 2 * p * r / (p + r)  # noqa: E731
    assert results["precision"] == pytest.approx((p_pos + p_neg) / 2)
    assert results["recall"] == pytest.approx((r_pos + r_neg) / 2)
    assert results["f1"] == pytest.approx((f1(p_pos, r_pos) + f1(p_neg, r_neg)) / 2)   # 0.6970
    bce = optax.sigmoid_binary_cross_entropy(logits[:10], labels[:10].astype(jnp.float32))
    assert results["loss"] == pytest.approx(float(jnp.mean(bce)), rel=1e-6)


def test_vocabulary_larger_than_the_model_is_a_config_error():
    config = task_config("text_classification")
    config.model.vocab_size = 30
    with pytest.raises(ValueError, match="model.vocab_size=30 is smaller than the data's vocabulary \\(40"):
        TextClassificationTask(config)


# ---------------------------------------------------------------------------------------------- encoder transfer


def test_classifier_encoder_starts_from_an_mlm_checkpoint(tmp_path, tiny):
    mesh = parallel.make_mesh()
    model, variables = tiny
    mlm_state = TrainState(step=jnp.array(7), params=variables["params"], batch_stats={},
                           opt_state=optax.adamw(1e-3).init(variables["params"]), rng=jax.random.PRNGKey(1),
                           apply_fn=model.apply, tx=optax.adamw(1e-3))
    checkpointer = Checkpointer(str(tmp_path / "mlm"))
    checkpointer.save(7, state_to_tree(mlm_state))
    checkpointer.close()

    cls_params = {"encoder": jax.tree.map(jnp.zeros_like, variables["params"]["encoder"]),
                  "classifier": classifier_params()}
    state = mlm_state.replace(params=cls_params, opt_state=optax.adamw(1e-5).init(cls_params))
    config = ml_collections.ConfigDict(dict(model=dict(name="bert_tiny", init_from=str(tmp_path / "mlm"))))
    loaded = load_encoder_from_run(config, state, mesh)
    for a, b in zip(jax.tree.leaves(loaded.params["encoder"]), jax.tree.leaves(variables["params"]["encoder"])):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(loaded.params["classifier"]), jax.tree.leaves(cls_params["classifier"])):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(state.params["encoder"]["token_embed"]["embedding"],
                              loaded.params["encoder"]["token_embed"]["embedding"])

    encoder = cls_params["encoder"]
    wide = {**encoder, "blocks_0": {**encoder["blocks_0"], "mlp": {**encoder["blocks_0"]["mlp"], "fc1": {
        "kernel": jnp.zeros((32, 96)), "bias": jnp.zeros(96)}}}}
    wide_state = state.replace(params={**cls_params, "encoder": wide})
    with pytest.raises(ValueError, match=r"blocks_0/mlp/fc1/kernel \[32, 64\] vs \[32, 96\]"):
        load_encoder_from_run(config, wide_state, mesh)
    config.model.init_from = str(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty")):
        load_encoder_from_run(config, state, mesh)


# ---------------------------------------------------------------------------------------------- end to end


TINY_LONG_RANGE = [
    "--config.data.max_len=32", "--config.data.min_len=24", "--config.data.vocab_size=24", "--config.data.num_val=10",
    "--config.model.width=32", "--config.model.mlp_dim=64", "--config.model.num_heads=2", "--config.model.depth=1",
    "--config.train.batch_size=8", "--config.train.num_steps=3", "--config.train.log_every=1",
    "--config.train.eval_every=3", "--config.eval.batch_size=8",
]


def test_long_range_config_trains_and_evaluates_through_the_cli(tmp_path):
    workdir = str(tmp_path / "run")
    run_cli(["train", "--config", LONG_RANGE, "--workdir", workdir, *TINY_LONG_RANGE])
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    train = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3]
    assert all(np.isfinite(r["train/loss"]) and r["train/sequences_per_s"] > 0 for r in train)
    evals = [r for r in rows if "eval/accuracy" in r]
    assert len(evals) == 1 and evals[0]["step"] == 3
    accuracy = evals[0]["eval/accuracy"]
    assert accuracy * 10 == pytest.approx(round(accuracy * 10))          # 10 real examples, 6 padding slots
    assert {"eval/loss", "eval/f1", "eval/precision", "eval/recall"} <= set(evals[0])
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "3"))

    run_cli(["eval", "--workdir", workdir])
    with open(os.path.join(workdir, "eval_metrics.json")) as f:
        again = json.load(f)
    assert again["step"] == 3 and again["accuracy"] == pytest.approx(accuracy)
    with open(os.path.join(workdir, "predictions.md")) as f:
        assert len(f.read().splitlines()) == 4 + 4        # title, blank, header, rule + 4 rows (num_grid_images)


@pytest.mark.slow
def test_mlm_pretraining_then_imdb_fine_tuning_through_the_cli(tmp_path):
    """The thesis pipeline on fixtures: tokenizer -> MLM on a corpus -> IMDb classifier from that encoder."""
    from test_text import REVIEWS, SENTENCES
    from jaxvision.text import train_tokenizer
    corpus = tmp_path / "corpus"
    os.makedirs(corpus)
    (corpus / "train.txt").write_text("\n".join(SENTENCES * 20) + "\n")
    (corpus / "val.txt").write_text("\n".join(SENTENCES) + "\n")
    tokenizer = str(tmp_path / "tokenizer.json")
    vocab = train_tokenizer([str(corpus / "train.txt")], tokenizer, vocab_size=100, min_frequency=1).get_vocab_size()
    for (split, folder, name), text in REVIEWS.items():
        os.makedirs(tmp_path / "aclImdb" / split / folder, exist_ok=True)
        (tmp_path / "aclImdb" / split / folder / name).write_text(text)
    small = [f"--config.model.vocab_size={vocab}", "--config.model.name=bert_tiny", "--config.train.grad_accum_steps=1",
             "--config.train.log_every=1", "--config.eval.batch_size=4", "--config.data.num_threads=1",
             f"--config.data.tokenizer={tokenizer}", "--config.model.max_len=64"]
    mlm_dir, cls_dir = str(tmp_path / "mlm"), str(tmp_path / "imdb")
    run_cli(["train", "--config", os.path.join(ROOT, "configs", "dct_former", "mlm_pretrain.py"), "--workdir", mlm_dir,
             *small, f"--config.data.root={corpus}", "--config.data.max_len=32", "--config.train.batch_size=4",
             "--config.train.num_steps=3", "--config.train.eval_every=3"])
    with open(os.path.join(mlm_dir, "metrics.jsonl")) as f:
        mlm_eval = [json.loads(line) for line in f if "eval/loss" in line][-1]
    assert 0 < mlm_eval["eval/loss"] < 2 * np.log(vocab) and mlm_eval["eval/perplexity"] > 1
    run_cli(["eval", "--workdir", mlm_dir])
    with open(os.path.join(mlm_dir, "eval_metrics.json")) as f:
        assert json.load(f)["loss"] == pytest.approx(mlm_eval["eval/loss"], rel=1e-5)
    with open(os.path.join(mlm_dir, "predictions.md")) as f:
        rows = [line for line in f if line.startswith("| ") and "`" in line]
    assert len(rows) >= 4 and all(line.count("`") == 4 for line in rows)     # true / predicted tokens, decoded
    proc = run_cli(["train", "--config", os.path.join(ROOT, "configs", "dct_former", "imdb.py"), "--workdir", cls_dir,
                    *small, f"--config.data.root={tmp_path / 'aclImdb'}", "--config.data.max_len=48",
                    f"--config.model.init_from={mlm_dir}", "--config.train.batch_size=4", "--config.train.num_steps=2",
                    "--config.train.eval_every=2"])
    assert f"encoder initialised from {mlm_dir}/checkpoints/3" in proc.stdout
    with open(os.path.join(cls_dir, "metrics.jsonl")) as f:
        cls_eval = [json.loads(line) for line in f if "eval/accuracy" in line][-1]
    assert cls_eval["eval/accuracy"] in (0.0, 0.5, 1.0)                     # 2 test reviews


def test_models_listing_counts_text_models(capsys):
    from jaxvision.cli import run
    assert run(["models", "--filter", "bert_small"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[1].split() == ["bert_small", "28,795,194"]
