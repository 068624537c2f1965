"""SAM's whole prompt interface through the ``decoder_prompts`` graph (the API's points and mask input).

The command line never needs it (boxes go through the factored decoder), so it is compiled the
first time a prompt with points or a mask arrives, and the image leaves its files out.
"""
from __future__ import annotations

import numpy as np

from qmedsam.model.checks import check_names
from qmedsam.model.folder import EngineError
from qmedsam.model.spec import DECODER_PROMPTS
from qmedsam.model.windows import GRID

LOW_RES = 4 * GRID          # the low-res logits' side (256), also the mask input's


class PromptDecoder:
    def __init__(self, model):
        if not all((model.folder / f).is_file() for f in DECODER_PROMPTS.files):
            raise EngineError(f"{model.folder} has no {DECODER_PROMPTS.name} graph (points and mask prompts): "
                              "run `make export-prompts`")
        compiled = model.compile_graph(DECODER_PROMPTS)
        check_names(compiled, DECODER_PROMPTS)
        self._request = compiled.create_infer_request()

    def decode(self, embedding: np.ndarray, coords: np.ndarray, labels: np.ndarray,
               mask_input: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """(low-res logits (256, 256), IoU) of one prompt: points (N, 2) in 256-space with SAM's labels
        (N,) (1 foreground, 0 background, 2/3 box corners, -1 padding) and an optional low-res mask of
        logits (256, 256)."""
        has = mask_input is not None
        mask = (np.ascontiguousarray(mask_input, np.float32).reshape(1, 1, LOW_RES, LOW_RES) if has
                else np.zeros((1, 1, LOW_RES, LOW_RES), np.float32))
        values = (embedding, np.ascontiguousarray(coords, np.float32).reshape(1, -1, 2),
                  np.ascontiguousarray(labels, np.float32).reshape(1, -1), mask, np.array([float(has)], np.float32))
        out = self._request.infer(dict(zip(DECODER_PROMPTS.inputs, values)))
        return out[DECODER_PROMPTS.outputs[0]][0, 0].copy(), float(out[DECODER_PROMPTS.outputs[1]].reshape(-1)[0])
