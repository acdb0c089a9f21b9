"""Liver and spleen on abdominal CT: segmentation (a model trained here), volumes, attenuation, contrast phase,
steatosis grade and focal lesion candidates.

See :mod:`radpilot.analyses.liver_ct.analysis` for the outputs and codes, :mod:`~.preprocess` for the model's
pre/post-processing, :mod:`~.contrast` for the phase and :mod:`~.quantification` for the measurements.
``ANALYSIS`` is built on first access, so the training scripts can import ``preprocess`` (numpy/scipy only)
without the runtime.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ANALYSIS", "LiverCT"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from radpilot.analyses.liver_ct.analysis import LiverCT  # noqa: PLC0415 - training imports preprocess without pydicom

        if "ANALYSIS" not in globals():
            globals()["ANALYSIS"] = LiverCT()
        globals()["LiverCT"] = LiverCT
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
