"""SAM's full prompt interface on LiteMedSAM's decoder, as one graph for the API: points with labels
(box corners among them) and an optional low-resolution mask, against one image embedding.

Labels follow SAM's: 1 foreground point, 0 background point, 2 and 3 a box's top-left and
bottom-right corners, -1 padding (no point; SAM pads a prompt without a box with one).
``has_mask_input`` (1,) switches between the mask branch and SAM's "no mask" embedding.  LiteMedSAM
was fine-tuned with boxes alone, so its point and mask branches are those of the SAM it came from.
"""
from __future__ import annotations

import torch
from torch import nn


class PromptDecoder(nn.Module):
    def __init__(self, prompt_encoder, mask_decoder):
        super().__init__()
        self.prompt_encoder, self.mask_decoder = prompt_encoder, mask_decoder

    def sparse(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        sparse = pe.pe_layer.encode((coords + 0.5) / pe.image_size)             # (1, N, C)
        lab = labels.unsqueeze(-1)
        sparse = torch.where(lab == -1, torch.zeros_like(sparse), sparse)
        sparse = sparse + (lab == -1).float() * pe.not_a_point_embed.weight
        for k in range(4):
            sparse = sparse + (lab == k).float() * pe.point_embeddings[k].weight
        return sparse

    def forward(self, image_embedding, point_coords, point_labels, mask_input, has_mask_input):
        pe = self.prompt_encoder
        sparse = self.sparse(point_coords, point_labels)
        from_mask = pe.mask_downscaling(mask_input)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        has = has_mask_input.reshape(1, 1, 1, 1)
        dense = has * from_mask + (1 - has) * no_mask
        return self.mask_decoder(image_embedding, pe.dense_pe(), sparse, dense)
