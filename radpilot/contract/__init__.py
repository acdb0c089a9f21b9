"""The analysis contract: typed findings, declarations and the Analysis base class.

The lowest layer of RadPilot (numpy only): analyses implement it, and the encoders,
the engine, the validation workbench and the web read it without naming an analysis.
"""

from radpilot.contract.analysis import ACCEPTANCE_FILE, FLAGS_FILE, MODELS_FOLDER, ROUTING_FILE, Analysis
from radpilot.contract.declarations import (
    Classification,
    DetectionSpec,
    FlagRule,
    InputRequirements,
    ModelPrediction,
    OutputSpec,
    StructureSpec,
)
from radpilot.contract.findings import (
    Code,
    Figure,
    Findings,
    LineFinding,
    Measurement,
    NotApplicableError,
    PointFinding,
    QualitativeFinding,
    Segment,
    Segmentation,
)

__all__ = [
    "ACCEPTANCE_FILE",
    "FLAGS_FILE",
    "MODELS_FOLDER",
    "ROUTING_FILE",
    "Analysis",
    "Classification",
    "Code",
    "DetectionSpec",
    "Figure",
    "Findings",
    "FlagRule",
    "InputRequirements",
    "LineFinding",
    "Measurement",
    "ModelPrediction",
    "NotApplicableError",
    "OutputSpec",
    "PointFinding",
    "QualitativeFinding",
    "Segment",
    "Segmentation",
    "StructureSpec",
]
