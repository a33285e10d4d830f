"""A synthetic long-range task for the DCT-Former attentions that trains on a CPU in minutes.

"Long-range majority" (jaxvision/text/long_range.py): sequences of 192..256 random tokens holding k_a
copies of marker A and k_b != k_a copies of marker B (1..8) anywhere; the label is k_a > k_b, so the
whole sequence must be read. bert_tiny narrowed to width 64 (2 blocks, 4 heads, FFN 256), learned
positions, no dropout; AdamW 1e-3 with 6% warm-up and linear decay, batch 32, 300 steps (about 6 min
on the 2-core CPU; vanilla attention reaches 100% validation accuracy by step 200).

    jaxvision train --config configs/dct_former/long_range.py --workdir runs/lr_vanilla
    jaxvision train --config configs/dct_former/long_range.py --workdir runs/lr_dct \\
        --config.model.attention=dct-0.25       # or dct_fft-0.25, dct_ideal-64, linformer-0.125, nystrom-32, ...
"""

import os

import ml_collections

from jaxvision.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(os.path.join(os.path.dirname(__file__), "mlm_pretrain.py"))
    config.task = "text_classification"
    config.data = ml_collections.ConfigDict(dict(
        name="long_range",
        max_len=256,
        min_len=192,
        vocab_size=64,            # 5 special tokens, markers A and B, the rest noise
        max_count=8,              # marker counts k_a != k_b in 1..max_count
        num_train=100_000,
        num_val=1000,
        num_threads=1,
        prefetch=2,
    ))
    config.model.update(dict(name="bert_tiny", head="classification", dropout_rate=0.0, attention_dropout_rate=0.0,
                             width=64, depth=2, num_heads=4, mlp_dim=256))
    config.model.vocab_size = config.data.get_ref("vocab_size")
    config.model.max_len = config.data.get_ref("max_len")
    config.train.update(dict(batch_size=32, num_steps=300, grad_accum_steps=1, log_every=25, eval_every=100,
                             checkpoint_every=100, best_metric="accuracy", best_mode="max"))
    config.eval.batch_size = 100
    return config
