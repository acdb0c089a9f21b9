"""Checkpoints in, ONNX out: shared by the export and evaluation scripts of both chest radiograph models.

``load_checkpoint`` rebuilds a model from a ``last.pt`` written by ``loop.train_epochs``;
``onnx_bytes`` exports it the one way both shipped models were exported (opset 17, input
"image" (N, 1, 256, 256) with a dynamic batch, TorchScript exporter, constant folding) and
checks the graph; ``onnx_session`` runs such bytes with onnxruntime on the CPU.  Each export
script compares onnxruntime with torch in its own way (its outputs differ).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from radpilot.analyses.chest_xray.preprocess import MODEL_SIZE  # noqa: E402

OPSET = 17
INPUT_NAME = "image"


def load_checkpoint(path: Path, build_model: Callable[[dict], torch.nn.Module]) -> tuple[torch.nn.Module, dict]:
    """The model in ``path`` (eval mode), built by ``build_model(config)``, and its training config."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return model, checkpoint["config"]


def onnx_bytes(model: torch.nn.Module, output_names: Sequence[str]) -> bytes:
    """``model`` (put in eval mode) as ONNX bytes that pass ``onnx.checker``."""
    import onnx

    model = model.eval()
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, MODEL_SIZE, MODEL_SIZE),),
        buffer,
        dynamo=False,
        opset_version=OPSET,
        input_names=[INPUT_NAME],
        output_names=list(output_names),
        dynamic_axes={name: {0: "N"} for name in (INPUT_NAME, *output_names)},
        do_constant_folding=True,
    )
    content = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(content))
    return content


def onnx_session(content: bytes, threads: int = 1):  # noqa: ANN201 - onnxruntime.InferenceSession, imported lazily
    """An onnxruntime CPU session on ``content`` with ``threads`` intra-op threads (1: the one-core timing)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(content, sess_options=options, providers=["CPUExecutionProvider"])
