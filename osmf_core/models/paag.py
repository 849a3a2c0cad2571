"""PAAG: the product-aware preference model of the OSMF paper (section 3.2, eq. 1-4).

  e_u   = MLP([emb_1(a_1); ...; emb_20(a_20)])                      user embedding, d = 128
  e_u|t = CA(Q = e_u,   K = V = title token features)               product-aware user
  e_u|c = CA(Q = e_u|t, K = V = creative patch features)            creative-aware user
  y     = h_t(e_t) + h_v(e_v) + h_u|c(e_u|c)                        click logit, BCE on clicks

Attention over a single key would be constant (a softmax of one score is 1), so CA attends over the
tokens of the title and the patches of the image, with a residual path: e_u|t depends on both the
user and the product. The ablation rungs of the paper's Table 2 switch branches off.

How CA fuses what it attended to with its query (`fusion`):
  gate (default)  CA(q, X) = LN(q * (1 + attn(q, X)))   the product gates the user's dimensions, and the
                  creative gates those of e_u|t; with a linear h_u|c the click logit holds the products
                  user x category x style that the clicks depend on, which a sum cannot express
  add             CA(q, X) = LN(x + FFN(x)), x = LN(q + attn(q, X))   a transformer block; it has to
                  build those products inside its MLPs and, on the simulated world, learns none of them
The frozen encoders' token features are standardised and reduced by a PCA fitted on the feature tables
(`feature_pca` whitened components, 0 = off) before the learnable projections to d: 1,314 creatives do not
pin down a 1280 x 128 projection, 32 components do.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from osmf_core.data.catalog import USER_ATTRIBUTES

RUNGS = ("I", "I+U", "I+U+T", "I+U+T+UT", "full")
FUSIONS = ("gate", "add")


@dataclass
class PAAGConfig:
    rung: str = field(default="full", metadata={"choices": RUNGS})  # I, I+U, I+U+T, I+U+T+UT or full (Table 2)
    d: int = 128  # embedding size of e_u, e_t, e_v
    attr_dim: int = 16  # embedding size of each user attribute
    heads: int = 4  # attention heads of CA
    text_dim: int = 384  # size of the title token features (MiniLM: 384)
    image_dim: int = 1280  # size of the image patch features (MobileNetV2: 1280)
    dropout: float = 0.0
    # how CA fuses the attended tokens with its query: gate (multiplicative) or add (see the module docstring)
    fusion: str = field(default="gate", metadata={"choices": FUSIONS})
    feature_pca: int = 32  # whitened PCA components of the frozen token features (0 = all dimensions)

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.feature_pca < 0:
            raise ValueError("feature_pca must be >= 0")
        if self.rung not in RUNGS:
            raise ValueError(f"rung must be one of {RUNGS}, got {self.rung!r}")
        if self.d % self.heads:
            raise ValueError(f"d ({self.d}) must be divisible by heads ({self.heads})")

    @property
    def uses_user(self) -> bool:
        return self.rung != "I"

    @property
    def uses_title(self) -> bool:
        return self.rung in ("I+U+T", "I+U+T+UT", "full")

    def to_dict(self) -> dict:
        return asdict(self)


class CrossAttention(nn.Module):
    """CA(Q, K=V): one query vector attends over a padded set of tokens; a residual path keeps the query
    (gate: q * (1 + attended); add: q + attended, then a feed-forward block) and a layer norm."""

    def __init__(self, d: int, heads: int, dropout: float, fusion: str = "gate"):
        super().__init__()
        self.fusion = fusion
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        if fusion == "add":
            self.norm2 = nn.LayerNorm(d)
            self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, query: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """query (B,d), tokens (B,T,d), mask (B,T) True where a token exists -> (B,d)."""
        out, _ = self.attn(query[:, None], tokens, tokens, key_padding_mask=~mask, need_weights=False)
        return self._fuse(query, out[:, 0])

    def _fuse(self, query: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        if self.fusion == "gate":
            return self.norm1(query * (1.0 + attended))
        x = self.norm1(query + attended)
        return self.norm2(x + self.ffn(x))

    def fold(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The attention of any query against tokens (..., T, d) with mask (..., T), folded into three
        matrices: a head's score q_h . k_t is linear in the query, and so is the output projection of the
        attended values. -> (score weights (..., d, h*T), score biases (..., h*T), -inf where no token,
        projected values (..., h*T, d)). They depend on the tokens alone, so a product's title or a creative's
        patches are folded once for all their users, and `attend` is two matrix products per query."""
        d, h = tokens.shape[-1], self.attn.num_heads
        c = d // h
        w, b, scale = self.attn.in_proj_weight, self.attn.in_proj_bias, 1.0 / math.sqrt(c)
        k = F.linear(tokens, w[d:2 * d], b[d:2 * d]).unflatten(-1, (h, c))  # (..., T, h, c)
        v = F.linear(tokens, w[2 * d:], b[2 * d:]).unflatten(-1, (h, c))
        sw = torch.einsum("hcd,...thc->...dht", w[:d].view(h, c, d), k).flatten(-2) * scale
        sb = (torch.einsum("hc,...thc->...ht", b[:d].view(h, c), k) * scale).masked_fill(~mask[..., None, :],
                                                                                          float("-inf"))
        vo = torch.einsum("ehc,...thc->...hte", self.attn.out_proj.weight.view(d, h, c), v).flatten(-3, -2)
        return sw, sb.flatten(-2), vo

    def attend(self, query: torch.Tensor, folded: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """forward() (in eval mode: no dropout) of queries (n, d) against token sets folded already (`fold`):
        one set gives (n, d); m sets (leading dimension m) give (m, n, d)."""
        sw, sb, vo = folded
        scores = torch.matmul(query, sw) + sb[..., None, :]  # (..., n, h*T)
        scores = scores.unflatten(-1, (self.attn.num_heads, -1))  # a softmax over the T tokens of each head,
        weights = (scores - scores.amax(-1, keepdim=True)).exp_()  # written out: torch's kernel is ~4x slower
        weights = weights.div_(weights.sum(-1, keepdim=True)).flatten(-2)  # on rows this short (T ~ 10)
        attended = torch.matmul(weights, vo).add_(self.attn.out_proj.bias)
        if self.fusion == "gate":  # _fuse, in place on the fresh attended tensor
            return self.norm1(attended.add_(1.0).mul_(query))
        return self._fuse(query, attended)


def _head(d: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, 1))


def _whitening(x: torch.Tensor, k: int) -> torch.Tensor:
    """(dim, k): the first k principal directions of the centred rows x, each scaled to unit variance
    (columns beyond the rank of x stay zero)."""
    _, s, vt = torch.linalg.svd(x, full_matrices=False)
    r = min(k, int((s > s[0] * 1e-6).sum()) if len(s) else 0)
    out = torch.zeros(x.shape[1], k, dtype=x.dtype)
    out[:, :r] = vt[:r].T / (s[:r] / max(len(x) - 1, 1) ** 0.5)
    return out


def _masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)


class PAAG(nn.Module):
    def __init__(self, cfg: PAAGConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d
        self.attr_emb = nn.ModuleList(nn.Embedding(card, cfg.attr_dim) for card, _ in USER_ATTRIBUTES.values())
        self.user_mlp = nn.Sequential(nn.Linear(cfg.attr_dim * len(USER_ATTRIBUTES), 2 * d), nn.GELU(),
                                      nn.Linear(2 * d, d), nn.LayerNorm(d))
        k_text, k_image = (min(cfg.feature_pca, dim) if cfg.feature_pca else dim
                           for dim in (cfg.text_dim, cfg.image_dim))
        self.text_proj = nn.Linear(k_text, d)  # E_T -> 128
        self.image_proj = nn.Linear(k_image, d)  # E_I -> 128
        self.ca_title = CrossAttention(d, cfg.heads, cfg.dropout, cfg.fusion)
        self.ca_image = CrossAttention(d, cfg.heads, cfg.dropout, cfg.fusion)
        self.h_v, self.h_t = _head(d, cfg.dropout), _head(d, cfg.dropout)
        # gate: a linear read-out keeps the logit's user x product x creative products intact
        self.h_u = nn.Linear(d, 1) if cfg.fusion == "gate" else _head(d, cfg.dropout)
        # frozen-encoder features are standardised with statistics of the feature tables and reduced by their
        # whitened principal components (set_feature_stats), kept as buffers so that a saved model carries them
        for name, dim, k in (("text", cfg.text_dim, k_text), ("image", cfg.image_dim, k_image)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))
            if cfg.feature_pca:
                self.register_buffer(f"{name}_pca", torch.eye(dim, k))

    @torch.no_grad()
    def set_feature_stats(self, title, title_mask, patches, patch_mask, base_rate: float) -> None:
        """Per-dimension mean and std of the token and patch features, and the click base rate as the
        starting bias of the image head (numpy or torch arrays)."""
        for name, feats, mask in (("text", title, title_mask), ("image", patches, patch_mask)):
            valid = torch.as_tensor(feats)[torch.as_tensor(mask)].double()
            mean, std = valid.mean(0), valid.std(0).clamp_min(1e-3)
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_std").copy_(std)
            if self.cfg.feature_pca:
                pca = getattr(self, f"{name}_pca")
                pca.copy_(_whitening((valid - mean) / std, pca.shape[1]))
        self.h_v[-1].bias.fill_(float(torch.logit(torch.tensor(base_rate))))

    def _reduced(self, name: str, feats: torch.Tensor) -> torch.Tensor:
        """Frozen features standardised, then whitened onto their principal components when feature_pca."""
        z = (feats - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")
        return z @ getattr(self, f"{name}_pca") if self.cfg.feature_pca else z

    def title_tokens(self, title):
        return self.text_proj(self._reduced("text", title))

    def patch_tokens(self, patches):
        return self.image_proj(self._reduced("image", patches))

    def user_embedding(self, attrs: torch.Tensor) -> torch.Tensor:
        """e_u from integer attribute codes (B, 20)."""
        return self.user_mlp(torch.cat([emb(attrs[:, i]) for i, emb in enumerate(self.attr_emb)], dim=-1))

    def product_aware(self, attrs, title, title_mask) -> torch.Tensor:
        """e_u|t: the user's preference given the product's title tokens (B,T,text_dim)."""
        return self.ca_title(self.user_embedding(attrs), self.title_tokens(title), title_mask)

    def creative_scores(self, eut: torch.Tensor, image_tokens: torch.Tensor | None = None,
                        image_mask: torch.Tensor | None = None, folded=None) -> torch.Tensor:
        """The user branch of the click logit, h_u|c(CA(e_u|t, creative)), of every user for every creative:
        eut (n,d), image_tokens (m,N,d) projected patches (`patch_tokens`), image_mask (m,N) -> (n,m); or
        `folded` = ca_image.fold(image_tokens, image_mask), folded once for all the creatives' users."""
        if folded is None:
            folded = self.ca_image.fold(image_tokens, image_mask)
        return self.h_u(self.ca_image.attend(eut, folded))[..., 0].T

    def forward(self, attrs, title, title_mask, patches, patch_mask) -> torch.Tensor:
        """Click logits (B,) from attribute codes, title token features and image patch features."""
        cfg = self.cfg
        v = self.patch_tokens(patches)
        logit = self.h_v(_masked_mean(v, patch_mask))[:, 0]  # I: image-level CTR
        t = self.title_tokens(title) if cfg.uses_title else None
        if cfg.uses_title:
            logit = logit + self.h_t(_masked_mean(t, title_mask))[:, 0]
        if cfg.uses_user:
            u = self.user_embedding(attrs)
            if cfg.rung in ("I+U+T+UT", "full"):
                u = self.ca_title(u, t, title_mask)  # e_u|t
            if cfg.rung == "full":
                u = self.ca_image(u, v, patch_mask)  # e_u|c
            logit = logit + self.h_u(u)[:, 0]
        return logit


# models saved before CA had a fusion switch were the additive block on unreduced features
_BEFORE_FUSION = {"fusion": "add", "feature_pca": 0}


def load_model(path: str | Path) -> tuple[PAAG, dict]:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model = PAAG(PAAGConfig(**{**_BEFORE_FUSION, **blob["model"]}))
    model.load_state_dict(blob["state_dict"])
    return model.eval(), blob
