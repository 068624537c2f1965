"""MedSAM ViT-B teacher: architecture (SAM ViT-B parameter count and names), random-weight forward, loading."""
import pytest
import torch

from training.model.vit_b import ViTB, _relative_table, teacher_input
from training.qat.student import Teacher

pytestmark = pytest.mark.slow


def test_vit_b_has_sam_vit_b_shape_and_names():
    m = ViTB()
    assert sum(p.numel() for p in m.parameters()) == 89_670_912        # SAM ViT-B image encoder
    names = set(m.state_dict())
    assert {"pos_embed", "patch_embed.proj.weight", "blocks.11.attn.rel_pos_h", "blocks.0.mlp.lin1.weight",
            "neck.0.weight", "neck.1.weight", "neck.3.bias"} <= names
    assert m.blocks[0].attn.rel_pos_h.shape == (27, 64) and m.blocks[2].attn.rel_pos_h.shape == (127, 64)


def test_relative_offsets():
    table = torch.arange(7.0)[:, None]                   # 2*4-1 rows, value = row number
    got = _relative_table(table, 4, 4)[..., 0]
    want = torch.tensor([[i - j + 3 for j in range(4)] for i in range(4)], dtype=torch.float32)
    assert torch.equal(got, want)


def test_random_weight_teacher_gives_the_student_embedding_shape(weights, tmp_path):
    torch.manual_seed(0)
    vit = ViTB()
    lite = torch.load(weights, map_location="cpu", weights_only=True)
    ckpt = {f"image_encoder.{k}": v for k, v in vit.state_dict().items()}
    ckpt.update({k: v for k, v in lite.items() if not k.startswith("image_encoder.")})
    torch.save(ckpt, tmp_path / "medsam_random.pth")
    teacher = Teacher(weights, tmp_path / "medsam_random.pth")       # strict loading of every part
    x = torch.rand(1, 3, 256, 256)
    assert teacher_input(x).shape == (1, 3, 1024, 1024)
    emb, logits = teacher(x, torch.tensor([[[30.0, 40.0, 120.0, 150.0]]]))
    assert emb.shape == (1, 256, 64, 64) and logits.shape == (1, 1, 256, 256)
    assert torch.isfinite(emb).all()
