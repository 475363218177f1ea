"""A/B testing between model versions: pure assignment and evaluation, and the store-backed manager."""

from ._assign import Variant, assign, assign_many, bucket, buckets_many
from ._config import BUCKETS, ABTestConfig, Guardrails, InvalidConfigError, MetricSpec
from ._evaluate import (
    Decision,
    Evaluation,
    MetricBatch,
    MetricEffect,
    SegmentReport,
    StatsBatch,
    evaluate,
    evaluate_batch,
)
from ._manager import ABTest, ABTestManager, ABTestNotFoundError, ABTestState, ABTestStateError, Assignment
from ._progressive import RolloutCheck, RolloutManager
from ._rollout import (
    RolloutSchedule,
    RolloutState,
    RolloutStatus,
    RolloutStep,
    StepDecision,
    StepVerdict,
    judge_step,
    step_config,
    step_stats,
)
from ._variant import VariantStats

__all__ = [
    "BUCKETS",
    "ABTest",
    "ABTestConfig",
    "ABTestManager",
    "ABTestNotFoundError",
    "ABTestState",
    "ABTestStateError",
    "Assignment",
    "Decision",
    "Evaluation",
    "Guardrails",
    "InvalidConfigError",
    "MetricBatch",
    "MetricEffect",
    "MetricSpec",
    "SegmentReport",
    "RolloutCheck",
    "RolloutManager",
    "RolloutSchedule",
    "RolloutState",
    "RolloutStatus",
    "RolloutStep",
    "StepDecision",
    "StepVerdict",
    "StatsBatch",
    "Variant",
    "VariantStats",
    "assign",
    "assign_many",
    "bucket",
    "buckets_many",
    "evaluate",
    "evaluate_batch",
    "judge_step",
    "step_config",
    "step_stats",
]
