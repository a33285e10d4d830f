"""Branched DeepLabv3+ with task distillation by self-attention (SA) gates, report 002 Problem 3.

Reproduces report 002 Table 11 row P3_9387a (branched + task distillation, 35.69 M parameters; ours
35,688,488): the branched model of configs/segdepth/branched.py gives the initial predictions, one SA
module (eqs. (4)-(5): sigmoid(W_g * F) . (W * F), shared by both directions as in the report's code)
passes each task's decoder features to the other, and a second decoder (two 3x3 convs, no skip) and
head per task give the final predictions, added to the initial ones (Fig. 6). The initial predictions
are returned under outputs['aux'] for their own losses, summed with the final ones as in the report.
Settings as branched.py (ResNet-34, output stride 16, ASPP rates (3, 6, 9), Adam 1e-4, batch 8,
loss weights 0.55 / 0.45). `--config.model.shared_attention=False` gives one SA module per source
task (PAD-Net); `--config.model.residual=False` makes the second heads' outputs the final ones.
"""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "branched.py"))
    config.model.name = "deeplabv3plus_distillation"
    config.model.shared_attention = True
    config.model.residual = True
    return config
