"""The mask decoder split by what depends on the box: a per-image graph and a per-box graph.

In SAM's two-way transformer the image side (4,096 tokens of width 256) is where the
work is, yet much of it is the same for every box.  Writing the image state of a box
as ``X = a * B + C @ R`` (``B``: a per-image 4096x256 matrix; ``a``: a per-box scalar
per image token; ``C @ R``: a low-rank per-box term, rank <= 117) lets every linear
map of it be applied to ``B`` once per image and to the small ``R`` once per box:

* block 1 starts from the image itself (``X0 = E + dense``): its token->image keys and
  values and its image->token queries are per-image;
* an image->token attention adds, per image token, a softmax-weighted sum of 7 token
  values per head: ``out_proj(A V) = A (V W_out)``, a rank-56 term;
* LayerNorm acts per token: its mean and variance follow from per-image dot products
  with ``B`` and a per-box Gram matrix, and it leaves the form ``a * B + C @ R``;
* the token->image attentions never materialise the per-box keys and values: with 7
  queries, ``q K^T`` and ``P V`` are taken term by term;
* the first transposed convolution (2x2, stride 2) is a per-pixel linear map, applied
  to ``B`` per image and to ``R`` per box (the two low-rank terms of the last block as one of
  rank 112: one matmul); its map is centred over each sub-pixel's channels, so its LayerNorm
  needs no mean (an RMS norm); from there on the graph is SAM's.  Measured against the two
  rank-56 products and the full LayerNorm, 8 boxes, f32, AVX-512 EPYC capped at AVX512_CORE:
  62.2 -> 59.9 ms a call (up-scaling 29.7 -> 25.9 ms).

The per-image graph maps the embedding to the state tensors :data:`STATE_OUTPUTS`, each
``(1, 4096, width)``; the per-box graph takes them with the boxes.  In
float the result equals :class:`~training.model.mask_decoder.MaskDecoder` up to
rounding (tests).  Per box this is about 0.47 GMAC instead of 1.75; the per-image graph
costs about as much as one box of the plain decoder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qmedsam.model_spec import DECODER_STATE

HEADS = 8
TOKENS = 7                      # IoU token, 4 mask tokens, 2 box corners
GRID = 64

# The per-image state: (name, width) of each part, grouped by the matrix it is a product of.
# Every part wider than 1 is its own graph output (one matmul each); the 1-wide parts and the two
# squared norms share one small output, ``cols`` (order: COLUMNS).  Separate outputs, not one
# concatenated state: measured, the concatenation and the per-call split of a 4096x1671 state
# were copies costing 3.3 ms per image and 2.6 ms per decoder call (f32), and 27 MB.
_GROUPS = {
    "xp": [("k1", 128), ("q1", 128)],                                   # X0 + positional encoding
    "x0": [("v1", 128)],                                                # X0 = embedding + dense prompt
    "x0c": [("g0", 128), ("g0b", 1)],                                   # X0 centred per token
    "b1": [("kb2", 128), ("vb2", 128), ("qb2", 128)],                   # B1 = X0c * norm4 weight
    "b1c": [("h1", 128), ("q1s", 1), ("e1", 1), ("f1", 1), ("w2", 128), ("g1", 1)],   # B1 centred
    "b2": [("kb3", 128), ("vb3", 128), ("tb", 256)],                    # B2 = B1c * block-2 norm4 weight
}
WIDE = [(g, name) for g, parts in _GROUPS.items() for name, width in parts if width > 1]
COLUMNS = [name for parts in _GROUPS.values() for name, width in parts if width == 1] + ["n0", "n1"]
STATE_OUTPUTS = [name for _, name in WIDE] + ["cols"]
assert [f"state_{n}" for n in STATE_OUTPUTS] == list(DECODER_STATE), "runtime and graph disagree"


def _w(layer):
    return layer.weight, layer.bias


def _heads(x: torch.Tensor) -> torch.Tensor:
    """(..., 128) -> (..., HEADS, 16)."""
    return x.unflatten(-1, (HEADS, x.shape[-1] // HEADS))


def _upscale_matrix(convt: nn.Module) -> torch.Tensor:
    """A ConvTranspose2d with a 2x2 kernel and stride 2 as a per-pixel map (C_in, 2*2*C_out),
    columns ordered (ky, kx, channel): pixel (y, x) feeds sub-pixels (2y + ky, 2x + kx)."""
    return convt.weight.permute(0, 2, 3, 1).reshape(convt.weight.shape[0], -1)


def _centred_groups(m: torch.Tensor, width: int) -> torch.Tensor:
    """``m`` (..., k * width) with each group of ``width`` columns centred: anything times it has
    zero mean over each group.  Applied to the first up-scaling map (groups: a sub-pixel's
    channels), it makes the LayerNorm that follows an RMS norm (no mean to take or subtract)."""
    g = m.unflatten(-1, (-1, width))
    return (g - g.mean(-1, keepdim=True)).flatten(-2)


def _centred_upscale(upscaling: nn.Sequential) -> torch.Tensor:
    """The first transposed convolution's per-pixel map, centred per sub-pixel's channels."""
    return _centred_groups(_upscale_matrix(upscaling[0]), upscaling[0].out_channels)


class DecoderImageState(nn.Module):
    """Image embedding (1, 256, 64, 64) -> the per-image decoder state (:data:`STATE_OUTPUTS`):
    one matmul per wide part, and the 1-wide parts with two squared norms as ``cols``."""

    def __init__(self, model):
        super().__init__()
        md, pe = model.mask_decoder, model.prompt_encoder
        l0, l1 = md.transformer.layers
        fin = md.transformer.final_attn_token_to_image
        t2i, i2t = l0.cross_attn_token_to_image, l0.cross_attn_image_to_token
        t2i2, i2t2 = l1.cross_attn_token_to_image, l1.cross_attn_image_to_token
        g4 = l0.norm4.weight
        wo1, bo1 = _w(i2t.out_proj)
        wo2, bo2 = _w(i2t2.out_proj)
        col = lambda v: v[:, None]                 # noqa: E731  (a vector as one column)
        with torch.no_grad():
            maps = {      # the matrices (256, width) of each group's parts, in _GROUPS order
                "xp": [t2i.k_proj.weight.T, i2t.q_proj.weight.T],
                "x0": [t2i.v_proj.weight.T],
                "x0c": [wo1, col(bo1)],
                "b1": [t2i2.k_proj.weight.T, t2i2.v_proj.weight.T, i2t2.q_proj.weight.T],
                "b1c": [g4[:, None] * wo1, col(g4), col(bo1 * g4), col(l0.norm4.bias), wo2, col(bo2)],
                "b2": [fin.k_proj.weight.T, fin.v_proj.weight.T, _centred_upscale(md.output_upscaling)],
            }
            for group, parts in _GROUPS.items():
                cols = []
                for (name, width), mat in zip(parts, maps[group]):
                    if width > 1:
                        self.register_buffer(f"w_{name}", mat.clone())
                    else:
                        cols.append(mat)
                if cols:
                    self.register_buffer(f"c_{group}", torch.cat(cols, 1).clone())
            self.register_buffer("b_k1", t2i.k_proj.bias.clone())
            self.register_buffer("b_q1", i2t.q_proj.bias.clone())
            self.register_buffer("pos", pe.dense_pe().flatten(2).transpose(1, 2)[0].clone())
            self.register_buffer("dense", pe.no_mask_embed.weight[0].clone())
            self.register_buffer("g4", g4.clone())
            self.register_buffer("g4b", l1.norm4.weight.clone())

    def forward(self, image_embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x0 = image_embedding.flatten(2).transpose(1, 2)[0] + self.dense           # (N, 256)
        x0c = x0 - x0.mean(-1, keepdim=True)
        b1 = x0c * self.g4
        b1c = b1 - b1.mean(-1, keepdim=True)
        src = {"xp": x0 + self.pos, "x0": x0, "x0c": x0c, "b1": b1, "b1c": b1c, "b2": b1c * self.g4b}
        bias = {"k1": self.b_k1, "q1": self.b_q1}
        out = []
        for group, name in WIDE:
            y = src[group] @ getattr(self, f"w_{name}")
            out.append((y + bias[name] if name in bias else y)[None])
        cols = torch.cat([x0c @ self.c_x0c, b1c @ self.c_b1c, x0c.square().sum(-1, keepdim=True),
                          b1c.square().sum(-1, keepdim=True)], -1)                 # COLUMNS order
        return (*out, cols[None])


def _block_diag(x: torch.Tensor) -> torch.Tensor:
    """(B, T, H, d) per-head token vectors -> (B, H*d, H*T) block-diagonal matrix, so that a
    per-image (N, H*d) matrix times it gives every head's (N, T) products in one matmul."""
    b, t, h, d = x.shape
    eye = torch.eye(h, dtype=x.dtype, device=x.device)
    return (x.permute(0, 2, 3, 1)[:, :, :, None, :] * eye[None, :, None, :, None]).reshape(-1, h * d, h * t)


def _diag_blocks(x: torch.Tensor) -> torch.Tensor:
    """(B, H*T, H*d) -> (B, T, H*d): the (head, head) blocks of a product whose rows and columns
    are both split by head (the inverse step of :func:`_block_diag`)."""
    h = HEADS
    eye = torch.eye(h, dtype=x.dtype, device=x.device)
    blocks = (x.reshape(-1, h, TOKENS, h, x.shape[-1] // h) * eye[None, :, None, :, None]).sum(3)   # (B, H, T, d)
    return blocks.transpose(1, 2).flatten(2)


def _grouped_softmax(scores: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Softmax over each head's 7 tokens of (B, N, 56) scores, as whole-row operations: the
    shift is the row's maximum over all heads (any per-head constant leaves a softmax unchanged)
    and the per-head sums come from one matmul with the block-diagonal ones matrix ``groups``.
    Measured: OpenVINO's Softmax over an innermost axis of 7 took a third of the per-box graph
    with bf16 leftovers.  (A head would underflow only if all its scores sat ~87 below another
    head's maximum.)"""
    e = (scores - scores.amax(-1, keepdim=True)).exp()
    return e / (e @ groups)


class DecoderBoxes(nn.Module):
    """(per-image state tensors, boxes (B, 1, 4)) -> low-res logits (B, 1, 256, 256)
    and the IoU prediction of the single-mask output (B, 1).

    Laid out for a CPU: every large product is a plain (batched) matmul with a per-image
    (4096, 128) operand or a per-box (4096, r) one; head-wise products use block-diagonal
    token matrices (:func:`_block_diag`), and the up-scaling runs per pixel, channels last,
    with the second transposed convolution as a matmul too."""

    def __init__(self, model):
        super().__init__()
        self.md = model.mask_decoder
        self.pe = model.prompt_encoder
        md = self.md
        l1 = md.transformer.layers[1]
        fin = md.transformer.final_attn_token_to_image
        up1, up2 = md.output_upscaling[0], md.output_upscaling[3]
        l0 = md.transformer.layers[0]
        with torch.no_grad():
            pos = self.pe.dense_pe().flatten(2).transpose(1, 2)[0]
            # Constant parts of the later blocks' image keys/queries: the positional encoding and
            # the preceding LayerNorm's shift (the same for every image and box).
            self.register_buffer("kp2", F.linear(pos + l0.norm4.bias, *_w(l1.cross_attn_token_to_image.k_proj)).clone())
            self.register_buffer("qp2", F.linear(pos + l0.norm4.bias, *_w(l1.cross_attn_image_to_token.q_proj)).clone())
            self.register_buffer("kp3", F.linear(pos + l1.norm4.bias, *_w(fin.k_proj)).clone())
            # transposed convolutions as per-pixel maps with columns (ky, kx, channel)
            # centred per sub-pixel (see _centred_groups): the up-scaling LayerNorm is an RMS norm
            self.register_buffer("t1", _centred_upscale(md.output_upscaling).clone())
            t1_bias = up1.bias.repeat(4) + l1.norm4.bias @ _upscale_matrix(up1)
            self.register_buffer("t1_bias", _centred_groups(t1_bias, up1.out_channels).clone())
            self.register_buffer("t2", _upscale_matrix(up2).clone())
            self.register_buffer("t2_bias", up2.bias.repeat(4).clone())
            self.register_buffer("groups", torch.block_diag(*[torch.ones(TOKENS, TOKENS)] * HEADS))

    def forward(self, *inputs: torch.Tensor):
        """``inputs``: the per-image state (:data:`STATE_OUTPUTS`, as DecoderImageState returns
        it), then the boxes."""
        md = self.md
        l0, l1 = md.transformer.layers
        fin = md.transformer.final_attn_token_to_image
        boxes = inputs[-1]
        state = dict(zip(STATE_OUTPUTS, inputs[:-1]))

        def part(name):
            if name in state:
                return state[name][0]
            i = COLUMNS.index(name)
            return state["cols"][0][:, i:i + 1]
        sparse, _ = self.pe(boxes)
        b = sparse.shape[0]
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        tpe = tokens

        def token_to_image(attn, tokens, k_img, v_img, k_pos=None, scale=None, low=(), v_shift=None):
            """Token->image attention on image keys ``scale * k_img + k_pos + L Wk^T`` and values
            ``scale * v_img + (L + v_shift) Wv^T + bias``, L = sum of coef @ rows over ``low``:
            never materialised per box.  Scores are (B, 56, N), the softmax over the last axis."""
            q = _block_diag(_heads(attn.q_proj(tokens + tpe))).transpose(1, 2)     # (B, 56, 128)
            scores = q @ k_img.T                                                      # (B, 56, N)
            if scale is not None:
                scores = scale[:, None, :] * scores
            if k_pos is not None:
                scores = scores + q @ k_pos.T
            for coef, rows in low:
                scores = scores + (q @ (rows @ attn.k_proj.weight.T).transpose(1, 2)) @ coef.transpose(1, 2)
            pm = (scores * 0.25).softmax(dim=-1)                                      # over the 4,096 keys
            full = (pm if scale is None else pm * scale[:, None, :]) @ v_img         # (B, 56, 128)
            for coef, rows in low:
                full = full + (pm @ coef) @ (rows @ attn.v_proj.weight.T)
            bias = attn.v_proj.bias if v_shift is None else attn.v_proj(v_shift)
            return attn.out_proj(_diag_blocks(full) + bias)                         # probabilities sum to 1

        def image_to_token(attn, tokens, q_img, q_pos=None, scale=None, low=()):
            """Image->token attention, per image token a softmax over the 7 tokens of each head.
            Returns the probabilities (B, N, 56), the rows they weight (B, 56, 256) (``out_proj``
            of each token value, without its bias) and the block-diagonal token values."""
            k = _block_diag(_heads(attn.k_proj(tokens + tpe)))                     # (B, 128, 56)
            scores = q_img @ k                                                        # (B, N, 56)
            if scale is not None:
                scores = scale[..., None] * scores
            if q_pos is not None:
                scores = scores + q_pos @ k
            for coef, rows in low:
                scores = scores + coef @ ((rows @ attn.q_proj.weight.T) @ k)
            a = _grouped_softmax(scores * 0.25, self.groups)
            vt = _heads(attn.v_proj(tokens))
            wo = attn.out_proj.weight.unflatten(1, (HEADS, -1))                     # (256, H, 16)
            return a, torch.einsum("bthd,chd->bhtc", vt, wo).flatten(1, 2), _block_diag(vt)

        def centred(x):
            return x - x.mean(-1, keepdim=True)

        def quad(a, g, b_=None):
            """Per token a G b^T for (B, N, k) coefficient matrices and a (B, k, k) Gram block."""
            return ((a @ g) * (a if b_ is None else b_)).sum(-1)

        # Each head's image->token probabilities sum to 1 over its 7 tokens, so A @ (rows + v / H)
        # = A @ rows + v: constant vectors fold into the rows an attention weights.
        # ---- block 1: the image side is the image itself (per-image k1, v1, q1)
        tokens = l0.norm1(l0.self_attn(tokens, tokens, tokens))
        tokens = l0.norm2(tokens + token_to_image(l0.cross_attn_token_to_image, tokens, part("k1"), part("v1")))
        tokens = l0.norm3(tokens + l0.mlp(tokens))
        i2t = l0.cross_attn_image_to_token
        a1, u1, vt1 = image_to_token(i2t, tokens, part("q1"))
        bo1 = i2t.out_proj.bias
        p0 = centred(u1) + centred(bo1) / HEADS          # X0 + A1 U1 + bo1, centred: X0c + A1 P0
        var0 = part("n0")[:, 0] + 2 * (a1 * (part("g0") @ vt1 + part("g0b") / HEADS)).sum(-1) \
            + quad(a1, p0 @ p0.transpose(1, 2))
        s1 = torch.rsqrt(var0 / 256 + l0.norm4.eps)                                  # (B, N)
        g4, be4 = l0.norm4.weight, l0.norm4.bias
        # X1 = s1 * B1 + (s1 A1) @ P1 + be4,  B1 = X0c * g4 (per image), P1 = P0 * g4
        sa1, p1 = s1[..., None] * a1, p0 * g4

        # ---- block 2 (be4 is in the constant kp2 / qp2 and in the value shift)
        t = tokens + tpe
        tokens = l1.norm1(tokens + l1.self_attn(t, t, tokens))
        tokens = l1.norm2(tokens + token_to_image(l1.cross_attn_token_to_image, tokens, part("kb2"), part("vb2"),
                                                  self.kp2, s1, [(sa1, p1)], be4))
        tokens = l1.norm3(tokens + l1.mlp(tokens))
        i2t = l1.cross_attn_image_to_token
        a2, u2, vt2 = image_to_token(i2t, tokens, part("qb2"), self.qp2, s1, [(sa1, p1)])
        # Y2 = X1 + A2 U2 + bo2 = s1 B1 + sa1 P1 + A2 Q0,  Q0 = U2 + (be4 + bo2) / H;
        # centred: s1 B1c + sa1 P1c + A2 Q0c, with B1c . P1 and B1c . Q0 from per-image products
        p1c, q0c = centred(p1), centred(u2 + (be4 + i2t.out_proj.bias) / HEADS)
        b_p1 = part("h1") @ vt1 - u1.mean(-1)[:, None, :] * part("q1s") \
            + (part("e1") - bo1.mean() * part("q1s")) / HEADS                        # (B, N, 56)
        b_q0 = part("w2") @ vt2 + (part("f1") + part("g1")) / HEADS
        var1 = s1.square() * part("n1")[:, 0] + 2 * s1 * ((sa1 * b_p1).sum(-1) + (a2 * b_q0).sum(-1)) \
            + quad(sa1, p1c @ p1c.transpose(1, 2)) + 2 * quad(sa1, p1c @ q0c.transpose(1, 2), a2) \
            + quad(a2, q0c @ q0c.transpose(1, 2))
        s2 = torch.rsqrt(var1 / 256 + l1.norm4.eps)
        g4b = l1.norm4.weight
        a_final = s1 * s2
        # X2 = a_final * B2 + (s2 [sa1 A2]) @ [P1c; Q0c] g4b + be4b  (be4b: in kp3, t1_bias): one
        # rank-112 term, so that each product with it is one matmul, not two of rank 56
        coef2, rows2 = s2[..., None] * torch.cat([sa1, a2], -1), torch.cat([p1c, q0c], 1) * g4b

        # ---- final token->image attention
        hs = md.transformer.norm_final_attn(tokens + token_to_image(
            fin, tokens, part("kb3"), part("vb3"), self.kp3, a_final, [(coef2, rows2)], l1.norm4.bias))

        # ---- up-scaling per pixel, channels last: pixel (y, x) -> sub-pixels (ky, kx) -> (ky2, kx2)
        ln, act = md.output_upscaling[1], md.output_upscaling[2]
        z = a_final[..., None] * part("tb") + self.t1_bias + coef2 @ (rows2 @ self.t1)   # (B, N, 4*64)
        z = z.unflatten(-1, (4, -1))                                               # (B, N, 4, 64)
        z = z * torch.rsqrt(z.square().mean(-1, keepdim=True) + ln.eps) * ln.weight + ln.bias   # z centred
        y = act(z) @ self.t2 + self.t2_bias                                         # (B, N, 4, 4*32)
        y = md.output_upscaling[4](y.unflatten(-1, (4, -1)))                       # (B, N, 4, 4, 32)
        hyper = md.output_hypernetworks_mlps[0](hs[:, 1])                            # (B, 32)
        masks = y.flatten(1, 3) @ hyper[..., None]                                  # (B, N*4*4, 1)
        masks = masks.reshape(-1, GRID, GRID, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)
        iou = md.iou_prediction_head(hs[:, 0])[:, :1]
        return masks.reshape(-1, 1, 4 * GRID, 4 * GRID), iou
