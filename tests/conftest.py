"""Shared fixtures: a tiny tokenizer and a tiny randomly initialised Llama built from a config (no download)."""
from __future__ import annotations

import pytest

# A few paragraphs of our own text to train the tiny byte-level BPE tokenizer on.
CORPUS = """\
The lighthouse keeper of Varnholm kept a ledger of every ship that passed the northern cape. In the winter of
the great storm he wrote that forty-one vessels sought shelter in the bay, and that the harbour master counted
them twice because he did not believe the number. The ledger is kept today in the town museum, beside a brass
telescope and a map drawn by the keeper's daughter, who later became the first woman to captain a ferry on the
fjord. Visitors ask most often about the telescope, which was made in Glasgow in 1881 and still works.
Questions and answers: what is the capital of France? Paris. How many legs does a spider have? Eight.
Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation . , ; : ! ? ' " ( ) [ ] - and symbols @ # % & * + = / \\ < > | ~ _
"""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# A ChatML template like the embedded model's (and Qwen2.5's): when the messages have no system turn it inserts a
# default one, so every prompt built through it carries that text (tests check it never becomes a training target).
DEFAULT_SYSTEM = "You are a tiny test assistant."
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + DEFAULT_SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tiny_tokenizer(vocab_size: int = 400, chat_template: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator([CORPUS], trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """Byte-level BPE tokenizer (vocab 400) with a ChatML chat template; builds in < 1 s, no download."""
    return make_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A randomly initialised 2-layer Llama (~30k parameters) saved as a local Hugging Face model directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.2,  # larger than the default 0.02 so a few LoRA steps visibly learn
        bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    d = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d


@pytest.fixture
def tiny_loaded(tiny_model_dir):
    """The tiny model loaded through liftlm's own loader (a fresh copy per test)."""
    from liftlm.models import load_model

    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture
def store(tmp_path):
    return tmp_path / "store"
