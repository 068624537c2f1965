"""SAM prompt encoder, box prompts only in the forward path (always float).

Parameter layout follows SAM so the checkpoint loads strictly; the point and
mask branches exist as parameters but LiteMedSAM is driven by boxes alone.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from training.model.norms import LayerNorm2d


class RandomFourierPE(nn.Module):
    """Positional encoding of normalised (x, y) coordinates by random Fourier features."""

    def __init__(self, num_feats: int = 128):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, xy01: torch.Tensor) -> torch.Tensor:
        proj = (2.0 * xy01 - 1.0) @ self.positional_encoding_gaussian_matrix
        proj = 2.0 * math.pi * proj
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """(C, h, w) encoding of the cell centres of an h x w grid."""
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        xy = torch.stack([xx, yy], dim=-1).to(self.positional_encoding_gaussian_matrix.device)
        return self.encode(xy).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim: int = 256, grid: int = 64, image_size: int = 256,
                 mask_chans: int = 16):
        super().__init__()
        self.embed_dim = embed_dim
        self.grid_size = grid
        self.image_size = image_size
        self.pe_layer = RandomFourierPE(embed_dim // 2)
        # 0/1: negative/positive point, 2/3: box top-left / bottom-right corner
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_chans // 4, 2, stride=2), LayerNorm2d(mask_chans // 4), nn.GELU(),
            nn.Conv2d(mask_chans // 4, mask_chans, 2, stride=2), LayerNorm2d(mask_chans), nn.GELU(),
            nn.Conv2d(mask_chans, embed_dim, 1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_pe(self) -> torch.Tensor:
        """(1, C, 64, 64) positional encoding of the image-embedding grid."""
        return self.pe_layer.grid(self.grid_size, self.grid_size).unsqueeze(0)

    def forward(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """boxes (B, 1, 4) or (B, 4) in 256-space -> sparse (B, 2, C), dense (B, C, 64, 64)."""
        corners = (boxes.reshape(-1, 2, 2) + 0.5) / self.image_size
        sparse = self.pe_layer.encode(corners)
        corner_type = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        sparse = sparse + corner_type.unsqueeze(0)
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            sparse.shape[0], -1, self.grid_size, self.grid_size)
        return sparse, dense
