"""Chest radiograph analyses (lung fields, heart, cardiothoracic ratio, nodule candidates).

See :mod:`radpilot.analyses.chest_xray.analysis` for the outputs and their codes,
:mod:`~radpilot.analyses.chest_xray.image` for how a CR/DX image is prepared,
:mod:`~radpilot.analyses.chest_xray.view` for the frontal-view checks,
:mod:`~radpilot.analyses.chest_xray.measurements` for the CTR and areas and
:mod:`~radpilot.analyses.chest_xray.preprocess` for the models' pre/post-processing.

``ANALYSIS`` (discovered by :mod:`radpilot.analyses`) and ``ChestXray`` are loaded on first
access, so that the training scripts can import ``preprocess`` and ``nodules`` (numpy only)
without pulling in pydicom and the rest of the runtime.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ANALYSIS", "ChestXray"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from radpilot.analyses.chest_xray.analysis import ChestXray  # noqa: PLC0415 - training imports preprocess without pydicom

        if "ANALYSIS" not in globals():
            globals()["ANALYSIS"] = ChestXray()
        globals()["ChestXray"] = ChestXray
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
