"""A 2D image: encoded once for its boxes, small boxes decoded against zoom canvases (qmedsam.image.zoom)."""
from __future__ import annotations

import numpy as np

from qmedsam.image.masks import confidence_map, paste_mask
from qmedsam.image.preprocess import MODEL_SIZE, Geometry, boxes_to_canvas, boxes_to_model, image_to_tensor
from qmedsam.image.zoom import zoom_canvases

CANVAS = Geometry(MODEL_SIZE, MODEL_SIZE)       # a zoom canvas is filled edge to edge


def segment_2d(run) -> np.ndarray:
    """The image encoded once for its plain boxes; each canvas of small boxes encoded once.  After
    the case's last encoder pass and last per-image decoder step their scratch memory is freed
    (lower peak RSS: the organisers run one case per process)."""
    case, model, ledger, predictor = run.case, run.model, run.ledger, run.predictor
    seg = np.zeros(case.label_shape, dtype=case.label_dtype)
    if len(case.boxes) == 0:
        return seg
    best = confidence_map(seg.shape)
    canvases, plain = zoom_canvases(*seg.shape, case.boxes, run.opts.zoom_crops)
    ledger.planned = int(len(plain) > 0) + len(canvases)
    if len(plain):
        tensor, geo = image_to_tensor(case.image)
        emb, seconds = model.encode(tensor, run.encoder)
        ledger.count_pass(run.encoder, seconds)
        ledger.note_encoded(0)
        if not canvases:
            model.release_encoder(run.encoder)
        predictor.set_embedding(emb, geo, last=not canvases)
        predictor.paste(boxes_to_model(case.boxes[plain], geo), plain + 1, seg, best)
    for k, emb in run.canvases(canvases):
        last = k == len(canvases) - 1
        if last:
            model.release_encoder(run.encoder)
        _paste_canvas(predictor.set_embedding(emb, CANVAS, last), canvases[k], case.boxes, seg, best)
    return seg


def _paste_canvas(predictor, canvas, boxes, seg, best) -> None:
    """Decode the boxes of every tile of one canvas; each mask is cut to its tile and pasted into
    the tile's window of ``seg``."""
    owners = [(p, i) for p in canvas for i in p.tile.boxes]
    prompts = np.concatenate([boxes_to_canvas(boxes[list(p.tile.boxes)], p) for p in canvas])
    mb = predictor.max_boxes
    for s in range(0, len(prompts), mb):
        logits, _ = predictor.decode(prompts[s:s + mb])
        for k in range(len(logits)):
            p, i = owners[s + k]
            t = p.tile
            h, w = t.size
            window = (slice(t.y0, t.y1), slice(t.x0, t.x1))
            paste_mask(seg[window], logits[k, 0][p.y:p.y + h, p.x:p.x + w], int(i) + 1, best[window])
