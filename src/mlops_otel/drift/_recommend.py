"""Recommendation text for a drift evaluation, and the registry lookup that names the way back."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ._evaluate import Evaluation, Rules
from ._report import DriftLevel
from ._window import CONFIDENCE

__all__ = ["previous_champion", "recommend"]


def _version_of(entry: object) -> str | None:
    """The version an entry names: a string, ``entry.version`` or ``entry["version"]``."""
    if isinstance(entry, str):
        return entry
    value = entry.get("version") if isinstance(entry, Mapping) else getattr(entry, "version", None)
    return value if isinstance(value, str) else None


def _field(entry: object, name: str) -> object:
    return entry.get(name) if isinstance(entry, Mapping) else getattr(entry, name, None)


def previous_champion(registry: object | None, model_type: str, version: str,
                      on_error: Callable[[Exception], None]) -> str | None:
    """The version to roll back to according to *registry*, or ``None`` (errors go to *on_error*)."""
    if registry is None:
        return None
    try:
        get_champion = getattr(registry, "get_champion", None)
        history = getattr(registry, "history", None)
        if get_champion is None and history is None:
            if callable(registry):
                return _version_of(registry(model_type, version))
            return None
        if callable(get_champion):
            current = _version_of(get_champion(model_type))
            if current is not None and current != version:
                return current  # this version is a challenger: the champion is the way back
        if callable(history):
            for change in reversed(list(history(model_type))):
                previous = _field(change, "previous_champion")
                if _version_of(change) == version and isinstance(previous, str) and previous != version:
                    return previous
    except Exception as exc:  # naming a version is a courtesy; the report must still be produced
        on_error(exc)
    return None


def recommend(rules: Rules, ev: Evaluation, *, has_reference: bool, reference_size: int | None,
              previous: str | None, has_registry: bool, scope: str) -> str:
    """What an operator should do about *ev*, in one or two sentences."""
    level = ev.level
    if level is DriftLevel.INSUFFICIENT_DATA:
        if not has_reference:
            return (f"Collecting data: no reference yet (set_reference(), or the first {reference_size} "
                    "production samples become the reference). No action needed.")
        return (f"Collecting data: {ev.production_samples} of the {rules.min_samples} production samples needed "
                "before alerting. No action needed.")
    return _recommend_outputs(rules, ev, previous=previous, has_registry=has_registry, scope=scope) + _inputs(ev)


def _inputs(ev: Evaluation) -> str:
    """The inputs that moved, ranked (empty when none did)."""
    flagged = [f for f in ev.features.values() if f.drifted]
    parts = []
    if flagged:
        shown = ", ".join(
            f"{f.name} ({'TVD' if f.kind == 'categorical' else 'KS'} {f.score:.2f}"
            + (f"; {f.most_changed}" if f.most_changed else "")
            + (f"; {f.unseen} unseen" if f.unseen else "") + ")"
            for f in flagged[:5])
        more = f" and {len(flagged) - 5} more" if len(flagged) > 5 else ""
        parts.append(f" Input features that drifted, largest first: {shown}{more}.")
    if ev.embedding is not None and ev.embedding.drifted:
        parts.append(f" Embeddings drifted (MMD^2 {ev.embedding.mmd2:.4f}, p={ev.embedding.p_value:.3f}).")
    return "".join(parts)


def _recommend_outputs(rules: Rules, ev: Evaluation, *, previous: str | None, has_registry: bool,
                       scope: str) -> str:
    level, outputs, degradation, score = ev.level, ev.outputs, ev.degradation, ev.score
    conf = outputs[CONFIDENCE]
    if ev.performance and degradation is not None:
        if previous is not None:
            target = f"roll back to the previous champion {previous}"
        elif has_registry and scope == "shared":
            target = "roll back to the previous champion (the registry names none for this version)"
        else:
            target = "roll back to the previous champion"
        shifted = [o.name for o in outputs.values() if o.ks_statistic >= rules.threshold]
        where = f"; {', '.join(shifted)} shifted (KS {score:.2f})" if shifted else ""
        return (f"Performance drift: mean confidence fell from {conf.reference_mean:.2f} to "
                f"{conf.production_mean:.2f} (-{degradation.estimate:.3f}, {degradation.level:.0%} interval "
                f"{degradation.low:.3f} to {degradation.high:.3f}){where}. Retrain on recent data or {target}.")
    if level is DriftLevel.ALERT:
        moved = [o for o in outputs.values() if o.ks_statistic >= rules.clear_threshold]
        names = " and ".join(f"{o.name} (KS {o.ks_statistic:.2f})" for o in moved)
        return (f"Output distribution shifted: {names}, alert threshold {rules.threshold:.2f}, while mean "
                f"confidence holds ({conf.reference_mean:.2f} -> {conf.production_mean:.2f}). Check the input "
                "pipeline (feature extraction, upstream schema or units, sensor calibration, traffic mix) "
                "before retraining.")
    if level is DriftLevel.WARNING:
        significant = [o for o in outputs.values() if o.significant]
        if not significant:
            return "Watch: the model outputs hold, but its inputs moved; no rollback needed yet."
        names = " and ".join(f"{o.name} (KS {o.ks_statistic:.2f}, p={o.p_value:.1e})" for o in significant)
        return (f"Watch: {names} shifted significantly but below the {rules.threshold:.2f} alert threshold. "
                "Check recent changes to the input data or traffic mix; no rollback needed yet.")
    return f"No action: outputs match the reference (drift score {score:.2f} < {rules.threshold:.2f})."
