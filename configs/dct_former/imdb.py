"""DCT-Former fine-tuning on IMDb sentiment (thesis ch. 4.5.1): [CLS] -> Dense + tanh -> Dense(1), BCE.

Reviews truncated to n = 1024 tokens, AdamW with the pretraining's betas / eps / weight decay and a fixed
learning rate of 1e-5, batch 64, 10 epochs of the 25000 training reviews (3910 steps), evaluated on the
25000 test reviews after every epoch (loss, accuracy, macro precision / recall / F1 as Table 4.2).
The encoder starts from the latest checkpoint of a pretraining run (configs/dct_former/mlm_pretrain.py):

    jaxvision train --config configs/dct_former/imdb.py --workdir runs/imdb_vanilla \\
        --config.data.root=/data/aclImdb --config.data.tokenizer=runs/tok/tokenizer.json \\
        --config.model.init_from=runs/mlm_vanilla [--config.model.attention=dct_fft-32 ...]

Use the pretraining's `model.*` values (attention, vocab_size, max_len, positions). The thesis
fine-tunes DCT models with the FFT (Makhoul) DCT because review lengths vary: `dct_fft-N`.
"""

import os

import ml_collections

from jaxvision.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(os.path.join(os.path.dirname(__file__), "mlm_pretrain.py"))
    config.task = "text_classification"
    config.model.head = "classification"
    config.model.init_from = ""   # workdir of the MLM pretraining run ('' = random init)
    config.data = ml_collections.ConfigDict(dict(
        name="imdb",              # {root}/{train,test}/{pos,neg}/{id}_{rating}.txt; evaluation on test
        root="",
        tokenizer="",
        max_len=1024,
        num_threads=2,
        prefetch=4,
    ))
    config.optimizer.lr = 1e-5
    config.schedule.name = "constant"
    config.schedule.warmup_steps = 0
    steps_per_epoch = -(-25_000 // 64)
    config.train.update(dict(batch_size=64, num_steps=10 * steps_per_epoch, grad_accum_steps=1, log_every=50,
                             eval_every=steps_per_epoch, checkpoint_every=steps_per_epoch, best_metric="accuracy",
                             best_mode="max"))
    config.eval.batch_size = 64
    return config
