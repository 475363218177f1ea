"""Shadow traffic: run a challenger next to the champion on real requests, never serving its answer.

>>> from mlops_otel.shadow import Difference, Flip, ShadowConfig
>>> cfg = ShadowConfig(model_type="gnn", challenger_version="v2.2.0",
...                    comparisons=[Difference("anomaly_score", tolerance=0.1), Flip("anomaly_score", 0.5)])
>>> cfg.outputs
('anomaly_score',)
"""

from ._config import Comparison, Difference, Flip, ShadowConfig
from ._report import ComparisonResult, OutputShift, ShadowReport, clopper_pearson, summarize
from ._runner import ShadowCall, ShadowRunner

__all__ = [
    "Comparison",
    "ComparisonResult",
    "Difference",
    "Flip",
    "OutputShift",
    "ShadowCall",
    "ShadowConfig",
    "ShadowReport",
    "ShadowRunner",
    "clopper_pearson",
    "summarize",
]
