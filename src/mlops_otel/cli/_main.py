"""``mlops-otel``: run A/B tests, the model registry and drift checks from a shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import attrs

from ._backends import (
    EXIT_ALERT,
    EXIT_OK,
    EXIT_USAGE,
    Backend,
    CliError,
    HttpBackend,
    StoreBackend,
)
from ._output import Cell, Printer, Style, color_wanted, fmt_float, fmt_pct, fmt_time, json_lines

__all__ = ["build_parser", "main"]

ENV_STORE_URL = "MLOPS_OTEL_STORE_URL"
ENV_STORE_PREFIX = "MLOPS_OTEL_STORE_PREFIX"
ENV_API_URL = "MLOPS_OTEL_API_URL"
ENV_TOKEN = "MLOPS_OTEL_MANAGEMENT_TOKEN"

_STATE_STYLES: dict[str, Style] = {"active": "yellow", "finalizing": "yellow", "promoted": "green",
                                   "rolled_back": "red", "aborted": "dim"}
_DECISION_STYLES: dict[str, Style] = {"promote": "green", "rollback": "red", "halt": "red", "continue": "yellow",
                                      "advance": "green", "handover": "green", "hold": "yellow"}
_VERDICT_STYLES: dict[str, Style] = {"better": "green", "worse": "red", "no data": "dim"}
_ROLE_STYLES: dict[str, Style] = {"champion": "green", "challenger": "yellow", "archived": "dim"}

EPILOG = """\
backend: --store URL runs the command in this process on the state store
(memory://, redis://host:6379/0, rediss://..., redis+cluster://host:7000);
--api URL sends it to a running service's management API
(e.g. http://127.0.0.1:8000/mlops) with --token for writes.

exit codes: 0 ok; 1 refused (unknown test or version, conflict, invalid
value); 2 usage error; 3 drift check --fail-on-alert found an alert;
4 store or API unreachable, or token refused.
"""


# --------------------------------------------------------------------- parser
def _default(name: str) -> str:
    """The SDK's default of an :class:`~mlops_otel.ABTestConfig` field, for --help (one source of truth)."""
    from ..ab import ABTestConfig

    return f"{getattr(attrs.fields(ABTestConfig), name).default:g}"


def _guardrail(name: str) -> str:
    from ..ab import Guardrails

    return f"{getattr(attrs.fields(Guardrails), name).default:g}"


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options accepted before and after the command (``top``: with real defaults)."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("backend and output")
    group.add_argument("--store", metavar="URL", default=default(None),
                       help=f"state store URL (env {ENV_STORE_URL})")
    group.add_argument("--store-prefix", metavar="PREFIX", default=default(None),
                       help=f"key prefix of the deployment (env {ENV_STORE_PREFIX}; default mlops)")
    group.add_argument("--api", metavar="URL", default=default(None),
                       help=f"management API base URL of a running service (env {ENV_API_URL})")
    group.add_argument("--token", metavar="TOKEN", default=default(None),
                       help=f"management token for writes through --api (env {ENV_TOKEN})")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print the JSON views instead of tables")
    group.add_argument("--color", choices=("auto", "always", "never"), default=default("auto"),
                       help="colour output (auto: on a terminal unless NO_COLOR is set)")


def build_parser() -> argparse.ArgumentParser:
    """The ``mlops-otel`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="mlops-otel", description="Manage A/B tests, the model registry and drift checks.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"mlops-otel {__version__}")
    _global_options(parser, top=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, top=False)
    commands = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    def command(sub: Any, name: str, help_text: str, handler: Callable[..., int]) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text,
                                                    parents=[common])
        p.set_defaults(handler=handler)
        return p

    ab = commands.add_parser("ab", help="A/B tests between model versions", description="A/B tests.")
    ab_sub = ab.add_subparsers(dest="command", metavar="ACTION", required=True)
    start = command(ab_sub, "start", "start an A/B test", _ab_start)
    start.add_argument("--name", required=True, help="unique test name")
    start.add_argument("--model-type", required=True, help="model type, e.g. gnn")
    start.add_argument("--control", required=True, metavar="VERSION", help="control version (registered)")
    start.add_argument("--treatment", required=True, metavar="VERSION", help="treatment version (registered)")
    start.add_argument("--traffic-pct", type=float, default=None, metavar="PCT",
                       help=f"percent of users in treatment (default {_default('treatment_traffic_pct')})")
    start.add_argument("--duration-days", type=float, default=None, metavar="DAYS",
                       help=f"planned duration (default {_default('duration_days')})")
    start.add_argument("--min-samples", type=int, default=None, metavar="N",
                       help=f"results per variant before deciding (default {_default('min_samples')})")
    start.add_argument("--alpha", type=float, default=None,
                       help=f"error probability over the test (default {_default('alpha')})")
    start.add_argument("--planned-samples", type=int, default=None, metavar="N",
                       help=f"total results the test is planned for (default {_default('planned_samples')})")
    start.add_argument("--max-error-rate-increase", type=float, default=None, metavar="X",
                       help=f"guardrail: tolerated absolute error-rate increase "
                            f"(default {_guardrail('max_error_rate_increase')})")
    start.add_argument("--max-latency-increase-pct", type=float, default=None, metavar="PCT",
                       help=f"guardrail: tolerated latency increase in percent "
                            f"(default {_guardrail('max_latency_increase_pct')})")
    start.add_argument("--max-confidence-decrease", type=float, default=None, metavar="X",
                       help=f"guardrail: tolerated absolute confidence decrease "
                            f"(default {_guardrail('max_confidence_decrease')})")
    start.add_argument("--auto-finalize", action="store_true", default=None,
                       help="let evaluations promote, roll back or halt on their own")
    start.add_argument("--salt", default=None, help="assignment hash salt (default: the test name)")
    command(ab_sub, "list", "list A/B tests", _ab_list)
    evaluate = command(ab_sub, "evaluate", "evaluate an A/B test now", _ab_evaluate)
    evaluate.add_argument("name", help="test name")
    evaluate.add_argument("--finalize", action="store_true",
                          help="finalize the test when the decision is promote or rollback")
    finalize = command(ab_sub, "finalize", "promote the treatment or roll it back", _ab_finalize)
    finalize.add_argument("name", help="test name")
    finalize.add_argument("action", choices=("promote", "rollback"))
    finalize.add_argument("--reason", default=None, help="kept in the test and the registry history")
    abort = command(ab_sub, "abort", "stop an A/B test without changing the champion", _ab_abort)
    abort.add_argument("name", help="test name")
    abort.add_argument("--reason", default=None, help="kept in the test and the registry history")
    rollout = ab_sub.add_parser("rollout", help="progressive rollouts of A/B tests",
                                description="Progressive rollouts (#14).")
    rollout_sub = rollout.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)
    command(rollout_sub, "status", "a rollout's step, traffic, history and the current step's verdict",
            _ab_rollout_status).add_argument("name", help="test name")
    command(rollout_sub, "check", "judge the current step now and advance, hold or roll back",
            _ab_rollout_check).add_argument("name", help="test name")

    drift = commands.add_parser("drift", help="drift detection", description="Drift detection.")
    drift_sub = drift.add_subparsers(dest="command", metavar="ACTION", required=True)
    check = command(drift_sub, "check", "one line per drift detector: score, status, recommendation",
                    _drift_check)
    check.add_argument("--fail-on-alert", action="store_true",
                       help=f"exit with {EXIT_ALERT} when any detector alerts (default: exit 0)")

    registry = commands.add_parser("registry", help="model versions and roles", description="Model registry.")
    reg_sub = registry.add_subparsers(dest="command", metavar="ACTION", required=True)
    rlist = command(reg_sub, "list", "list model types, or the versions of one", _registry_list)
    rlist.add_argument("model_type", nargs="?", metavar="MODEL_TYPE")
    register = command(reg_sub, "register", "register a model version", _registry_register)
    register.add_argument("model_type", metavar="MODEL_TYPE")
    register.add_argument("version", metavar="VERSION")
    register.add_argument("--metadata", metavar="JSON", type=_json_object, default=None,
                          help='JSON object stored with the version, e.g. \'{"run": "42"}\'')
    promote = command(reg_sub, "promote", "make a version the champion", _registry_promote)
    promote.add_argument("model_type", metavar="MODEL_TYPE")
    promote.add_argument("version", metavar="VERSION")
    promote.add_argument("--reason", required=True, help="kept in the registry history")
    rollback = command(reg_sub, "rollback", "restore the previous champion", _registry_rollback)
    rollback.add_argument("model_type", metavar="MODEL_TYPE")
    rollback.add_argument("--reason", required=True, help="kept in the registry history")
    history = command(reg_sub, "history", "every role change with time and reason", _registry_history)
    history.add_argument("model_type", metavar="MODEL_TYPE")
    return parser


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


# ------------------------------------------------------------------- commands
@attrs.frozen
class Context:
    """What a command handler gets: its arguments, the backend and the printer."""

    args: argparse.Namespace
    backend: Backend
    out: Printer

    def emit_json(self, value: Any) -> None:
        """Print *value* as JSON."""
        self.out.line(json_lines(value))


def _test_row(test: Mapping[str, Any]) -> list[Cell | str]:
    cfg = test["config"]
    return [test["name"], cfg["model_type"], cfg["control_version"], cfg["treatment_version"],
            f"{cfg['treatment_traffic_pct']:g}%", Cell(test["state"], _STATE_STYLES.get(test["state"], "")),
            fmt_time(test["started_at"]), fmt_time(test["ends_at"])]


def _ab_start(ctx: Context) -> int:
    a = ctx.args
    guardrails = {k: v for k, v in (("max_error_rate_increase", a.max_error_rate_increase),
                                    ("max_latency_increase_pct", a.max_latency_increase_pct),
                                    ("max_confidence_decrease", a.max_confidence_decrease)) if v is not None}
    config: dict[str, Any] = {
        "name": a.name, "model_type": a.model_type, "control_version": a.control,
        "treatment_version": a.treatment, "treatment_traffic_pct": a.traffic_pct,
        "duration_days": a.duration_days, "min_samples": a.min_samples, "alpha": a.alpha,
        "planned_samples": a.planned_samples, "auto_finalize": a.auto_finalize, "salt": a.salt,
        "guardrails": guardrails or None,
    }
    test = ctx.backend.start_test({k: v for k, v in config.items() if v is not None})
    if a.json:
        ctx.emit_json(test)
        return EXIT_OK
    cfg = test["config"]
    ctx.out.line(f"{ctx.out.symbol('✅', '[ok]')} A/B test started: {test['name']}")
    ctx.out.fields([
        ("model type", cfg["model_type"]),
        ("control", cfg["control_version"]),
        ("treatment", f"{cfg['treatment_version']} ({cfg['treatment_traffic_pct']:g}% of users)"),
        ("ends", f"{fmt_time(test['ends_at'])} UTC ({cfg['duration_days']:g} days)"),
    ])
    return EXIT_OK


def _ab_list(ctx: Context) -> int:
    tests = ctx.backend.list_tests()
    if ctx.args.json:
        ctx.emit_json(tests)
    elif not tests:
        ctx.out.line("no A/B tests")
    else:
        ctx.out.table(["NAME", "MODEL TYPE", "CONTROL", "TREATMENT", "TRAFFIC", "STATE", "STARTED (UTC)",
                       "ENDS (UTC)"], [_test_row(t) for t in tests])
    return EXIT_OK


def _effect_row(effect: Mapping[str, Any]) -> list[Cell | str]:
    metric = effect["metric"]
    if metric == "error_rate":
        value: Callable[[Any], str] = fmt_pct
        delta: Callable[[Any], str] = lambda x: fmt_pct(x, signed=True)  # noqa: E731 - a tiny formatter
    elif metric == "latency_ms":
        value = lambda x: fmt_float(x, 1)  # noqa: E731
        delta = lambda x: fmt_pct(x, signed=True)  # noqa: E731
    else:
        value = lambda x: fmt_float(x, 4)  # noqa: E731
        delta = lambda x: "-" if x is None else f"{x:+.4f}"  # noqa: E731
    interval = "-" if effect["lower"] is None else f"[{delta(effect['lower'])}, {delta(effect['upper'])}]"
    return [metric, value(effect["control"]), value(effect["treatment"]), delta(effect["estimate"]), interval,
            Cell(effect["verdict"], _VERDICT_STYLES.get(effect["verdict"], ""))]


def _excluded(ev: Mapping[str, Any]) -> str:
    """What the decision left out because not every live worker had delivered it yet (#12)."""
    c, t = ev.get("excluded_control") or 0, ev.get("excluded_treatment") or 0
    return f" (left out, not yet delivered by every worker: control {c}, treatment {t})" if c or t else ""


def _print_evaluation(out: Printer, ev: Mapping[str, Any]) -> None:
    out.fields([
        ("Test", ev["test"]),
        ("Decision", Cell(ev["decision"], _DECISION_STYLES.get(ev["decision"], ""))),
        ("Recommendation", ev["recommendation"]),
        ("Samples", f"control {ev['n_control']}, treatment {ev['n_treatment']}" + _excluded(ev)),
    ])
    out.line()
    out.table(["METRIC", "CONTROL", "TREATMENT", "EFFECT", "ANYTIME-VALID INTERVAL", "VERDICT"],
              [_effect_row(e) for e in ev["effects"].values()])


def _finalized_message(out: Printer, result: Mapping[str, Any]) -> str:
    test = result["test"]
    cfg = test["config"]
    if test["state"] == "promoted":
        text = (f"{out.symbol('✅', '[ok]')} Treatment promoted to champion: {cfg['treatment_version']} "
                f"now serves {cfg['model_type']}")
    else:
        text = (f"{out.symbol('↩️', '[ok]')} Treatment rolled back: {cfg['control_version']} stays champion "
                f"of {cfg['model_type']}")
    if not result["changed"]:
        text += " (another caller finalized it first)"
    return text


def _ab_evaluate(ctx: Context) -> int:
    name = ctx.args.name
    ev = ctx.backend.evaluate_test(name)
    finalized: dict[str, Any] | None = None
    if ctx.args.finalize and ev["decision"] in ("promote", "rollback"):
        test = ctx.backend.get_test(name)
        if test["state"] in ("active", "finalizing"):
            finalized = ctx.backend.finalize_test(name, ev["decision"], ev["recommendation"])
        else:  # an auto-finalizing test acted on its own decision already
            finalized = {"changed": False, "test": test}
    if ctx.args.json:
        ctx.emit_json({"evaluation": ev, "finalized": finalized} if ctx.args.finalize else ev)
        return EXIT_OK
    _print_evaluation(ctx.out, ev)
    if finalized is not None:
        ctx.out.line()
        if finalized["test"]["state"] in ("promoted", "rolled_back"):
            ctx.out.line(_finalized_message(ctx.out, finalized))
        else:
            ctx.out.line(f"A/B test {name} is {finalized['test']['state']}; nothing finalized")
    elif ctx.args.finalize:
        ctx.out.line()
        ctx.out.line(f"not finalized: the decision is {ev['decision']}")
    return EXIT_OK


def _ab_finalize(ctx: Context) -> int:
    result = ctx.backend.finalize_test(ctx.args.name, ctx.args.action, ctx.args.reason)
    if ctx.args.json:
        ctx.emit_json(result)
    else:
        ctx.out.line(_finalized_message(ctx.out, result))
    return EXIT_OK


def _ab_abort(ctx: Context) -> int:
    result = ctx.backend.abort_test(ctx.args.name, ctx.args.reason)
    if ctx.args.json:
        ctx.emit_json(result)
    else:
        cfg = result["test"]["config"]
        ctx.out.line(f"A/B test {result['test']['name']} aborted; {cfg['model_type']} champion unchanged")
    return EXIT_OK


def _print_rollout(out: Printer, ro: Mapping[str, Any]) -> None:
    out.fields([
        ("Test", ro["test"]),
        ("Status", ro["status"]),
        ("Step", f"{ro['step'] + 1} of {ro['steps']}"),
        ("Traffic", f"{ro['traffic_pct']:g}% treatment"),
        ("Reason", ro["reason"]),
    ])
    verdict = ro["verdict"]
    if verdict is not None:
        out.line()
        out.fields([
            ("Verdict", Cell(verdict["decision"], _DECISION_STYLES.get(verdict["decision"], ""))),
            ("Why", "; ".join(verdict["reasons"]) or "-"),
            ("Step results", f"control {verdict['n_control']}, treatment {verdict['n_treatment']} "
                             f"in {verdict['elapsed_seconds']:.0f} s"),
        ])
    out.line()
    out.table(["TIME", "STEP", "TRAFFIC", "DECISION", "REASON"],
              [[fmt_time(h["time"]), str(h["step"] + 1), f"{h['traffic_pct']:g}%", h["decision"], h["reason"]]
               for h in ro["history"]])


def _ab_rollout_status(ctx: Context) -> int:
    ro = ctx.backend.rollout_status(ctx.args.name)
    if ctx.args.json:
        ctx.emit_json(ro)
    else:
        _print_rollout(ctx.out, ro)
    return EXIT_OK


def _ab_rollout_check(ctx: Context) -> int:
    ro = ctx.backend.rollout_check(ctx.args.name)
    if ctx.args.json:
        ctx.emit_json(ro)
        return EXIT_OK
    _print_rollout(ctx.out, ro)
    ctx.out.line()
    ctx.out.line(f"changed: {ro['changed']}" if ro["changed"] else "no step change")
    return EXIT_OK


def _drift_line(out: Printer, report: Mapping[str, Any], width: int) -> str:
    """``<mark> <key>  <score>  <level>``: green below the threshold, red at or above it (or alerting)."""
    key = report["key"].ljust(width)
    level = report["level"]
    if level == "insufficient_data":
        if report["reference_samples"]:
            why = f"collecting data ({report['production_samples']} of {report['min_samples']} samples)"
        else:
            why = "collecting data (no reference yet)"
        return f"{out.symbol('⚪', '[..]')} {key}  {'-':>5}  {out.paint(why, 'dim')}"
    score = report["current_drift_score"]
    red = report["alert_triggered"] or score >= report["threshold"]
    mark = out.symbol("🔴", "[!!]") if red else out.symbol("🟢", "[ok]")
    style: Style = "red" if red else "green"
    level_style: Style = "red" if level == "alert" else "yellow" if level == "warning" else ""
    return f"{mark} {key}  {out.paint(f'{score:.3f}', style)}  {out.paint(level, level_style)}"


def _drift_check(ctx: Context) -> int:
    reports = ctx.backend.drift_reports()
    alerting = any(r["alert_triggered"] for r in reports)
    if ctx.args.json:
        ctx.emit_json(reports)
    elif not reports:
        ctx.out.line("no drift detectors")
    else:
        width = max(len(r["key"]) for r in reports)
        for report in reports:
            ctx.out.line(_drift_line(ctx.out, report, width))
            if report["alert_triggered"]:
                ctx.out.line(f"   {ctx.out.symbol('⚠️ ', '!')} {report['recommendation']}")
    return EXIT_ALERT if alerting and ctx.args.fail_on_alert else EXIT_OK


def _registry_list(ctx: Context) -> int:
    if ctx.args.model_type is None:
        types = ctx.backend.model_types()
        if ctx.args.json:
            ctx.emit_json(types)
        elif not types:
            ctx.out.line("no model types registered")
        else:
            ctx.out.table(["MODEL TYPE", "CHAMPION", "CHALLENGER", "VERSIONS"],
                          [[t["model_type"], Cell(t["champion"] or "-", "green"), Cell(t["challenger"] or "-",
                                                                                    "yellow"), str(t["versions"])]
                           for t in types])
        return EXIT_OK
    versions = ctx.backend.list_versions(ctx.args.model_type)
    if ctx.args.json:
        ctx.emit_json(versions)
        return EXIT_OK
    rows: list[list[Cell | str]] = []
    for v in versions:
        m = v["metrics"]
        rows.append([v["version"], Cell(v["role"], _ROLE_STYLES.get(v["role"], "")), str(m["count"]),
                     fmt_pct(m["error_rate"]), fmt_float(m["latency_mean_ms"], 1), fmt_float(m["confidence_mean"], 3),
                     fmt_time(v["created_at"])])
    ctx.out.table(["VERSION", "ROLE", "RESULTS", "ERROR RATE", "LATENCY MS", "CONFIDENCE", "REGISTERED (UTC)"],
                  rows)
    return EXIT_OK


def _registry_register(ctx: Context) -> int:
    version = ctx.backend.register(ctx.args.model_type, ctx.args.version, ctx.args.metadata)
    if ctx.args.json:
        ctx.emit_json(version)
    else:
        ctx.out.line(f"registered {version['model_type']} {version['version']} as "
                     f"{ctx.out.paint(version['role'], _ROLE_STYLES.get(version['role'], ''))}")
    return EXIT_OK


def _registry_promote(ctx: Context) -> int:
    result = ctx.backend.promote(ctx.args.model_type, ctx.args.version, ctx.args.reason)
    if ctx.args.json:
        ctx.emit_json(result)
    else:
        champion = result["champion"]
        if result["changed"]:
            ctx.out.line(f"{champion['model_type']} champion is now {ctx.out.paint(champion['version'], 'green')}")
        else:
            ctx.out.line(f"{champion['version']} already is the champion of {champion['model_type']}; "
                         "nothing changed")
    return EXIT_OK


def _registry_rollback(ctx: Context) -> int:
    result = ctx.backend.rollback(ctx.args.model_type, ctx.args.reason)
    if ctx.args.json:
        ctx.emit_json(result)
    else:
        champion = result["champion"]
        ctx.out.line(f"rolled back {champion['model_type']}: champion is now "
                     f"{ctx.out.paint(champion['version'], 'green')}")
    return EXIT_OK


def _registry_history(ctx: Context) -> int:
    changes = ctx.backend.history(ctx.args.model_type)
    if ctx.args.json:
        ctx.emit_json(changes)
    else:
        ctx.out.table(["TIME (UTC)", "ACTION", "VERSION", "PREVIOUS CHAMPION", "REASON"],
                      [[fmt_time(c["time"]), c["action"], c["version"] or "-", c["previous_champion"] or "-",
                        c["reason"]] for c in changes])
    return EXIT_OK


# ----------------------------------------------------------------------- main
def _backend(args: argparse.Namespace, parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> Backend:
    if args.store and args.api:
        parser.error("--store and --api are alternatives: pass one")
    api = args.api or (None if args.store else environ.get(ENV_API_URL) or None)
    if api:
        token = args.token or environ.get(ENV_TOKEN) or None
        return HttpBackend(api, token)
    store = args.store or environ.get(ENV_STORE_URL) or None
    if not store:
        parser.error(f"no backend: pass --store URL or --api URL (or set {ENV_STORE_URL} or {ENV_API_URL})")
    prefix = args.store_prefix or environ.get(ENV_STORE_PREFIX) or "mlops"
    return StoreBackend(store, prefix=prefix)


def _silence(stream: IO[str]) -> None:
    """Point *stream*'s descriptor at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError):  # not a real file (e.g. captured in tests)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mlops-otel`` with *argv* (default: ``sys.argv[1:]``); return the exit code."""
    stdout: IO[str] = sys.stdout
    stderr: IO[str] = sys.stderr
    parser = build_parser()
    environ = os.environ
    try:
        args = parser.parse_args(argv)
        backend = _backend(args, parser, environ)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except CliError as exc:
        stderr.write(f"mlops-otel: error: {exc.message}\n")
        return exc.exit_code
    out = Printer(stdout, color_wanted(args.color, stdout, environ))
    handler: Callable[[Context], int] = args.handler
    code = EXIT_OK
    try:
        code = handler(Context(args, backend, out))
    except CliError as exc:
        stderr.write(f"mlops-otel: error: {exc.message}\n")
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # e.g. `mlops-otel --json drift check | head`: the reader left
        _silence(stdout)
    finally:
        try:
            backend.close()
        except CliError as exc:  # pragma: no cover - closing only flushes what a write left pending
            stderr.write(f"mlops-otel: error: {exc.message}\n")
            code = code or exc.exit_code
    try:
        stdout.flush()
    except BrokenPipeError:
        _silence(stdout)
    return code

