"""Tiny foundation models built here, offline and deterministic: real transformers code with random
weights (seeded), and a tokenizer trained on the spot with the `tokenizers` library.

The hub cannot be reached from the test machines, so nothing is downloaded: each builder makes a model
from a config a few layers deep, small enough to run in milliseconds on a CPU. Greedy decoding on
seeded weights gives the same text every time, so a served answer can be compared with the pipeline's
own answer in-process.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a model trained in a notebook should reach production",
    "hello world from a tiny language model",
    "serving models is where projects die",
    "good great fine nice bad awful poor terrible",
    "user : system : assistant :",  # the chat template's words, so a chat prompt has no unknown tokens
]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} \n{% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)


def tokenizer() -> Any:
    """A WordPiece tokenizer trained on ``CORPUS``, as a transformers fast tokenizer with a chat template.
    WordPiece on whitespace decodes to whole words, so streamed text reads as words, not byte pieces.
    A copy each call: pipelines change their tokenizer (a text-generation pipeline pads on the left), and
    one test's pipeline must not change another's."""
    return copy.deepcopy(_trained_tokenizer())


@functools.cache
def _trained_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.decoder = decoders.WordPiece()
    special = ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[EOS]"]
    raw.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=special))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        eos_token="[EOS]",
        bos_token="[EOS]",
        model_max_length=128,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def text_generator(seed: int = 0, width: int = 32) -> Any:
    """A text-generation pipeline over a two-layer GPT-2 with random weights (``width`` wide)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, pipeline

    tok = tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=128,
        n_embd=width,
        n_layer=2,
        n_head=2,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = GPT2LMHeadModel(config).eval()
    # greedy and short by default: the library's default of 256 new tokens runs past the 128 positions
    model.generation_config.max_new_tokens = 12
    model.generation_config.do_sample = False
    return pipeline("text-generation", model=model, tokenizer=tok, device="cpu")


def bert_config(seed: int, **extra: Any) -> Any:
    """The config of a two-layer, 32-wide BERT over ``tokenizer()``, torch seeded for its weights."""
    import torch
    from transformers import BertConfig

    torch.manual_seed(seed)
    tok = tokenizer()
    return BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        **extra,
    )


def text_classifier(seed: int = 0) -> Any:
    """A text-classification pipeline over a two-layer BERT with random weights and labels NEG/POS."""
    from transformers import BertForSequenceClassification, pipeline

    config = bert_config(seed, num_labels=2, id2label={0: "NEG", 1: "POS"}, label2id={"NEG": 0, "POS": 1})
    return pipeline("text-classification", model=BertForSequenceClassification(config).eval(), tokenizer=tokenizer())


def embedder(seed: int = 0) -> Any:
    """A feature-extraction pipeline over a two-layer BERT: one vector per token of each text."""
    from transformers import BertModel, pipeline

    return pipeline("feature-extraction", model=BertModel(bert_config(seed)).eval(), tokenizer=tokenizer())


def image_classifier(seed: int = 0) -> Any:
    """An image-classification pipeline over a two-layer ViT on 32x32 images, labels cat/dog/bird."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, pipeline

    torch.manual_seed(seed)
    labels = ["cat", "dog", "bird"]
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    return pipeline("image-classification", model=ViTForImageClassification(config).eval(), image_processor=processor)


def sentence_embedder(directory: Any, seed: int = 0) -> Any:
    """A sentence-transformers model (a two-layer BERT and mean pooling) with 32-wide vectors; its
    BERT is saved to ``directory`` first, since sentence-transformers loads its modules from a path."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertModel

    BertModel(bert_config(seed)).save_pretrained(directory)
    tokenizer().save_pretrained(directory)
    word = models.Transformer(str(directory))
    return SentenceTransformer(modules=[word, models.Pooling(word.get_embedding_dimension())], device="cpu")
