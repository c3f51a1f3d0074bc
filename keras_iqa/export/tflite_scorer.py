"""Running a keras-iqa .tflite with the `ai-edge-litert` interpreter: `interpreter` and `TFLiteScorer`.

Shared by the conversion (`export.tflite`, which re-exports both), the parity check (`export.parity`) and `keras-iqa score`
on a .tflite; it imports neither of them, so conversion and parity do not import each other.
"""

from __future__ import annotations

import numpy as np


def interpreter(model, num_threads: int = 2):
    """An allocated `ai_edge_litert` Interpreter for a path or flatbuffer bytes.

    The default XNNPACK delegate is used when it accepts the graph; when it fails to prepare (seen with some int8
    quantization scales) the builtin reference kernels run instead and `interp.xnnpack` is False.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    src = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    try:
        interp = Interpreter(**src, num_threads=num_threads)
        interp.allocate_tensors()
        interp.xnnpack = True
    except RuntimeError as e:
        if "XNNPACK" not in str(e) and "Delegate" not in str(e):
            raise
        interp = Interpreter(**src, num_threads=num_threads,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
        interp.xnnpack = False
    return interp


class TFLiteScorer:
    """Runs a keras-iqa .tflite on crops one at a time (its input contract is batch 1); a whole-photo model
    (`is_photo`) on photos one at a time (`score_photos`)."""

    def __init__(self, model, num_threads: int = 2):
        self.interp = interpreter(model, num_threads)
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.is_photo = self.inp["dtype"] == np.uint8
        self.photo_size = tuple(int(v) for v in self.inp["shape"][1:3]) if self.is_photo else None
        self.crop_size = None if self.is_photo else int(self.inp["shape"][1])

    def score_photos(self, photos) -> np.ndarray:
        """Whole-photo model: one invoke per uint8 [H, W, 3] photo of the export size."""
        out = np.empty(len(photos), np.float32)
        for i, photo in enumerate(photos):
            photo = np.asarray(photo)
            if photo.shape != (*self.photo_size, 3) or photo.dtype != np.uint8:
                raise ValueError(f"photo {i}: this whole-photo model takes uint8 [{self.photo_size[0]}, {self.photo_size[1]}, 3], "
                                 f"got {photo.dtype} {photo.shape}")
            self.interp.set_tensor(self.inp["index"], photo[None])
            self.interp.invoke()
            out[i] = self.interp.get_tensor(self.out["index"]).reshape(-1)[0]
        return out

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        if self.is_photo:
            raise ValueError("this .tflite scores whole photos (input uint8 [1, H, W, 3]); use score_photos")
        crops = np.asarray(crops, np.float32)
        if crops.ndim != 4 or crops.shape[1:] != (self.crop_size, self.crop_size, 3):
            raise ValueError(f"crops must be [N, {self.crop_size}, {self.crop_size}, 3], got {crops.shape}")
        out = np.empty(len(crops), np.float32)
        for i in range(len(crops)):  # batch-1 contract: one invoke per crop
            self.interp.set_tensor(self.inp["index"], crops[i:i + 1])
            self.interp.invoke()
            out[i] = self.interp.get_tensor(self.out["index"]).reshape(-1)[0]
        return out
