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

The per-box graph takes, beside the boxes, each box's window of grid cells (``cells``, (B, H, W))
and does the up-scaling and mask product there only: a small box's mask lives in a small window
(``qmedsam/model/windows.py`` picks them); everything before it needs all 4,096 image tokens.

The per-image graph maps the embedding to the state tensors :data:`STATE_OUTPUTS`, each
``(1, 4096, width)``; the per-box graph takes them with the boxes.  In
float the result equals :class:`~training.model.mask_decoder.MaskDecoder` up to
rounding (tests).  Per box this is about 0.47 GMAC instead of 1.75; the per-image graph
costs about as much as one box of the plain decoder.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from qmedsam.model.spec import DECODER_STATE

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


@dataclass(frozen=True)
class DecoderParts:
    """The pieces of LiteMedSAM's mask decoder the factored graphs compute with, by role: the one
    place that knows the decoder's attribute layout (:func:`decoder_parts`)."""

    block1: nn.Module               # the two-way transformer's blocks
    block2: nn.Module
    final_attn: nn.Module           # the last token->image attention and its norm
    final_norm: nn.Module
    upscale1: nn.Module             # ConvTranspose2d, LayerNorm2d, GELU, ConvTranspose2d, GELU
    upscale_norm: nn.Module
    upscale_act: nn.Module
    upscale2: nn.Module
    upscale_act2: nn.Module
    hypernetwork: nn.Module         # the single-mask output's MLP
    iou_head: nn.Module
    iou_token: nn.Module            # the output tokens' embeddings
    mask_tokens: nn.Module


def decoder_parts(model) -> DecoderParts:
    md = model.mask_decoder
    up = md.output_upscaling
    block1, block2 = md.transformer.layers
    return DecoderParts(block1, block2, md.transformer.final_attn_token_to_image, md.transformer.norm_final_attn,
                        up[0], up[1], up[2], up[3], up[4], md.output_hypernetworks_mlps[0], md.iou_prediction_head,
                        md.iou_token, md.mask_tokens)


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


def _centred_upscale(convt: nn.Module) -> torch.Tensor:
    """The first transposed convolution's per-pixel map, centred per sub-pixel's channels."""
    return _centred_groups(_upscale_matrix(convt), convt.out_channels)


class DecoderImageState(nn.Module):
    """Image embedding (1, 256, 64, 64) -> the per-image decoder state (:data:`STATE_OUTPUTS`):
    one matmul per wide part, and the 1-wide parts with two squared norms as ``cols``."""

    def __init__(self, model):
        super().__init__()
        pe, d = model.prompt_encoder, decoder_parts(model)
        l0, l1, fin = d.block1, d.block2, d.final_attn
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
                "b2": [fin.k_proj.weight.T, fin.v_proj.weight.T, _centred_upscale(d.upscale1)],
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


@dataclass
class ImageSide:
    """A block's image tokens for a batch of boxes, never materialised: ``scale * B + sum(coef @ rows)``
    with ``B`` a per-image matrix (its products are in the state), ``scale`` (B, N) per box and
    image token (None: 1) and ``low`` the low-rank per-box terms, (coef (B, N, r), rows (B, r, 256))."""

    scale: torch.Tensor | None = None
    low: list = field(default_factory=list)


def token_to_image(attn, tokens, tpe, keys, values, key_shift=None, side: ImageSide = ImageSide(),
                   value_shift=None) -> torch.Tensor:
    """Token->image attention against image keys ``scale * keys + key_shift + L Wk^T`` and values
    ``scale * values + (L + value_shift) Wv^T + bias`` (``L``: the side's low-rank terms), without
    forming them per box: scores (B, 56, N) are taken term by term, the softmax over the 4,096 keys."""
    q = _block_diag(_heads(attn.q_proj(tokens + tpe))).transpose(1, 2)          # (B, 56, 128)
    scores = q @ keys.T                                                           # (B, 56, N)
    if side.scale is not None:
        scores = side.scale[:, None, :] * scores
    if key_shift is not None:
        scores = scores + q @ key_shift.T
    for coef, rows in side.low:
        scores = scores + (q @ (rows @ attn.k_proj.weight.T).transpose(1, 2)) @ coef.transpose(1, 2)
    probs = (scores * 0.25).softmax(dim=-1)
    out = (probs if side.scale is None else probs * side.scale[:, None, :]) @ values   # (B, 56, 128)
    for coef, rows in side.low:
        out = out + (probs @ coef) @ (rows @ attn.v_proj.weight.T)
    bias = attn.v_proj.bias if value_shift is None else attn.v_proj(value_shift)
    return attn.out_proj(_diag_blocks(out) + bias)                                # probabilities sum to 1


def image_to_token(attn, tokens, tpe, groups, queries, query_shift=None, side: ImageSide = ImageSide()):
    """Image->token attention: per image token, a softmax over each head's 7 tokens, with image
    queries ``scale * queries + query_shift + L Wq^T``.  Returns the probabilities (B, N, 56), the
    rows they weight (B, 56, 256: ``out_proj`` of each token value, without its bias) and the
    block-diagonal token values (B, 128, 56)."""
    k = _block_diag(_heads(attn.k_proj(tokens + tpe)))                          # (B, 128, 56)
    scores = queries @ k                                                          # (B, N, 56)
    if side.scale is not None:
        scores = side.scale[..., None] * scores
    if query_shift is not None:
        scores = scores + query_shift @ k
    for coef, rows in side.low:
        scores = scores + coef @ ((rows @ attn.q_proj.weight.T) @ k)
    probs = _grouped_softmax(scores * 0.25, groups)
    values = _heads(attn.v_proj(tokens))
    w_out = attn.out_proj.weight.unflatten(1, (HEADS, -1))                      # (256, H, 16)
    return probs, torch.einsum("bthd,chd->bhtc", values, w_out).flatten(1, 2), _block_diag(values)


def _centred(x):
    return x - x.mean(-1, keepdim=True)


def _quad(a, gram, b=None):
    """Per token ``a G b^T`` for (B, N, k) coefficients and a (B, k, k) Gram block (``b``: ``a``)."""
    return ((a @ gram) * (a if b is None else b)).sum(-1)


class DecoderBoxes(nn.Module):
    """(per-image state tensors, boxes (B, 1, 4)) -> low-res logits (B, 1, 256, 256)
    and the IoU prediction of the single-mask output (B, 1).

    Laid out for a CPU: every large product is a plain (batched) matmul with a per-image
    (4096, 128) operand or a per-box (4096, r) one; head-wise products use block-diagonal
    token matrices (:func:`_block_diag`), and the up-scaling runs per pixel, channels last,
    with the second transposed convolution as a matmul too.

    Each image->token attention adds, per image token, ``A @ rows`` with each head's
    probabilities ``A`` summing to 1 over its 7 tokens, so a constant vector ``v`` folds into the
    rows as ``v / H``; every LayerNorm of the image side then leaves it as an :class:`ImageSide`
    whose mean and variance per token come from the state's dot products and small Gram blocks."""

    def __init__(self, model):
        super().__init__()
        self.md = model.mask_decoder          # registered, so that its weights are the graph's
        self.pe = model.prompt_encoder
        d = decoder_parts(model)
        self.d = d
        with torch.no_grad():
            pos = self.pe.dense_pe().flatten(2).transpose(1, 2)[0]
            shift1, shift2 = d.block1.norm4.bias, d.block2.norm4.bias
            # Constant parts of the later blocks' image keys/queries: the positional encoding and
            # the preceding LayerNorm's shift (the same for every image and box).
            self.register_buffer("kp2", F.linear(pos + shift1, *_w(d.block2.cross_attn_token_to_image.k_proj)).clone())
            self.register_buffer("qp2", F.linear(pos + shift1, *_w(d.block2.cross_attn_image_to_token.q_proj)).clone())
            self.register_buffer("kp3", F.linear(pos + shift2, *_w(d.final_attn.k_proj)).clone())
            # transposed convolutions as per-pixel maps with columns (ky, kx, channel)
            # centred per sub-pixel (see _centred_groups): the up-scaling LayerNorm is an RMS norm
            self.register_buffer("t1", _centred_upscale(d.upscale1).clone())
            t1_bias = d.upscale1.bias.repeat(4) + shift2 @ _upscale_matrix(d.upscale1)
            self.register_buffer("t1_bias", _centred_groups(t1_bias, d.upscale1.out_channels).clone())
            self.register_buffer("t2", _upscale_matrix(d.upscale2).clone())
            self.register_buffer("t2_bias", d.upscale2.bias.repeat(4).clone())
            self.register_buffer("groups", torch.block_diag(*[torch.ones(TOKENS, TOKENS)] * HEADS))

    def forward(self, *inputs: torch.Tensor):
        """``inputs``: the per-image state (:data:`STATE_OUTPUTS`, as DecoderImageState returns
        it), the boxes, then each box's window (B, H, W) of 64-grid cell indices (``y * 64 + x``;
        :func:`window_cells`): the per-pixel work is done there only, and the logits are the
        window's (B, 1, 4H, 4W); the whole grid gives the full (B, 1, 256, 256) logits."""
        state = dict(zip(STATE_OUTPUTS, inputs[:-2]))

        def part(name):
            if name in state:
                return state[name][0]
            i = COLUMNS.index(name)
            return state["cols"][0][:, i:i + 1]
        tokens = tpe = self._prompt_tokens(inputs[-2])
        tokens, side1, first = self._block1(tokens, tpe, part)
        tokens, side2 = self._block2(tokens, tpe, part, side1, first)
        hs = self.d.final_norm(tokens + token_to_image(self.d.final_attn, tokens, tpe, part("kb3"), part("vb3"),
                                                       self.kp3, side2, self.d.block2.norm4.bias))
        return self._masks(hs, part, side2, inputs[-1])

    def _prompt_tokens(self, boxes):
        """The output tokens and the boxes' two corner embeddings (B, 7, 256); they are also the
        tokens' positional term throughout."""
        sparse, _ = self.pe(boxes)
        out_tokens = torch.cat([self.d.iou_token.weight, self.d.mask_tokens.weight], dim=0)
        return torch.cat([out_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)

    def _block1(self, tokens, tpe, part):
        """Block 1, whose image side is the image itself (per-image keys k1, values v1, queries q1).
        Returns the tokens, the image side after its LayerNorm (``X1 = s1 * B1 + (s1 A1) @ P1 + shift``,
        ``B1 = X0c * gain`` per image, the shift left to the constants), and what block 2's variance
        needs of block 1: (A1, its rows U1, token values, centred rows P0)."""
        b = self.d.block1
        tokens = b.norm1(b.self_attn(tokens, tokens, tokens))
        tokens = b.norm2(tokens + token_to_image(b.cross_attn_token_to_image, tokens, tpe, part("k1"), part("v1")))
        tokens = b.norm3(tokens + b.mlp(tokens))
        i2t = b.cross_attn_image_to_token
        probs, rows, values = image_to_token(i2t, tokens, tpe, self.groups, part("q1"))
        centred_rows = _centred(rows) + _centred(i2t.out_proj.bias) / HEADS    # X0 + A1 U1 + bo1, centred: X0c + A1 P0
        variance = part("n0")[:, 0] + 2 * (probs * (part("g0") @ values + part("g0b") / HEADS)).sum(-1) \
            + _quad(probs, centred_rows @ centred_rows.transpose(1, 2))
        inv_std = torch.rsqrt(variance / 256 + b.norm4.eps)                               # (B, N)
        side = ImageSide(inv_std, [(inv_std[..., None] * probs, centred_rows * b.norm4.weight)])
        return tokens, side, (probs, rows, values)

    def _block2(self, tokens, tpe, part, side1, first):
        """Block 2 on block 1's image side (its LayerNorm shift is in the constants kp2 / qp2 and in
        the value shift).  Returns the tokens and the image side after block 2's LayerNorm:
        ``X2 = scale * B2 + coef @ rows + shift`` with one rank-112 term (block 1's and block 2's
        together), so that each product with it is one matmul, not two of rank 56."""
        b, shift = self.d.block2, self.d.block1.norm4.bias
        probs1, rows1, values1 = first
        inv_std1 = side1.scale
        coef1, rows1_scaled = side1.low[0]
        t = tokens + tpe
        tokens = b.norm1(tokens + b.self_attn(t, t, tokens))
        tokens = b.norm2(tokens + token_to_image(b.cross_attn_token_to_image, tokens, tpe, part("kb2"), part("vb2"),
                                                 self.kp2, side1, shift))
        tokens = b.norm3(tokens + b.mlp(tokens))
        i2t = b.cross_attn_image_to_token
        probs2, rows2, values2 = image_to_token(i2t, tokens, tpe, self.groups, part("qb2"), self.qp2, side1)
        # Y2 = X1 + A2 U2 + bo2 = s1 B1 + coef1 P1 + A2 Q0,  Q0 = U2 + (shift + bo2) / H;
        # centred: s1 B1c + coef1 P1c + A2 Q0c, with B1c . P1 and B1c . Q0 from per-image products
        p1c, q0c = _centred(rows1_scaled), _centred(rows2 + (shift + i2t.out_proj.bias) / HEADS)
        b_p1 = part("h1") @ values1 - rows1.mean(-1)[:, None, :] * part("q1s") \
            + (part("e1") - self.d.block1.cross_attn_image_to_token.out_proj.bias.mean() * part("q1s")) / HEADS
        b_q0 = part("w2") @ values2 + (part("f1") + part("g1")) / HEADS
        variance = inv_std1.square() * part("n1")[:, 0] \
            + 2 * inv_std1 * ((coef1 * b_p1).sum(-1) + (probs2 * b_q0).sum(-1)) \
            + _quad(coef1, p1c @ p1c.transpose(1, 2)) + 2 * _quad(coef1, p1c @ q0c.transpose(1, 2), probs2) \
            + _quad(probs2, q0c @ q0c.transpose(1, 2))
        inv_std2 = torch.rsqrt(variance / 256 + b.norm4.eps)
        scale = inv_std1 * inv_std2
        coef = inv_std2[..., None] * torch.cat([coef1, probs2], -1)
        rows = torch.cat([p1c, q0c], 1) * b.norm4.weight
        return tokens, ImageSide(scale, [(coef, rows)])

    def _masks(self, hs, part, side, cells):
        """Up-scaling per pixel, channels last (pixel (y, x) -> sub-pixels (ky, kx) -> (ky2, kx2)),
        the single-mask hypernetwork's product, and the IoU prediction; the pixels are the grid
        cells of each box's window (``cells``, (B, H, W)), taken out of the image side first."""
        d = self.d
        (coef, rows), = side.low
        ln = d.upscale_norm
        flat = cells.flatten(1)                                                        # (B, M)
        scale = side.scale.gather(1, flat)                                             # (B, M)
        coef = coef.gather(1, flat[..., None].expand(-1, -1, coef.shape[-1]))          # (B, M, r)
        z = scale[..., None] * part("tb")[flat] + self.t1_bias + coef @ (rows @ self.t1)   # (B, M, 4*64)
        z = z.unflatten(-1, (4, -1))                                                   # (B, M, 4, 64)
        z = z * torch.rsqrt(z.square().mean(-1, keepdim=True) + ln.eps) * ln.weight + ln.bias   # z centred
        y = d.upscale_act(z) @ self.t2 + self.t2_bias                                   # (B, M, 4, 4*32)
        y = d.upscale_act2(y.unflatten(-1, (4, -1)))                                   # (B, M, 4, 4, 32)
        hyper = d.hypernetwork(hs[:, 1])                                                 # (B, 32)
        masks = y.flatten(1, 3) @ hyper[..., None]                                      # (B, M*4*4, 1)
        h, w = cells.shape[1], cells.shape[2]
        masks = masks.reshape(-1, h, w, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)
        iou = d.iou_head(hs[:, 0])[:, :1]
        return masks.reshape(-1, 1, 4 * h, 4 * w), iou


def window_cells(origins: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 2) top-left cells (y, x) -> (B, size, size) cell indices of each box's square window."""
    r = torch.arange(size)
    return ((origins[:, :1, None] + r[None, :, None]) * GRID + origins[:, 1:, None] + r[None, None, :]).long()


def full_cells(boxes: int) -> torch.Tensor:
    """Every cell of the grid for each of ``boxes`` boxes: the full logits."""
    return torch.arange(GRID * GRID).reshape(1, GRID, GRID).expand(boxes, -1, -1)
