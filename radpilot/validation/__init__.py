"""Clinical validation of RadPilot: the metrics every reported accuracy number comes from.

See :mod:`radpilot.validation.metrics` for definitions, conventions and references.
"""

from radpilot.validation.metrics import *  # noqa: F401,F403
from radpilot.validation.metrics import __all__ as _metrics_all

__all__ = list(_metrics_all)
