"""A small Vision Transformer (Dosovitskiy et al., 2021) for 28x28 images, plain torch.nn.

Patches -> tokens (a strided conv), a learned position embedding, pre-norm encoder
blocks, a final LayerNorm, then the class token or the mean of the patch tokens into a
linear head. Shapes: B batch, N tokens (patches, plus the class token with pool=cls),
D = cfg.dim, H = cfg.heads.

The position embedding has one row per patch, so the image size is fixed when the model
is built: it comes from `cfg.image_size` (the registry does not pass the data's size),
and `forward` rejects other sizes with a message naming that key.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn
from torch.nn import functional as F

from mlpipe.config import check
from mlpipe.models.registry import register


class PatchEmbed(nn.Module):
    """(B, C, S, S) -> (B, N, D): one token per non-overlapping patch."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid: torch.Tensor = self.proj(x)  # (B, D, S/p, S/p)
        return grid.flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, attn_dropout: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_dropout = attn_dropout
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads)  # (B, N, 3, H, D/H)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, D/H)
        p = self.attn_dropout if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, H, N, D/H)
        x = x.transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        out: torch.Tensor = self.proj_drop(self.proj(x))
        return out


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D)
        out: torch.Tensor = self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))
        return out


class Block(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.attn_dropout, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = Mlp(cfg.dim, round(cfg.dim * cfg.mlp_ratio), cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D)
        attended: torch.Tensor = self.attn(self.norm1(x))
        x = x + attended
        mixed: torch.Tensor = self.mlp(self.norm2(x))
        return x + mixed


class ViTPool(str, Enum):
    cls = "cls"  # a learned class token, read out after the last block
    mean = "mean"  # the mean of the patch tokens


@dataclass
class ViTConfig:
    arch: str = "vit"
    image_size: int = 28  # input side in pixels; must equal data.image_size (checked at forward)
    patch_size: int = 4  # 28 / 4 -> 7x7 = 49 tokens
    dim: int = 128
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 2.0  # MLP hidden width = mlp_ratio * dim
    dropout: float = 0.1  # after the position embedding, the attention projection, the MLP
    attn_dropout: float = 0.0  # on the attention weights
    pool: ViTPool = ViTPool.cls

    def __post_init__(self) -> None:
        check(self.image_size > 0, "image_size", f"must be > 0, got {self.image_size}")
        check(self.patch_size > 0, "patch_size", f"must be > 0, got {self.patch_size}")
        check(
            self.image_size % self.patch_size == 0,
            "patch_size",
            f"must divide image_size {self.image_size}, got {self.patch_size}",
        )
        check(self.dim > 0, "dim", f"must be > 0, got {self.dim}")
        check(self.depth > 0, "depth", f"must be > 0, got {self.depth}")
        check(self.heads > 0, "heads", f"must be > 0, got {self.heads}")
        check(
            self.dim % self.heads == 0,
            "heads",
            f"must divide dim {self.dim}, got {self.heads}",
        )
        check(self.mlp_ratio > 0, "mlp_ratio", f"must be > 0, got {self.mlp_ratio}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(
            0.0 <= self.attn_dropout < 1.0,
            "attn_dropout",
            f"must be in [0, 1), got {self.attn_dropout}",
        )


@register("vit", ViTConfig)
class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.image_size = cfg.image_size
        self.pool = ViTPool(cfg.pool)
        self.num_prefix = 1 if self.pool is ViTPool.cls else 0
        num_patches = (cfg.image_size // cfg.patch_size) ** 2
        self.patch_embed = PatchEmbed(in_channels, cfg.dim, cfg.patch_size)
        # no class token with pool=mean: it would be a parameter that never gets a gradient
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if self.num_prefix else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix + num_patches, cfg.dim))
        self.pos_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.Sequential(*(Block(cfg) for _ in range(cfg.depth)))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head_drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.dim, num_classes)
        self.num_features = cfg.dim
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's ViT recipe: truncated normal(0.02) for embeddings and linear layers
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def _check_size(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if h != self.image_size or w != self.image_size:
            raise ValueError(
                f"ViT built for {self.image_size}x{self.image_size} images "
                f"(model.image_size), got {h}x{w}: set model.image_size to the data's size"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        x = self.patch_embed(x)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, D)
        x = self.pos_drop(x + self.pos_embed)
        out: torch.Tensor = self.norm(self.blocks(x))  # (B, N, D)
        return out

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, 0] if self.pool is ViTPool.cls else x[:, self.num_prefix :].mean(dim=1)  # (B, D)
        out: torch.Tensor = self.head(self.head_drop(x))  # (B, num_classes)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
