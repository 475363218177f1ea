"""Pure evaluation: a reference and a production window in, the drift decision out. No I/O, no state."""

from __future__ import annotations

import attrs
import numpy as np

from ._calibration import effective_size, ks_calibrated
from ._features import EmbeddingDrift, FeatureDrift, embedding_drift, feature_drift, holm
from ._reference import Reference
from ._report import DriftLevel, OutputDrift
from ._stats import ConfidenceInterval, KSWorkspace, confidence_degradation
from ._window import CONFIDENCE, OUTPUTS, WindowSnapshot

__all__ = ["Evaluation", "Rules", "evaluate"]


@attrs.frozen
class Rules:
    """The decision settings of one detector (validated by the detector)."""

    threshold: float
    clear_threshold: float
    min_samples: int
    alpha: float
    #: The alert also needs the KS p-value at the effective sizes below this (Bonferroni over outputs).
    alert_alpha: float
    warning_threshold: float
    confidence_drop: float
    interval_level: float
    #: A feature is flagged when its Holm-adjusted p-value is below *feature_alpha* and its score reaches this.
    feature_effect: float = 0.05
    #: Permutations of the embeddings' MMD test.
    permutations: int = 100
    #: The features' family-wise level per check (Holm). Checks repeat every *check_every* samples over
    #: overlapping windows, so a run of 30 checks at 0.01 flagged a stationary feature in 3-7% of runs.
    feature_alpha: float = 1e-3


@attrs.frozen
class Evaluation:
    """What one evaluation decided, before the recommendation is written."""

    score: float
    alert: bool
    level: DriftLevel
    outputs: dict[str, OutputDrift]
    degradation: ConfidenceInterval | None
    performance: bool
    production_samples: int
    features: dict[str, FeatureDrift] = attrs.field(factory=dict)
    embedding: EmbeddingDrift | None = None


def evaluate(rules: Rules, reference: Reference | None, window: WindowSnapshot, prior_alert: bool,
             workspace: KSWorkspace | None = None) -> Evaluation:
    """Compare *window* with *reference* under *rules*; *prior_alert* gives the hysteresis state."""
    workspace = workspace or KSWorkspace()
    n = window.size
    outputs: dict[str, OutputDrift] = {}
    degradation: ConfidenceInterval | None = None
    performance = False
    score = 0.0
    significant_alert = False
    if reference is not None and n > 0:
        alpha = rules.alpha / len(OUTPUTS)
        for name in OUTPUTS:
            ref = reference.samples[name]
            sample = window.values[name]
            ordered = np.sort(sample)
            statistic = ref.ks_statistic(ordered, workspace)
            cal = ks_calibrated(statistic, effective_size(sample), reference.effective.get(name, ref.size))
            outputs[name] = OutputDrift(
                name, statistic, cal.p_value, ref.psi_sorted(ordered), ref.mean, float(sample.mean()),
                cal.p_value < alpha and statistic >= rules.warning_threshold,
                cal.effective_production, cal.effective_reference, cal.method,
            )
        score = max(out.ks_statistic for out in outputs.values())
        alert_alpha = rules.alert_alpha / len(OUTPUTS)
        significant_alert = any(o.ks_statistic >= rules.threshold and o.p_value < alert_alpha
                                for o in outputs.values())
        conf = outputs[CONFIDENCE]
        degradation = confidence_degradation(reference.samples[CONFIDENCE], window.values[CONFIDENCE],
                                             level=rules.interval_level,
                                             effective_reference=conf.effective_reference_samples,
                                             effective_sample=conf.effective_production_samples)
        performance = degradation.low > 0.0 and degradation.estimate >= rules.confidence_drop
    features: dict[str, FeatureDrift] = {}
    embedding: EmbeddingDrift | None = None
    if reference is not None:
        features = _features(rules, reference, window)
        if reference.embeddings is not None and window.embeddings is not None:
            embedding = embedding_drift(reference.embeddings, window.embeddings, alpha=rules.alpha,
                                        permutations=rules.permutations)
    enough = reference is not None and n >= rules.min_samples
    # On: a distance over the threshold that is significant at the effective sizes. Off: below clear.
    alert = enough and (score >= rules.clear_threshold if prior_alert else significant_alert)
    if not enough:
        level = DriftLevel.INSUFFICIENT_DATA
    elif alert:
        level = DriftLevel.ALERT
    elif (performance or any(out.significant for out in outputs.values())
          or any(f.drifted for f in features.values()) or (embedding is not None and embedding.drifted)):
        level = DriftLevel.WARNING
    else:
        level = DriftLevel.OK
    return Evaluation(score, alert, level, outputs, degradation, performance and enough, n, features, embedding)


def _features(rules: Rules, reference: Reference, window: WindowSnapshot) -> dict[str, FeatureDrift]:
    """Each monitored feature's drift, Holm-corrected over the features, ranked by score (largest first)."""
    raw = [d for name, ref in reference.features.items()
           if (d := feature_drift(name, ref, window.features.get(name, ()))) is not None]
    adjusted = holm([d.p_value for d in raw])
    ranked = sorted(
        (attrs.evolve(d, p_adjusted=p, drifted=p < rules.feature_alpha and d.score >= rules.feature_effect)
         for d, p in zip(raw, adjusted, strict=True)),
        key=lambda d: (not d.drifted, -d.score, d.name))
    return {d.name: d for d in ranked}
