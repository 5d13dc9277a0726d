"""Tiny random-weight models for tests and `optscale bench live`, built offline.

A byte-level BPE tokenizer is trained in-process on a small corpus, given a chat template
and the special tokens the verifiers need (`<extra_0>`, the step separator of the
Qwen2.5-Math-PRM convention), and saved next to a 2-layer Llama or Qwen2 with hidden size 64
and 2 attention heads (head dim 32: vLLM's CPU attention does not take 16).
"""

from __future__ import annotations

import pathlib

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>", "<pad>"]

_CORPUS = [
    "Janet has 16 eggs. She eats 3 and bakes with 4. She sells the rest for $2 each.",
    "The answer is \\boxed{18}. So the total is 18 dollars.",
    "Step 1: add the numbers. Step 2: multiply by two. Therefore the result is 42.",
    "Is the answer correct? Answer Yes or No. Yes. No. Yes, it is correct. No, it is wrong.",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. In total 3 bolts.",
    "Question: what is 7 times 8? Solution: 7 * 8 = 56. The final answer is 56.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 + - * / = ( ) { } [ ]",
]


def build_tokenizer(directory: pathlib.Path, vocab_size: int = 512, model_max_length: int = 256):
    """Trains a byte-level BPE tokenizer in-process and saves it (with a chat template).

    Args:
        directory: where `save_pretrained` writes the tokenizer files.
        vocab_size: target vocabulary size of the BPE training.
        model_max_length: the tokenizer's length limit (match the model's positions).

    Returns:
        The `transformers.PreTrainedTokenizerFast`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<extra_0>"],
        model_max_length=model_max_length,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return tokenizer


def build_model(
    directory: str | pathlib.Path,
    *,
    family: str = "llama",
    head: str = "causal",
    num_labels: int = 2,
    seed: int = 0,
    max_position_embeddings: int = 256,
) -> pathlib.Path:
    """Builds and saves a tiny random-weight model plus its tokenizer.

    Args:
        directory: output folder (created).
        family: "llama" or "qwen2".
        head: "causal" (LM head), "token" (token classification, PRM) or "sequence"
            (sequence classification, ORM).
        num_labels: labels of a classification head.
        seed: torch seed for the random weights.
        max_position_embeddings: the model's context limit (small, to test truncation).

    Returns:
        The folder, loadable by `from_pretrained` and by vLLM.
    """
    import torch
    import transformers

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory, model_max_length=max_position_embeddings)
    config_class = {
        "llama": transformers.LlamaConfig,
        "qwen2": transformers.Qwen2Config,
    }[family]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        num_labels=num_labels,
        torch_dtype="float32",
    )
    auto = {
        "causal": transformers.AutoModelForCausalLM,
        "token": transformers.AutoModelForTokenClassification,
        "sequence": transformers.AutoModelForSequenceClassification,
    }[head]
    torch.manual_seed(seed)
    model = auto.from_config(config)
    # Random logits near zero make every token equally likely; a wider init gives the
    # sampler and the verifiers distinct, seed-dependent outputs.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.2)
    model.eval()
    model.save_pretrained(directory)
    return directory
