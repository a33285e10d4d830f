"""Multi-task DeepLabv3+ variants of reports 002 / 003: branched, and branched with task distillation.

Both share the encoder, the `ContextDecoder` and the `TaskHeads` of `DeepLabV3Plus` (they subclass it,
so they take the same options and the same encoders) and keep its output contract: {'semseg': logits
[B,H,W,C] float32, 'depth': metres [B,H,W] float32}.

* `deeplabv3plus_branched` (report 002 Problem 2, Fig. 5; report 003 Problem 3, Code Snippet 7): one
  encoder, then per task its own ASPP + decoder with the stride-4 skip ('context_decoder_{task}') and
  its 1x1 head ('heads/head_{task}').
* `deeplabv3plus_distillation` (report 002 Problem 3, eqs. (4)-(5) and Fig. 6): the branched model's
  predictions are the initial ones; a self-attention (SA) gate passes each task's decoder features
  to the other task, F_o^t = F^t + sum_{s != t} sigmoid(W_g * F^s) . (W * F^s) with W_g, W 3x3 convs
  without bias; a second decoder per task (two 3x3 ConvNormAct, no skip) and a second 1x1 head per
  task give the final predictions. Report 002 adds the two stages' predictions (Fig. 6: out =
  predictions_seg_1 + predictions_seg_3), so by default (`residual=True`) the final logits / log-depth
  are the initial ones plus the second heads' (whose depth bias starts at 0, i.e. a factor of 1).
  The initial predictions are also returned under outputs['aux'] = {'semseg': [logits], 'depth':
  [metres]} for their own losses ("two losses for each task, summed"). One SA module serves both
  directions as in report 002's code (`self.self_attention` applied to both tasks' features; its
  35.69 M parameters count one); `shared_attention=False` gives one per source task as in PAD-Net.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.conv import conv_padding, kaiming_normal_fan_out
from jaxvision.layers.decoder import DeepLabV3PlusDecoder
from jaxvision.models.deeplab import INITIAL_DEPTH_M, DeepLabV3Plus, TaskHeads, activate
from jaxvision.models.registry import register


class TaskAttention(nn.Module):
    """Report 002's SA gate: sigmoid(W_g * x) . (W * x), W_g ('gate') and W ('conv') 3x3 convs to `features`
    channels without bias. Applied to one task's features; the receiving task adds the result to its own."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = lambda name: nn.Conv(self.features, (3, 3), padding=conv_padding(3), use_bias=False,  # noqa: E731
                                    dtype=self.dtype, kernel_init=kaiming_normal_fan_out, name=name)
        return nn.sigmoid(conv("gate")(x)) * conv("conv")(x)


@register("deeplabv3plus_branched")
class DeepLabV3PlusBranched(DeepLabV3Plus):
    """Shared encoder; per task a ContextDecoder 'context_decoder_{task}' (ASPP + decoder with the skip) and a
    1x1 head 'heads/head_{task}'. Options and outputs as `DeepLabV3Plus`."""

    def branch_features(self, feats: dict, train: bool) -> dict:
        """{task: stride-4 decoder features} of the per-task context decoders."""
        return {task: self.context_decoder(f"context_decoder_{task}")(feats[32], feats[4], train)
                for task, _ in self.tasks}

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> dict:
        features = self.branch_features(self.encode(images, train), train)
        return TaskHeads(tuple(self.tasks), self.dtype, name="heads")(features, images.shape[1:3])


@register("deeplabv3plus_distillation")
class DeepLabV3PlusDistillation(DeepLabV3PlusBranched):
    """The branched model ('heads': initial predictions) + SA distillation ('attention', or 'attention_{task}'
    with `shared_attention=False`), per task a second decoder 'refine_decoder_{task}' (two 3x3 ConvNormAct to
    `decoder_channels`, no skip) and a final head 'final_heads/head_{task}'.

    Outputs: the final {'semseg', 'depth'} plus 'aux': {'semseg': [initial logits], 'depth': [initial
    metres]}. `residual=True`: final raw outputs = initial + second heads' (report 002, Fig. 6);
    False: the second heads' alone. Needs at least two tasks.
    """

    shared_attention: bool = True
    residual: bool = True

    def __post_init__(self):
        if len(self.tasks) < 2:
            raise ValueError(f"model.tasks {tuple(self.tasks)!r}: task distillation needs at least two tasks")
        super().__post_init__()

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> dict:
        size = images.shape[1:3]
        names = [task for task, _ in self.tasks]
        feats = self.encode(images, train)
        first = self.branch_features(feats, train)
        initial = TaskHeads(tuple(self.tasks), self.dtype, name="heads").raw(first, size)

        shared = TaskAttention(self.decoder_channels, self.dtype, name="attention") if self.shared_attention else None
        messages = {t: (shared or TaskAttention(self.decoder_channels, self.dtype, name=f"attention_{t}"))(first[t])
                    for t in names}
        second = {}
        for t in names:
            fused = first[t] + sum(messages[s] for s in names if s != t)
            second[t] = DeepLabV3PlusDecoder(self.decoder_channels, skip_channels=0, norm=self.norm, dtype=self.dtype,
                                             name=f"refine_decoder_{t}")(fused, feats[4], train)
        final = TaskHeads(tuple(self.tasks), self.dtype, initial_depth_m=1.0 if self.residual else INITIAL_DEPTH_M,
                          name="final_heads").raw(second, size)
        if self.residual:
            final = {t: initial[t] + final[t] for t in names}
        return {**activate(final), "aux": {t: [v] for t, v in activate(initial).items()}}
