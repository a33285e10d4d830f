#!/usr/bin/env bash
# Issue 5 on a GPU: thesis Table 4.1 / Figure 4.2 with JAX's CUDA backend. Run from the repository root:
#   bash benchmarks/attention_gpu.sh all|isolated|bf16|custom OUT_DIR [more `bench attention` options]
# all:      every point of both tables in one process (fp32, the thesis' batch sizes; compiled memory analysis);
# isolated: the attention module at n = 1024, 4096, 8192, each point in its own process, memory measured by
#           the device's peak_bytes_in_use;
# bf16:     the attention module in bfloat16 (where jax.nn.dot_product_attention can take cuDNN's fused kernel);
# custom:   only the options given after OUT_DIR.
# Each point's result is written as soon as it is measured, so a part stopped by a timeout keeps its points.
# PYTHON names an interpreter with jax[cuda] and flax (default python3); the package runs from this checkout.
set -euo pipefail
part=$1 out=$2
shift 2
py=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
bench=("$py" -m jaxvision.cli bench attention --out "$out" --max-gb 100 --repeats 10 --warmup 3)
"$py" -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
case $part in
  all|custom) "${bench[@]}" "$@" ;;
  isolated) "${bench[@]}" --parts attention --lengths 1024,4096,8192 --isolate ;;
  bf16) "${bench[@]}" --parts attention --kinds vanilla,fused,dct-0.25,dct_fft-0.25 --lengths 1024,4096,8192 \
          --dtype bfloat16 ;;
  *) echo "unknown part '$part' (all | isolated | bf16 | custom)" >&2; exit 2 ;;
esac
