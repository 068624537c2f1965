"""The successors' volumes: a RECIST case, and an interactive round (its first from boxes or a
click, a later one from ``prev_pred`` and the newest clicks)."""
from __future__ import annotations

import numpy as np

from qmedsam.cases.interactive import click_box
from qmedsam.cases.recist import lesion_box
from qmedsam.image.preprocess import Geometry, boxes_to_model
from qmedsam.segment.clicks import click_round
from qmedsam.segment.from_slice import Track, follow


def _track(label: int, z: int, box, lo: int, hi: int, geo: Geometry, known_range: bool = False) -> Track:
    """A track from pixel ``box`` on slice ``z``; ``known_range``: the object is known to span [lo, hi]
    (an interactive round-1 box), so it is followed over all of it whatever the stop rule says."""
    return Track(label, z, boxes_to_model(np.asarray(box)[None], geo)[0, 0], lo, hi,
                 lo if known_range else None, hi if known_range else None)


def segment_recist(run) -> np.ndarray:
    """Each lesion followed both ways from its line's slice, within its reach (the case's boxes)."""
    case = run.case
    seg = np.zeros(case.label_shape, np.uint8)
    geo = Geometry(*case.image.shape[1:])
    tracks = [_track(lesion.label, lesion.z, lesion_box(lesion, case.image.shape), int(reach[2]),
                     int(reach[5]), geo) for lesion, reach in zip(case.prompts, case.boxes)]
    follow(run, tracks, seg)
    return seg


def segment_interactive(run) -> np.ndarray:
    """Round 1: each class from its middle-slice box within its z range (or from its first
    foreground click); later rounds: ``prev_pred`` edited by the newest clicks."""
    case, round_ = run.case, run.case.prompts
    if round_.prev is not None:
        seg = round_.prev.copy()
        run.ledger.notes = click_round(run, seg, round_)
        return seg
    seg = np.zeros(case.label_shape, np.uint8)
    geo = Geometry(*case.image.shape[1:])
    tracks = []
    for k in range(round_.classes):
        b = round_.boxes[k]
        if b is not None:
            tracks.append(_track(k + 1, b.z, b.box, b.lo, b.hi, geo, known_range=b.known))
        elif round_.clicks[k]["fg"]:
            zyx = round_.clicks[k]["fg"][0]
            tracks.append(_track(k + 1, zyx[0], click_box(zyx, case.image.shape), 0,
                                 case.image.shape[0] - 1, geo))
    follow(run, tracks, seg)
    return seg
