"""TinyViT image encoder in the LiteMedSAM configuration.

Input (N, 3, 256, 256) in [0, 1]; output (N, 256, 64, 64).  The patch embedding
uses 1x1 convolutions, so stage 0 (MBConv) runs at full 256x256 resolution;
the patch-merging steps halve the resolution twice (256 -> 128 -> 64) and the
last one (to 320 channels) keeps 64x64.  Module names follow the public
checkpoint so that ``lite_medsam.pth`` loads with ``strict=True``.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from training.model.norms import LayerNorm2d
from training.model.quant_switch import FLOAT, QuantConfig

EMBED_DIMS = (64, 128, 160, 320)
DEPTHS = (2, 2, 6, 2)
NUM_HEADS = (2, 4, 5, 10)
WINDOWS = (7, 7, 14, 7)
IMG_SIZE = 256
EMBED_GRID = 64


class ConvBN(nn.Sequential):
    """Bias-free convolution followed by BatchNorm (children ``c`` and ``bn``)."""

    def __init__(self, q: QuantConfig, cin, cout, k=1, stride=1, groups=1, input_kind="signed"):
        super().__init__()
        self.c = q.conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False,
                          input_kind=input_kind)
        self.bn = nn.BatchNorm2d(cout)


class PatchEmbed(nn.Module):
    def __init__(self, q: QuantConfig, cin: int, dim: int):
        super().__init__()
        self.seq = nn.Sequential(ConvBN(q, cin, dim // 2, input_kind="image"), nn.GELU(),
                                 ConvBN(q, dim // 2, dim))

    def forward(self, x):
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, q: QuantConfig, dim: int, expand: float = 4.0):
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(q, dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(q, hidden, hidden, k=3, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(q, hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x):
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """(N, C, H, W) or tokens -> tokens (N, L', C') with stride 2 (stride 1 into 320 channels)."""

    def __init__(self, q: QuantConfig, resolution: int, dim: int, out_dim: int):
        super().__init__()
        self.resolution = resolution
        stride = 1 if out_dim == 320 else 2
        self.act = nn.GELU()
        self.conv1 = ConvBN(q, dim, out_dim)
        self.conv2 = ConvBN(q, out_dim, out_dim, k=3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(q, out_dim, out_dim)

    def forward(self, x):
        if x.dim() == 3:
            n, _, c = x.shape
            x = x.view(n, self.resolution, self.resolution, c).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.permute(0, 2, 3, 1).flatten(1, 2)


def _relative_offset_index(window: int) -> tuple[torch.Tensor, int]:
    """Index (L, L) into a table of |dy|,|dx| offsets between positions of a window."""
    cells = list(itertools.product(range(window), range(window)))
    table: dict[tuple[int, int], int] = {}
    index = []
    for a in cells:
        for b in cells:
            key = (abs(a[0] - b[0]), abs(a[1] - b[1]))
            index.append(table.setdefault(key, len(table)))
    n = len(cells)
    return torch.tensor(index, dtype=torch.long).view(n, n), len(table)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative-position bias."""

    def __init__(self, q: QuantConfig, dim: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = q.linear(dim, 3 * dim)
        self.proj = q.linear(dim, dim)
        index, n_offsets = _relative_offset_index(window)
        self.attention_biases = nn.Parameter(torch.zeros(heads, n_offsets))
        self.register_buffer("attention_bias_idxs", index, persistent=False)
        # operands of the two matrix products
        self.q_quant = q.operand()
        self.k_quant = q.operand()
        self.v_quant = q.operand()
        self.attn_quant = q.operand(unsigned=True)

    def forward(self, x):
        n, length, _ = x.shape
        # per head the projection's rows are [q, k, v]; one 5-D permutation puts q, k and v
        # outermost (measured: cheaper than permuting and then splitting the innermost axis)
        qkv = self.qkv(self.norm(x)).view(n, length, self.heads, 3, self.head_dim)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)
        logits = self.q_quant(q) @ self.k_quant(k).transpose(-2, -1)
        logits = logits * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        attn = self.attn_quant(logits.softmax(dim=-1))
        out = (attn @ self.v_quant(v)).transpose(1, 2).reshape(n, length, -1)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, q: QuantConfig, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = q.linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = q.linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, depthwise 3x3 'local' convolution, MLP; tokens (N, H*W, C)."""

    def __init__(self, q: QuantConfig, dim: int, resolution: int, heads: int, window: int):
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = WindowAttention(q, dim, heads, window)
        self.local_conv = ConvBN(q, dim, dim, k=3, groups=dim)
        self.mlp = Mlp(q, dim, 4 * dim)

    def _windowed_attention(self, x):
        n, length, c = x.shape
        r, w = self.resolution, self.window
        if r == w:
            return self.attn(x)
        pad = (w - r % w) % w
        grid = F.pad(x.view(n, r, r, c), (0, 0, 0, pad, 0, pad))
        g = (r + pad) // w
        windows = grid.view(n, g, w, g, w, c).transpose(2, 3).reshape(n * g * g, w * w, c)
        out = self.attn(windows).view(n, g, g, w, w, c).transpose(2, 3).reshape(n, r + pad, r + pad, c)
        return out[:, :r, :r].reshape(n, length, c)

    def forward(self, x):
        n, length, c = x.shape
        x = x + self._windowed_attention(x)
        r = self.resolution
        # tokens are (N, H*W, C): the NHWC <-> NCHW permutations are what OpenVINO's convolutions
        # run in anyway (measured: cheaper than a 3-D transpose followed by a reshape)
        x = self.local_conv(x.view(n, r, r, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(n, length, c)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    def __init__(self, q: QuantConfig, dim: int, depth: int, resolution: int, out_dim: int):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(q, dim) for _ in range(depth))
        self.downsample = PatchMerging(q, resolution, dim, out_dim)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    def __init__(self, q: QuantConfig, dim, depth, resolution, heads, window, out_dim=None):
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(q, dim, resolution, heads, window) for _ in range(depth))
        self.downsample = PatchMerging(q, resolution, dim, out_dim) if out_dim else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    def __init__(self, q: QuantConfig = FLOAT):
        super().__init__()
        d = EMBED_DIMS
        self.patch_embed = PatchEmbed(q, 3, d[0])
        # stage resolutions: 256, 128, 64, 64 (the last merge keeps 64x64)
        res = (IMG_SIZE, IMG_SIZE // 2, IMG_SIZE // 4, IMG_SIZE // 4)
        self.layers = nn.ModuleList([ConvStage(q, d[0], DEPTHS[0], res[0], d[1])])
        for i in range(1, 4):
            self.layers.append(AttentionStage(
                q, d[i], DEPTHS[i], res[i], NUM_HEADS[i], WINDOWS[i],
                out_dim=d[i + 1] if i < 3 else None))
        self.neck = nn.Sequential(
            q.conv2d(d[3], 256, 1, bias=False),
            LayerNorm2d(256),
            q.conv2d(256, 256, 3, padding=1, bias=False),
            LayerNorm2d(256),
        )

    def forward(self, x):
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        n, _, c = x.shape
        return self.neck(x.view(n, EMBED_GRID, EMBED_GRID, c).permute(0, 3, 1, 2))
