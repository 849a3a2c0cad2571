"""The G-MLLM's vocabulary: the placeholders that instructions carry and the model replaces (e_G and the
image patches), and the BPE tokenizer of the tiny profile, trained offline on the instruction corpus."""
from __future__ import annotations

GROUP_TOKEN = "<group>"
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN, GROUP_TOKEN]
GROUP_WORD = "G"  # what the instruction text says where the group token was (the token itself goes first)


def train_tokenizer(texts, vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained offline on `texts`, with the image and group tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
