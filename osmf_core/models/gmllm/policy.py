"""The G-MLLM as a prompt policy: loading it with Group-DPO's LoRA adapters and sampling or greedily
decoding background prompts for (product, group) contexts (rows of `osmf_core.features.contexts`)."""
from __future__ import annotations

import pandas as pd
import torch
from tqdm import tqdm

from osmf_core.models.gmllm.model import GroupLlava, encode

ADAPTER_SUBDIR, META_FILE = "adapter", "dpo.json"


def core_of(policy) -> GroupLlava:
    """The GroupLlava inside a peft model (its layers carry the adapters)."""
    return policy.base_model.model


def load_policy(gmllm: str, adapter: str | None = None) -> GroupLlava:
    """A G-MLLM for inference, with its trained adapters active in its layers when `adapter` is given."""
    base = GroupLlava.load(gmllm)
    if not adapter:
        return base
    from peft import PeftModel
    return core_of(PeftModel.from_pretrained(base, adapter)).eval()


def policy_inputs(core: GroupLlava, ctx, responses, use_group: bool, max_len: int, device) -> dict:
    """Model inputs of context rows (a dict of columns or DataFrame rows with instruction, image and
    group_features) and, for log-probabilities, their responses."""
    return encode(core, list(ctx["instruction"]), responses, max_len, use_group, list(ctx["image"]),
                  list(ctx["group_features"]), device)


@torch.no_grad()
def generate(core: GroupLlava, ctx: dict, use_group: bool, n: int = 1, temperature: float = 1.0,
             greedy: bool = False, max_new_tokens: int = 32, max_len: int = 384, seed: int = 0) -> list[list[str]]:
    """`n` prompts per context row (greedy: one, the most likely), decoded without special tokens."""
    device = next(core.parameters()).device
    enc = policy_inputs(core, ctx, None, use_group, max_len, device)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    lengths = mask.sum(dim=1)
    left_ids, left_mask = torch.full_like(ids, core.tokenizer.pad_token_id), torch.zeros_like(mask)
    for i, m in enumerate(lengths.tolist()):  # generation continues on the right: pad on the left
        left_ids[i, ids.shape[1] - m:], left_mask[i, ids.shape[1] - m:] = ids[i, :m], 1
    emb = core.embed(left_ids, enc["pixel_values"], enc["group_features"] if use_group else None)
    torch.manual_seed(seed)
    out = core.llava.generate(inputs_embeds=emb.repeat_interleave(1 if greedy else n, dim=0),
                              attention_mask=left_mask.repeat_interleave(1 if greedy else n, dim=0),
                              max_new_tokens=max_new_tokens, do_sample=not greedy,
                              temperature=None if greedy else temperature, top_k=None, top_p=None,
                              pad_token_id=core.tokenizer.pad_token_id, eos_token_id=core.tokenizer.eos_token_id)
    texts = [t.strip() for t in core.tokenizer.batch_decode(out, skip_special_tokens=True)]
    k = 1 if greedy else n
    return [texts[i * k:(i + 1) * k] for i in range(len(lengths))]


def greedy_prompts(core: GroupLlava, ctx: pd.DataFrame, use_group: bool, batch_size: int = 32) -> list[str]:
    """The most likely prompt of every context row, in batches."""
    core.eval()
    return [p[0] for lo in tqdm(range(0, len(ctx), batch_size), desc="prompts", unit="batch", disable=len(ctx) <= batch_size)
            for p in generate(core, ctx.iloc[lo:lo + batch_size], use_group, greedy=True)]
