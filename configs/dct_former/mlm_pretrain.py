"""DCT-Former MLM pretraining (thesis ch. 4.5.1): BERT-small-like encoder, sparse MLM head, n = 128.

4 blocks, 8 heads, width 512, FFN 2048; masking probability 0.1 (80 / 10 / 10 replacement, at most 20
predictions per sequence); AdamW (0.9, 0.98, eps 1e-6, weight decay 0.01), peak lr 1e-3 reached by a
linear warm-up over 6% of the steps, then linear decay to 0; 100k steps of 4096 sequences (two
gradient-accumulation micro-batches). The thesis uses BERT's pretrained uncased WordPiece vocabulary
(30522 entries) and English Wikipedia; here the tokenizer is trained locally on the corpus:

    python -m jaxvision.text.tokenizer --out runs/tok/tokenizer.json --vocab-size 30522 corpus/train.txt
    jaxvision train --config configs/dct_former/mlm_pretrain.py --workdir runs/mlm_vanilla \\
        --config.data.root=corpus --config.data.tokenizer=runs/tok/tokenizer.json \\
        --config.model.vocab_size=30522 [--config.model.attention=dct-0.25 | dct_ideal-32 | linformer-0.125 ...]

`data.root` holds train.txt and val.txt (one document per line, or `data.separator=blank` for
blank-line separated paragraphs). `model.max_len` (1024) is the learned position table, long enough for
the IMDb fine-tuning at n = 1024 (configs/dct_former/imdb.py); the sequences here are `data.max_len`.
`model.attention` is any spec of jaxvision/layers/efficient_attention.py (the thesis' DCT-{n_bar} at
n = 128: dct-16, dct-32, ... or dct-0.25; IDEAL-32: dct_ideal-32).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.task = "mlm"

    config.model = ml_collections.ConfigDict(dict(
        name="bert_small",
        vocab_size=30522,         # at least the tokenizer's vocabulary (checked at start)
        max_len=1024,             # learned position embeddings (rows); sequences may be shorter
        positions="learned",      # learned | sinusoidal
        attention="vanilla",      # vanilla | fused | dct-0.25 | dct_fft-0.25 | dct_ideal-32 | linformer-0.125 | ...
        head="mlm",
        dropout_rate=0.1,
        attention_dropout_rate=0.1,
    ))

    config.data = ml_collections.ConfigDict(dict(
        name="text_corpus",       # {root}/train.txt, {root}/val.txt
        root="",
        tokenizer="",             # tokenizer.json (python -m jaxvision.text.tokenizer)
        separator="line",         # line: one document per line | blank: blank-line separated paragraphs
        max_len=128,              # n: packed [CLS] ... [SEP] sequences
        mask_prob=0.1,
        max_predictions=20,       # MLM slots per sequence (sparse head); round(0.1 * 126) = 13 are used
        num_threads=2,
        prefetch=4,
    ))

    config.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-3, momentum=0.9, nesterov=False, b1=0.9, b2=0.98, eps=1e-6,
        weight_decay=0.01, weight_decay_mask="kernels", clip_grad_norm=0.0,
    ))
    config.train = ml_collections.ConfigDict(dict(
        batch_size=4096,
        num_steps=100_000,
        grad_accum_steps=2,
        compute_dtype="float32",  # the thesis trains in mixed precision: bfloat16
        log_every=100,
        eval_every=5000,
        checkpoint_every=5000,
        keep_checkpoints=3,
        best_metric="loss",
        best_mode="min",
    ))
    config.schedule = ml_collections.ConfigDict(dict(
        name="warmup_linear", warmup_steps=0, power=1.0, step_every=10000, decay_factor=0.5, end_lr_fraction=0.0,
    ))
    # 6% of the steps, following train.num_steps when that is overridden (unless warmup_steps is set too).
    config.schedule.warmup_steps = config.train.get_ref("num_steps") * 6 // 100
    config.eval = ml_collections.ConfigDict(dict(batch_size=256, num_grid_images=4))
    return config
