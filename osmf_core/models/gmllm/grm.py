"""GRM (eq. 8), the group-aware reward model, in Bradley-Terry form: the G-MLLM reads [e_G; X_V(c); X_T] for
each creative c and a scalar head on the last position's hidden state gives r(c);
P(CTR_a > CTR_b | G) = sigmoid(r(a) - r(b)). Training is `osmf_core.training.grm`; scoring is here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from osmf_core.models.gmllm.model import GroupLlava, encode
from osmf_core.models.gmllm.tokens import GROUP_TOKEN, IMAGE_TOKEN


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
            if self.pooling == "patches":  # one image per row: its n_image_tokens hidden states in order, taken
                # from where the row's image begins (a boolean index would read the GPU back for its length)
                at = img.int().argmax(dim=1, keepdim=True) + torch.arange(self.base.n_image_tokens, device=h.device)
                h_image = h.gather(1, at.unsqueeze(-1).expand(-1, -1, h.shape[-1])).reshape(len(h), -1)
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


# The reward model's instruction (eq. 8), Bradley-Terry form: the group and ONE creative; the model scores
# each creative of a pair separately and P(a beats b) = sigmoid(r(a) - r(b)).
GRM_INSTRUCTION = (f"{IMAGE_TOKEN} For consumers {GROUP_TOKEN}, how many clicks will this advertising image "
                   "of {} get?")


def grm_instruction(title: str) -> str:
    return GRM_INSTRUCTION.replace("{}", f'"{title}"')


def reward_inputs(grm: GRM, titles, images, group_features, max_len: int, device) -> dict:
    """Model inputs of one-image rows: row i shows images[i] (PNG bytes) of titles[i] to group_features[i]."""
    return encode(grm.base, [grm_instruction(t) for t in titles], None, max_len, grm.use_group, list(images),
                  group_features, device)


@torch.no_grad()
def score_candidates(grm: GRM, title: str, group_features: np.ndarray, images: list[bytes], batch_size: int = 64,
                     max_len: int = 128) -> np.ndarray:
    """One reward per candidate image (PNG bytes) of `title` for a group (flat G_{s,k}; empty: no group):
    higher = more clicks expected in the group. P(i beats j) = sigmoid(r_i - r_j)."""
    grm.eval()
    device = next(grm.parameters()).device
    feats = np.asarray(group_features, dtype=np.float32).ravel()
    out = [grm.reward(**reward_inputs(grm, [title] * len(chunk), chunk, [feats] * len(chunk), max_len, device))
           for chunk in (list(images[i:i + batch_size]) for i in range(0, len(images), batch_size))]
    return torch.cat(out).float().cpu().numpy() if out else np.zeros(0, np.float32)


def win_probability(grm: GRM, title: str, group_features, image: bytes, others: list[bytes]) -> float:
    """Mean P(`image` beats each of `others`) in the group, by the GRM (Bradley-Terry: sigmoid(r_i - r_j))."""
    r = score_candidates(grm, title, group_features if grm.use_group else [], [image, *others])
    return float(np.mean(1 / (1 + np.exp(-(r[0] - r[1:]))))) if len(others) else float("nan")
