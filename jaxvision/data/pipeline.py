"""grain input pipelines: an infinite, exactly resumable, process-sharded train stream and a finite eval pass.

The train stream is one global sequence of examples: position g holds source example
shuffle_epoch(g)(g mod N), augmented with an RNG that is a pure function of (seed, g) (grain's
`random_map` seeds Philox with the element index). Global batch s is positions [s*B, (s+1)*B).
Process p of n reads the p-th contiguous block of b = B/n positions of each global batch,
[s*B + p*b, s*B + (p+1)*b), so concatenating the processes' batches in process order (what
`jax.make_array_from_process_local_data` does on a `data` mesh) gives global batch s exactly, for
any n and any start_step. Examples are rendered/decoded and augmented in `data.num_threads`
worker threads with `data.prefetch` batches read ahead.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Iterator

import grain
import ml_collections
import numpy as np

from jaxvision import text
from jaxvision.data import (adas_inputs, bdd100k, cityscapes, distraction, face_roi, lapa, nyu, synthetic,
                            synthetic_faces, transforms)

SPLITS = ("train", "val")
_MAX_EXAMPLES = 2**40  # "infinite" stream, finite so that grain can batch and slice it


def _synthetic_scenes(data_config: ml_collections.ConfigDict, split: str) -> synthetic.SyntheticScenes:
    num = data_config.num_train if split == "train" else data_config.num_val
    return synthetic.SyntheticScenes(split, num, data_config.height, data_config.width)


def _root(data_config: ml_collections.ConfigDict) -> str:
    root = data_config.get("root", "")
    if not root:
        raise ValueError(f"data.name={data_config.name!r} reads a dataset from disk: set data.root "
                         f"(--config.data.root=/path/to/{data_config.name})")
    return root


def _cityscapes(data_config: ml_collections.ConfigDict, split: str) -> cityscapes.Cityscapes:
    return cityscapes.Cityscapes(_root(data_config), split, data_config.height, data_config.width)


def _nyu_depth_v2(data_config: ml_collections.ConfigDict, split: str) -> nyu.NYUDepthV2:
    return nyu.NYUDepthV2(_root(data_config), split, data_config.height, data_config.width,
                          data_config.get("label_map", "") or None)


def _text_corpus(data_config: ml_collections.ConfigDict, split: str) -> text.TextCorpus:
    """`{data.root}/{split}.txt` (train.txt, val.txt)."""
    return text.TextCorpus(os.path.join(_root(data_config), f"{split}.txt"), data_config.tokenizer,
                           data_config.max_len, data_config.separator)


def _imdb(data_config: ml_collections.ConfigDict, split: str) -> text.IMDbReviews:
    """aclImdb's train / test split (evaluation uses the test split, as the thesis reports)."""
    return text.IMDbReviews(_root(data_config), {"train": "train", "val": "test"}[split], data_config.tokenizer,
                            data_config.max_len)


def _long_range(data_config: ml_collections.ConfigDict, split: str) -> text.LongRangeMajority:
    num = data_config.num_train if split == "train" else data_config.num_val
    return text.LongRangeMajority(split, num, data_config.max_len, data_config.min_len, data_config.vocab_size,
                                  data_config.max_count)


def _synthetic_faces(data_config: ml_collections.ConfigDict, split: str) -> synthetic_faces.SyntheticFaces:
    num = data_config.num_train if split == "train" else data_config.num_val
    return synthetic_faces.SyntheticFaces(split, num, data_config.height, data_config.seed,
                                          tuple(data_config.class_probs))


def _lapa(data_config: ml_collections.ConfigDict, split: str) -> lapa.LaPa:
    """LaPa's train split (`data.copies` augmented crops per image) and its val split."""
    return lapa.LaPa(_root(data_config), split, data_config.height, data_config.copies, data_config.seed)


def _bdd100k(data_config: ml_collections.ConfigDict, split: str) -> bdd100k.BDD100K:
    """BDD100K's 2018 release, scaled by `data.scale` and centre-cropped to data.height x data.width."""
    return bdd100k.BDD100K(_root(data_config), split, data_config.height, data_config.width, data_config.scale)


# miniscapes: the Cityscapes layout (see jaxvision/data/cityscapes.py). Text sources: jaxvision/text. Face sources
# (FACE_SOURCES) yield model-ready face crops with the driver-monitoring labels (jaxvision/tasks/dms.py).
_SOURCES: dict[str, Callable] = {"synthetic_scenes": _synthetic_scenes, "cityscapes": _cityscapes,
                                 "miniscapes": _cityscapes, "nyu_depth_v2": _nyu_depth_v2,
                                 "synthetic_faces": _synthetic_faces, "bdd100k": _bdd100k,
                                 "lapa": _lapa, "text_corpus": _text_corpus, "imdb": _imdb, "long_range": _long_range}


FACE_SOURCES = ("synthetic_faces", "lapa")


def is_adas(data_config: ml_collections.ConfigDict) -> bool:
    """Whether examples become the ADAS model's (`data.adas` set; see jaxvision/data/adas_inputs.py)."""
    return "adas" in data_config


def _pseudo_labelled(data_config: ml_collections.ConfigDict) -> distraction.PseudoLabelled:
    """The distraction images of `data.distraction_root` with the labels of `jaxvision pseudo-label`
    (`data.pseudo_labels`), added to a face source's training split (seed 000, 2.3.2)."""
    root = data_config.get("distraction_root", "")
    if not root:
        raise ValueError("data.pseudo_labels is set but data.distraction_root (the images' folder) is not")
    return distraction.PseudoLabelled(data_config.pseudo_labels, root, data_config.height, data_config.copies,
                                      data_config.seed)


def get_source(data_config: ml_collections.ConfigDict, split: str):
    """The random-access source (`__len__`, `__getitem__` -> example dict) named by `data_config.name`.

    A text source is wrapped for masked-language modelling when `data_config.mask_prob` > 0
    (with `data_config.max_predictions` slots, see jaxvision/text/masking.py).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if data_config.name not in _SOURCES:
        raise ValueError(f"data.name={data_config.name!r} is not a known dataset; known: {sorted(_SOURCES)}")
    source = _SOURCES[data_config.name](data_config, split)
    if data_config.name in FACE_SOURCES and split == "train" and data_config.get("pseudo_labels", ""):
        source = distraction.Concatenated([source, _pseudo_labelled(data_config)])
    if isinstance(source, text.TokenSource) and data_config.get("mask_prob", 0.0) > 0:
        source = text.MaskedTokens(source, data_config.mask_prob, data_config.max_predictions)
    return source


def num_eval_examples(data_config: ml_collections.ConfigDict) -> int:
    """Number of real (unpadded) examples in one eval pass."""
    return len(get_source(data_config, "val"))


def _process_share(batch_size: int, process_index: int | None, process_count: int | None,
                   field: str) -> tuple[int, int, int]:
    """(process index, process count, per-process batch size); defaults from JAX."""
    if process_index is None or process_count is None:
        import jax  # noqa: PLC0415 (only needed when the caller does not say)
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(f"{field}={batch_size} must be a positive multiple of the process count ({process_count})")
    return process_index, process_count, batch_size // process_count


def _read_options(data_config: ml_collections.ConfigDict) -> grain.ReadOptions:
    """`num_threads` workers, each reading whole batches; `prefetch` batches read ahead."""
    threads = data_config.num_threads
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(data_config.prefetch, threads))


def make_train_iterator(data_config: ml_collections.ConfigDict, global_batch_size: int, seed: int,
                        start_step: int = 0, process_index: int | None = None,
                        process_count: int | None = None) -> Iterator[dict]:
    """Infinite iterator of this process's share of the global training batches, from `start_step` on.

    Image sources yield {'image' float32 [b, H, W, 3] in [0, 1], 'semseg' int32 [b, H, W], 'depth' float32
    [b, H, W]}, text sources their `train_example`s (jaxvision/text/sources.py), with
    b = global_batch_size // process_count (see the module docstring for the ordering guarantees).
    """
    p, n, local_batch = _process_share(global_batch_size, process_index, process_count, "train batch size")
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    seed = int(seed) % 2**32
    source = get_source(data_config, "train")
    stream = (grain.MapDataset.source(source)
              .shuffle(seed=seed)                # reshuffled every epoch (seed + epoch)
              .repeat(_MAX_EXAMPLES // len(source))
              .random_map(_train_transform(data_config, source), seed=seed))   # RNG from (seed, global position)
    blocks = stream.batch(local_batch)[start_step * n + p::n]  # block p of every global batch
    return iter(blocks.to_iter_dataset(_read_options(data_config)))


def _train_transform(data_config: ml_collections.ConfigDict, source) -> Callable:
    """`(example, rng) -> model-ready example`: a text source's own, else the image augmentation of data.augment."""
    if isinstance(source, text.TokenSource):
        return source.train_example
    aug = data_config.augment
    if data_config.name in FACE_SOURCES:
        if not aug.photometric:
            return lambda example, rng: example
        return lambda example, rng: {**example, "image": face_roi.photometric_augment(example["image"], rng)}
    scale_range = tuple(aug.scale_range)
    finish = _model_inputs(data_config)

    def augment(example: dict, rng: np.random.Generator) -> dict:
        return finish(transforms.augment(example, rng, aug.flip, scale_range, aug.color_jitter))

    return augment


def _model_inputs(data_config: ml_collections.ConfigDict) -> Callable:
    """`example -> model-ready example` after augmentation: face sources' examples are already model-ready, ADAS
    examples get their encoded targets, others `transforms.to_model_inputs`."""
    if data_config.name in FACE_SOURCES:
        return lambda example: example
    if is_adas(data_config):
        return lambda example: adas_inputs.adas_example(example, data_config.adas, data_config.name)
    return transforms.to_model_inputs


def _padding_example(data_config: ml_collections.ConfigDict) -> dict:
    height, width = data_config.height, data_config.width
    if is_adas(data_config):
        return {**adas_inputs.padding_example(data_config.adas, height, width), "mask": np.float32(0)}
    if data_config.name in FACE_SOURCES:
        return {"image": np.zeros((height, width, 3), np.float32), "landmarks": np.zeros((98, 2), np.float32),
                "eyes": np.zeros(4, np.float32), "mouth": np.int32(0), "head_pose": np.zeros(3, np.float32),
                "distraction": np.int32(0), "confidence": np.float32(0), "mask": np.float32(0)}
    return {"image": np.zeros((height, width, 3), np.float32),
            "semseg": np.full((height, width), transforms.IGNORE_LABEL, np.int32),
            "depth": np.zeros((height, width), np.float32),
            "mask": np.float32(0)}


def make_eval_iterator(data_config: ml_collections.ConfigDict, batch_size: int, process_index: int | None = None,
                       process_count: int | None = None) -> Iterator[dict]:
    """One pass over the 'val' split, unaugmented, in global batches of `batch_size` (this process's share).

    The last global batch is padded to full size with examples whose 'mask' is 0 (images: image 0,
    semseg 255, depth 0; text: the source's `padding_example`); real examples have 'mask' 1. Every
    process yields the same number of batches.
    """
    p, n, local_batch = _process_share(batch_size, process_index, process_count, "eval batch size")
    source = get_source(data_config, "val")
    num = len(source)
    padded = math.ceil(num / batch_size) * batch_size
    if isinstance(source, text.TokenSource):
        pad = {**source.padding_example(), "mask": np.float32(0)}
        prepare = lambda i: source.eval_example(source[i], i)  # noqa: E731
    else:
        pad = _padding_example(data_config)
        finish = _model_inputs(data_config)
        prepare = lambda i: finish(source[i])  # noqa: E731

    def load(i: int) -> dict:
        if i >= num:
            return pad
        return {**prepare(i), "mask": np.float32(1)}

    blocks = grain.MapDataset.range(padded).map(load).batch(local_batch)[p::n]
    return iter(blocks.to_iter_dataset(_read_options(data_config)))


def measure_pipeline_throughput(data_config: ml_collections.ConfigDict, batch_size: int, num_batches: int) -> float:
    """Images/s delivered by the (single-process) train pipeline, after one warm-up batch."""
    batches = make_train_iterator(data_config, batch_size, seed=0, process_index=0, process_count=1)
    next(batches)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(batches)
    return num_batches * batch_size / (time.perf_counter() - start)
