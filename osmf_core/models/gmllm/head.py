"""The language model's head and the log-probability of each position's next token: the part of a training pass
where the whole vocabulary is in play, as a module of its own, which the training engine compiles alone
(`compile_region`; osmf_core.training.engine).

Eager, the loss over a (rows x positions x vocabulary) tensor costs more memory traffic than its FLOPs: the
head's logits are copied to full precision, log-softmax writes them again and is kept for the backward pass
(4 bytes an entry), which writes two more tensors of that size. Compiled, the log-softmax of the labels alone and
its gradient become passes over the head's own logits (bf16 under autocast), which are all it keeps (2 bytes).
"""
from __future__ import annotations

import torch
from torch import nn

IGNORE = -100  # a label not scored (prompt and padding), as transformers marks it


class NextTokenLogprobs(nn.Module):
    """(hidden states, the head, labels) -> log p(labels[:, i + 1] | positions <= i), (B, L - 1), 0 where the
    label is IGNORE. The loss of pre-training is minus their mean over scored labels (transformers' causal-LM
    cross-entropy); Group-DPO sums them per row. The head is called as a module, so that whatever hooks it has
    run (ZeRO-3 gathers its partitioned weight in one)."""

    compile_region = True  # training.engine compiles it as a region of its own

    def forward(self, hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor) -> torch.Tensor:
        logits = head(hidden[:, :-1]).float()
        target = labels[:, 1:]
        # log-softmax then gather, as cross-entropy does: eager, one pass writes it (logits minus their
        # log-sum-exp costs two more on a CPU); compiled, it fuses with the gather
        picked = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return torch.where(target != IGNORE, picked, 0.0)


class TrainingOutput(dict):
    """What the G-MLLM's forward pass with labels returns: `loss` (mean_nll of the log-probabilities) and
    `token_logprobs` (B, L - 1), no logits (the head's region keeps none). A dict, as transformers' outputs
    are, so that DeepSpeed's engine finds its tensors and runs its bookkeeping before their backward pass."""

    def __init__(self, loss: torch.Tensor, token_logprobs: torch.Tensor):
        super().__init__(loss=loss, token_logprobs=token_logprobs)

    @property
    def loss(self) -> torch.Tensor:
        return self["loss"]

    @property
    def token_logprobs(self) -> torch.Tensor:
        return self["token_logprobs"]


def scored(labels):
    """Which next-token labels (labels[:, 1:], a tensor or an array) are scored: where token_logprobs count."""
    return labels[:, 1:] != IGNORE


def mean_nll(logprobs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Minus the mean log-probability over the scored labels (NaN where none is, as cross-entropy's mean)."""
    return -logprobs.sum() / scored(labels).sum()
