"""Checkpoint -> ONNX for the short-axis model (input ``image`` (N, C, H, W) with C 1, or 2 for a model that also sees
the slice at end-diastole; output ``logits`` (N, 4, H, W); H and W dynamic)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cmr_model import build_model  # noqa: E402

from radpilot.analyses.cardiac_mr_function.preprocess import TILE  # noqa: E402

OPSET = 17


def load(path: Path) -> tuple[torch.nn.Module, dict]:
    """The checkpoint's model with the class weighting of its cross-entropy undone (see ``undo_class_weights``)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    undo_class_weights(model, checkpoint["config"].get("ce_class_weights"))
    return model.eval(), checkpoint["config"]


def undo_class_weights(model: torch.nn.Module, weights: list[float] | None) -> None:
    """Subtract log(w_k) from the output bias of class k.

    Cross-entropy with class weights w_k is minimised by logits shifted by log(w_k) from the
    unweighted optimum (a prior shift), so a class weighted 3x is labelled wherever its
    probability exceeds about a quarter: the RV cavity, weighted 3x so that training predicts it
    at all, came out too large at every slice, most at end-systole where it is thin (RV EF low by
    about 20 points). Subtracting log(w_k) restores the unweighted decision rule in the exported model.
    """
    if not weights:
        return
    with torch.no_grad():
        model.head.bias -= torch.log(torch.tensor(weights, dtype=model.head.bias.dtype))


def onnx_bytes(model: torch.nn.Module) -> bytes:
    import onnx  # noqa: PLC0415 - export-only dependency

    buffer = io.BytesIO()
    torch.onnx.export(
        model.eval(),
        (torch.zeros(1, getattr(model, "in_channels", 1), TILE, TILE),),
        buffer,
        dynamo=False,
        opset_version=OPSET,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N", 2: "H", 3: "W"}},
        do_constant_folding=True,
    )
    content = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(content))
    return content


def session(content: bytes, threads: int = 1):  # noqa: ANN201 - onnxruntime.InferenceSession
    import onnxruntime  # noqa: PLC0415

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(content, sess_options=options, providers=["CPUExecutionProvider"])
