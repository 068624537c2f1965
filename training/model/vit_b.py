"""SAM ViT-B image encoder (MedSAM's), as an optional distillation teacher.

1024x1024 input, 16x16 patches (64x64 tokens, width 768), 12 blocks with 12 heads,
windowed attention (14x14 windows) except the global blocks 2, 5, 8, 11, decomposed
relative position terms, then a neck down to 256 channels: output 256x64x64, the
same embedding LiteMedSAM's TinyViT produces.  Parameter names follow the
released checkpoints (``image_encoder.*`` of a MedSAM ``.pth``) so they load with
``strict=True``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.model.norms import LayerNorm2d


def _relative_table(table: torch.Tensor, q: int, k: int) -> torch.Tensor:
    """(q, k, head_dim) rows of a learned relative-position table for q query and k key positions."""
    span = 2 * max(q, k) - 1
    if table.shape[0] != span:
        table = F.interpolate(table.T[None], size=span, mode="linear")[0].T
    qs = torch.arange(q, device=table.device)[:, None] * max(k / q, 1.0)
    ks = torch.arange(k, device=table.device)[None, :] * max(q / k, 1.0)
    offset = (qs - ks + (k - 1) * max(q / k, 1.0)).long()
    return table[offset]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, grid: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid - 1, dim // heads))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid - 1, dim // heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.heads, h * w, c // self.heads).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        rh, rw = _relative_table(self.rel_pos_h, h, h), _relative_table(self.rel_pos_w, w, w)
        qg = q.reshape(b * self.heads, h, w, -1)
        bias_h = torch.einsum("nhwc,hkc->nhwk", qg, rh)
        bias_w = torch.einsum("nhwc,wkc->nhwk", qg, rw)
        attn = (attn.view(-1, h, w, h, w) + bias_h[..., :, None] + bias_w[..., None, :]).view(-1, h * w, h * w)
        out = (attn.softmax(-1) @ v).view(b, self.heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, c)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1, self.lin2, self.act = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.GELU()

    def forward(self, x):
        return self.lin2(self.act(self.lin1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, grid: int):
        super().__init__()
        self.window = window
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, window if window else grid)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window:
            b, h, w, c = y.shape
            s = self.window
            ph, pw = (-h) % s, (-w) % s
            y = F.pad(y, (0, 0, 0, pw, 0, ph))
            H, W = h + ph, w + pw
            y = y.view(b, H // s, s, W // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s, s, c)
            y = self.attn(y)
            y = y.view(b, H // s, W // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, H, W, c)[:, :h, :w]
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 16, 16)

    def forward(self, x):
        return self.proj(x).permute(0, 2, 3, 1)


class ViTB(nn.Module):
    INPUT = 1024

    def __init__(self, dim=768, depth=12, heads=12, window=14, global_blocks=(2, 5, 8, 11), out=256):
        super().__init__()
        grid = self.INPUT // 16
        self.patch_embed = PatchEmbed(dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, 0 if i in global_blocks else window, grid)
                                    for i in range(depth))
        self.neck = nn.Sequential(nn.Conv2d(dim, out, 1, bias=False), LayerNorm2d(out),
                                  nn.Conv2d(out, out, 3, padding=1, bias=False), LayerNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 1024, 1024) in [0, 1] -> (N, 256, 64, 64)."""
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))


def teacher_input(image_256: torch.Tensor) -> torch.Tensor:
    """The student's 256x256 input up-sampled to the teacher's 1024x1024 (same frame, same padding)."""
    return F.interpolate(image_256, size=(ViTB.INPUT, ViTB.INPUT), mode="bilinear", align_corners=False)
