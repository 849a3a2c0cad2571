"""G-MLLM: a LLaVA model from transformers with a group token, and its input encoding.

The group token (eq. 7): an MLP maps G_{s,k} -- the group centroid and its percentile points, each of
PAAG's d dimensions -- to one embedding e_G of the language model's width, placed first in the input:
[e_G; X_V; X_T]. X_V are LLaVA's projected vision-tower patches, X_T the instruction's text tokens.
The profiles that build one are in `builders`, the reward model in `grm`, inference in `policy`.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from osmf_core.models.encoders import MobileNetV2Features, mobilenet_v2_imagenet
from osmf_core.models.gmllm.head import IGNORE, NextTokenLogprobs, TrainingOutput, mean_nll
from osmf_core.models.gmllm.tokens import GROUP_TOKEN, GROUP_WORD, IMAGE_TOKEN

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
        # row n: which of the centroid and points a model of n points reads (built here, on the CPU, and moved
        # with the module: indexing a GPU tensor with a list would copy the list from pageable memory each step)
        masks = torch.zeros(group_points + 1, 1 + group_points)
        for n in range(group_points + 1):
            masks[n, [0] + [1 + i for i in points_kept(n, group_points)]] = 1.0
        self.register_buffer("point_masks", masks, persistent=False)

    def forward(self, g: torch.Tensor, n_points: int | None = None) -> torch.Tensor:
        """g (B, (1 + group_points) * group_dim) -> (B, out)."""
        g = g.view(len(g), 1 + self.group_points, self.group_dim)
        if n_points is not None and n_points < self.group_points:
            if n_points < 0:
                raise ValueError(f"n_points must be in [0, {self.group_points}], got {n_points}")
            g = g * self.point_masks[n_points].to(g.dtype).view(1, -1, 1)
        return self.net(g.flatten(1))


class GroupLlava(nn.Module):
    """LLaVA + group token. `embed` builds [e_G; X_V; X_T]; `forward` is the causal LM on it."""

    def __init__(self, llava, tokenizer, group_dim: int, group_points: int, group_hidden: int,
                 image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)):
        super().__init__()
        self.llava, self.tokenizer = llava, tokenizer
        hidden = llava.config.text_config.hidden_size
        self.group_mlp = GroupTokenMLP(group_dim, group_points, group_hidden, hidden)
        self.next_token = NextTokenLogprobs()  # the head and the loss, a region of its own (no weights)
        vc = llava.config.vision_config
        self.image_size, self.patch_size = vc.image_size, vc.patch_size
        self.n_image_tokens = (vc.image_size // vc.patch_size) ** 2
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.group_token_id = tokenizer.convert_tokens_to_ids(GROUP_TOKEN)
        # plain tensors, not buffers: they stay on the CPU, where pixels() normalises (model.to() leaves them)
        self.pixel_mean, self.pixel_std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1)
                                           for v in (image_mean, image_std))
        self.meta = {"group_dim": group_dim, "group_points": group_points, "group_hidden": group_hidden,
                     "image_mean": list(image_mean), "image_std": list(image_std)}

    @property
    def hidden_size(self) -> int:
        return self.llava.config.text_config.hidden_size

    # ------------------------------------------------------------------ inputs
    def pixels(self, pngs) -> torch.Tensor:
        """PNG bytes -> normalised (N, 3, S, S) pixel values for the vision tower, on the CPU wherever the model
        is: encode moves them with the other inputs (to a GPU through pinned memory; a plain copy from pageable
        memory would wait for the device in every step)."""
        arr = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize((self.image_size,) * 2,
                                                                                   Image.BILINEAR))
                        for b in pngs]).astype(np.float32) / 255.0
        return (torch.from_numpy(arr).permute(0, 3, 1, 2) - self.pixel_mean) / self.pixel_std

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
        # no branch on the token values here: each would read the GPU back (a sync, and a graph break under
        # torch.compile); encode() checks the image and group tokens on the CPU
        if pixel_values is not None:
            out = self.llava.model.get_image_features(pixel_values=pixel_values.to(emb.dtype))
            feats = torch.cat(list(out.pooler_output), dim=0).to(emb.dtype)
            emb = place_rows(emb, input_ids == self.image_token_id, feats)
        if group_features is not None:  # e_G of every row, placed where a row has its group token
            e_g = self.group_mlp(group_features.to(emb.dtype), n_points).to(emb.dtype)
            emb = torch.where((input_ids == self.group_token_id).unsqueeze(-1), e_g.unsqueeze(1), emb)
        return emb

    # A whole-sequence pass (training, scoring) reads encode's right-padded rows. With SDPA (every profile here)
    # the language model gets the (B, 1, L, L) mask that transformers would build from the 2D one (lm_mask),
    # built here: there, building it checks the mask for padding (or, without a mask, the positions for packed
    # sequences) by reading the GPU back, a wait for the device in every step.
    # Nor does such a pass keep a key-value cache (use_cache=False; generation keeps its own): building one
    # costs memory, and each layer writing its own slot of it made torch.compile specialise every layer, so
    # compiled layers stopped sharing a graph and past torch's 8 recompiles ran eager (found on a GPU)
    def forward(self, input_ids, attention_mask, pixel_values=None, group_features=None, labels=None,
                n_points: int | None = None):
        """With labels (a training pass): a TrainingOutput, the loss and each position's next-token
        log-probability through the head's region (no logits); without: transformers' output (`logits`)."""
        if labels is None:
            emb = self.embed(input_ids, pixel_values, group_features, n_points)
            return self.llava(inputs_embeds=emb, attention_mask=self.lm_mask(attention_mask), use_cache=False)
        logp = self.next_token(self.hidden(input_ids, attention_mask, pixel_values, group_features, n_points),
                               self.llava.lm_head, labels)
        return TrainingOutput(loss=mean_nll(logp, labels), token_logprobs=logp)

    def hidden(self, input_ids, attention_mask, pixel_values=None, group_features=None, n_points=None):
        """Last-layer hidden states (B, L, H) of the language model."""
        emb = self.embed(input_ids, pixel_values, group_features, n_points)
        return self.llava.model(inputs_embeds=emb, attention_mask=self.lm_mask(attention_mask),
                                use_cache=False).last_hidden_state

    def lm_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """The language model's mask for right-padded rows (B, L): with SDPA, (B, 1, L, L) booleans, position i
        attending to the real positions up to i, as transformers builds it (tested), without reading the GPU;
        with another attention, the 2D mask, for transformers to build its own."""
        if self.llava.config.text_config._attn_implementation != "sdpa":
            return attention_mask
        n = attention_mask.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=attention_mask.device).tril()
        return causal[None, None] & attention_mask.bool()[:, None, None, :]

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
           images=None, group_features=None, device=None, pad_to: int = 0) -> dict:
    """Token ids, attention mask and (with responses) labels of a batch, right-padded (to at least `pad_to`
    positions); pixel values of the images of the rows whose instruction shows one, in row order. Labels are IGNORE (-100) except on the response.
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
        labels.append(([IGNORE] * len(prompt) + answer)[:max_len])
        if IMAGE_TOKEN in str(instruction):
            n = str(instruction).count(IMAGE_TOKEN)
            if images is None:
                raise ValueError("an instruction shows an image but no images were given")
            pngs.extend(images[i] if n > 1 else [images[i]])
    width = max(pad_to, *(len(r) for r in rows))
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    lab = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, y) in enumerate(zip(rows, labels)):
        ids[i, :len(r)], lab[i, :len(y)], mask[i, :len(r)] = torch.tensor(r), torch.tensor(y), 1
    flat = ids.numpy()  # the checks read the CPU's copy, in numpy: nothing here waits for a device
    n_image = int((flat == model.image_token_id).sum())
    if n_image != len(pngs) * model.n_image_tokens:
        raise ValueError(f"{n_image} image tokens but {len(pngs) * model.n_image_tokens} image features "
                         f"({len(pngs)} images; an image cut by max_len {max_len}?)")
    if int((flat == model.group_token_id).sum(axis=1).max()) > 1:
        raise ValueError("at most one group token per row")
    out = {"input_ids": ids, "attention_mask": mask, "pixel_values": model.pixels(pngs) if pngs else None}
    if responses is not None:
        out["labels"] = lab
    if group_features is not None:  # without the group token no row reads them: None
        out["group_features"] = None if not use_group else group_tensor(group_features, (1 + model.meta["group_points"]) * model.meta["group_dim"])
    return out if device is None else to_device(out, device)


def to_device(tensors: dict, device) -> dict:
    """The dict's tensors (None stays None) on `device`. To a GPU through pinned memory without waiting: a
    plain copy from pageable memory holds the CPU until the GPU has finished everything queued before it.
    A tensor already pinned (pin_inputs) is copied as it is: pin_memory returns it."""
    device = torch.device(device)
    if device.type != "cuda":
        return {k: v.to(device) if v is not None else None for k, v in tensors.items()}
    return {k: None if v is None else v.pin_memory().to(device, non_blocking=True) if v.device.type == "cpu"
            else v.to(device) for k, v in tensors.items()}


def pin_inputs(tensors: dict) -> dict:
    """The dict's CPU tensors in pinned memory, where a GPU is (else as they are): inputs encoded ahead of their
    steps, so that a step only queues their copies (to_device)."""
    if not torch.cuda.is_available():
        return dict(tensors)
    return {k: v.pin_memory() if isinstance(v, torch.Tensor) and v.device.type == "cpu" else v
            for k, v in tensors.items()}


def place_rows(emb: torch.Tensor, where: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`emb` (B, L, H) with the positions where `where` (B, L) holds taking the rows of `rows` (N, H) one after
    another, in reading order: what emb.masked_scatter(where[..., None], rows) gives, and its gradients, but
    without reading the device back. masked_scatter's gradient for `rows` is a masked_select, whose length a
    GPU must report to the CPU: a wait in every step that trains the projector. Here each position reads its
    row by index (a row of zeros, then `rows`: the count of such positions up to it), and a position that takes
    none reads the zeros. More such positions than rows index past the end: an error, as in masked_scatter."""
    flat = where.flatten()
    slot = torch.where(flat, flat.cumsum(0), 0)
    picked = torch.cat([rows.new_zeros(1, rows.shape[1]), rows]).index_select(0, slot).view_as(emb)
    return torch.where(where.unsqueeze(-1), picked, emb)


def approx_tokens(instructions, responses, image_tokens: int) -> np.ndarray:
    """A row's length in tokens, estimated without the tokenizer: about 4 characters a token, `image_tokens`
    per image the instruction shows (for sorting rows by length, training.loop.length_bucketed)."""
    return np.array([(len(str(i)) + len(str(r))) // 4 + image_tokens * str(i).count(IMAGE_TOKEN)
                     for i, r in zip(instructions, responses)])


def group_tensor(features, width: int) -> torch.Tensor:
    """(B, width) float32 group features; rows without a group (empty arrays) are zeros."""
    out = np.zeros((len(features), width), dtype=np.float32)
    for i, f in enumerate(features):
        if len(f):
            if len(f) != width:
                raise ValueError(f"group features of {len(f)} values, the model reads {width}")
            out[i] = f
    return torch.from_numpy(out)




class MobileNetTower(nn.Module):
    """MobileNetV2's ImageNet trunk as a LLaVA vision tower: pixels (B,3,S,S) -> one hidden state, the
    (B, (S/32)^2, 1280) patch map, which LLaVA's projector maps to the language model's width. Frozen, with
    batch norm always on its running statistics (small batches would corrupt them)."""

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.net = mobilenet_v2_imagenet() if pretrained else MobileNetV2Features()
        self.net.requires_grad_(False)
        self.net.compile_region = True  # the training engine compiles the frozen trunk alone (training.engine)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, pixel_values, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        tokens = self.net(pixel_values).flatten(2).transpose(1, 2)
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=tokens.mean(1),
                                          hidden_states=(tokens,))


def _small_llava(config, pretrained: bool):
    """A LlavaForConditionalGeneration whose vision tower is MobileNetTower (its config's CLIP entry only
    describes the tower's shape: 1280 wide, patches of 32 px)."""
    from transformers import LlavaForConditionalGeneration
    llava = LlavaForConditionalGeneration(config)
    llava.model.vision_tower = MobileNetTower(pretrained)
    return llava
