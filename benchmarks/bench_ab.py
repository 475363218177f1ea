"""A/B testing costs: assignment (per call and vectorised), recording, evaluation.

``assign`` (SHA-256 of salt + user id, then a range check) is timed side by
side with GrowthBook's bucketing hash (``gbhash`` v2: FNV-1a 32-bit applied
twice, pure Python; the ``growthbook`` package when installed, else a
re-implementation of the documented algorithm) and with the other hashes
considered (blake2b, md5, xxhash) on the same 10-character id. Manager
operations run on a :class:`~mlops_otel.stores.MemoryStore`.

Run: ``python -m benchmarks.bench_ab`` (``--quick`` for the smoke mode).
"""

from __future__ import annotations

import hashlib
import statistics
import sys
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from mlops_otel.ab import (
    ABTestConfig,
    ABTestManager,
    MetricBatch,
    StatsBatch,
    assign,
    assign_many,
    evaluate,
    evaluate_batch,
)
from mlops_otel.registry import ModelRegistry, SufficientStats
from mlops_otel.stores import MemoryStore
from mlops_otel.telemetry import Telemetry

from ._harness import Row, row, time_per_call

BENCH = "ab"
USER = "user-12345"  # 10 characters, as in the measurement
CONFIG = ABTestConfig(name="gnn_v2.2_test", model_type="gnn", control_version="v2.1.0",
                      treatment_version="v2.2.0", treatment_traffic_pct=10.0)


def _fnv1a32(s: str) -> int:
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def _gbhash_reimplemented(seed: str, value: str, version: int) -> float:
    """GrowthBook's documented hashVersion 2: fnv1a32(str(fnv1a32(seed + value))) % 10000 / 10000."""
    return (_fnv1a32(str(_fnv1a32(seed + value))) % 10000) / 10000


def growthbook_hash() -> tuple[Callable[[str, str, int], float | None], str]:
    """GrowthBook's own ``gbhash`` when the package is installed, else the re-implementation."""
    try:
        from growthbook.core import gbhash
    except ImportError:
        return _gbhash_reimplemented, "re-implemented (growthbook not installed)"
    import growthbook

    return gbhash, f"growthbook {getattr(growthbook, '__version__', '?')} package"


def _loop(fn: Callable[[], object]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            fn()

    return run


def _hash_cases() -> dict[str, tuple[Callable[[], object], str]]:
    gbhash, source = growthbook_hash()
    prefix = CONFIG.salt_prefix
    data = prefix + USER.encode()
    cases: dict[str, tuple[Callable[[], object], str]] = {
        "assign (sha256 + range)": (lambda: assign(USER, CONFIG), "mlops-otel"),
        "GrowthBook gbhash v2 + range": (lambda: (gbhash("gnn_v2.2_test", USER, 2) or 0.0) < 0.1, source),
        "GrowthBook hashVersion 2, re-implemented": (
            lambda: _gbhash_reimplemented("gnn_v2.2_test", USER, 2) < 0.1, "documented FNV-1a 32 x2"),
        "sha256 digest only": (lambda: hashlib.sha256(data).digest(), "hashlib"),
        "blake2b-64 digest only": (lambda: hashlib.blake2b(data, digest_size=8).digest(), "hashlib"),
        "md5 digest only": (lambda: hashlib.md5(data).digest(), "hashlib"),
    }
    try:
        import xxhash

        cases["xxh3_64 digest only"] = (lambda: xxhash.xxh3_64_intdigest(data), "xxhash (not a dependency)")
    except ImportError:  # pragma: no cover - xxhash is a dev dependency
        pass
    return cases


def _manager() -> tuple[ABTestManager, ModelRegistry]:
    store = MemoryStore()
    registry = ModelRegistry(store, telemetry=Telemetry())
    registry.register("gnn", "v2.1.0")
    registry.register("gnn", "v2.2.0")
    manager = ABTestManager(store, registry, telemetry=registry.telemetry)
    manager.start_test(CONFIG)
    return manager, registry


def run(quick: bool = False) -> list[Row]:
    """Time every case in this process, side by side."""
    n, repeat = (2_000, 3) if quick else (200_000, 9)
    rows: list[Row] = []
    for case, (fn, note) in _hash_cases().items():
        rows.append(row(BENCH, case, time_per_call(_loop(fn), n, repeat), n, note))

    ids_n = 10_000 if quick else 1_000_000
    ids = [f"user-{i:05d}" for i in range(ids_n)]
    many = time_per_call(lambda _: assign_many(ids, CONFIG), 1, 3 if quick else 7, warmup=1)
    rows.append(row(BENCH, "assign_many, per id", [t / ids_n for t in many], ids_n,
                    f"{statistics.median(many) * 1e6 / ids_n:.2f} s per million ids"))
    gbhash, source = growthbook_hash()

    def gb_many(_: int) -> None:
        for u in ids:
            gbhash("gnn_v2.2_test", u, 2)

    gb = time_per_call(gb_many, 1, 1 if quick else 3, warmup=1)
    rows.append(row(BENCH, "GrowthBook gbhash over the same ids, per id", [t / ids_n for t in gb], ids_n,
                    f"{statistics.median(gb) * 1e6 / ids_n:.2f} s per million ids ({source}; no batch API)"))

    manager, registry = _manager()
    users = [f"user-{i}" for i in range(1000)]

    def assign_variant(k: int) -> None:
        for i in range(k):
            manager.assign_variant("gnn", users[i % 1000])

    def record(k: int) -> None:
        for i in range(k):
            manager.record_result("gnn_v2.2_test", "treatment" if i & 1 else "control", 12.5, 0.91, False)

    def update(k: int) -> None:
        for _ in range(k):
            registry.update_metrics("gnn", "v2.1.0", 12.5, 0.91, False)

    rows.append(row(BENCH, "assign_variant (manager, memory store)", time_per_call(assign_variant, n, repeat), n,
                    "cached test view + counter"))
    rows.append(row(BENCH, "record_result (memory store)", time_per_call(record, n, repeat), n,
                    "validate + in-process sums + counter"))
    rows.append(row(BENCH, "update_metrics (memory store)", time_per_call(update, n, repeat), n))

    def evaluate_test(k: int) -> None:
        for _ in range(k):
            manager.evaluate_test("gnn_v2.2_test")

    k = 20 if quick else 500
    rows.append(row(BENCH, "evaluate_test (memory store)", time_per_call(evaluate_test, k, repeat), k,
                    "publish snapshot + read workers' snapshots + evaluate + history"))
    c = SufficientStats.of([50.0] * 10 + [60.0] * 10, [0.8] * 10 + [0.9] * 10)
    rows.append(row(BENCH, "evaluate (pure)", time_per_call(_loop(lambda: evaluate(c, c, CONFIG)), k, repeat), k))
    m = 10_000 if quick else 100_000
    batch = StatsBatch.from_stats([c])
    big = StatsBatch(np.repeat(batch.n, m), {
        name: MetricBatch(np.repeat(b.n, m), np.repeat(b.mean, m), np.repeat(b.var, m))
        for name, b in batch.metrics.items()})
    rows.append(row(BENCH, "evaluate_batch, per decision",
                    [t / m for t in time_per_call(lambda _: evaluate_batch(big, big, CONFIG), 1, 3, warmup=1)],
                    m, "vectorised simulations"))
    return rows


def summary(rows: list[Any]) -> list[str]:
    """The issue's goals as ratios measured in this run (rows as :class:`Row` or dicts)."""
    by = {r["case"]: r for r in (attrs.asdict(x) if attrs.has(type(x)) else dict(x) for x in rows)}
    ours = by["assign (sha256 + range)"]["median_us"]
    gb = by["GrowthBook gbhash v2 + range"]
    per_id = by["assign_many, per id"]
    return [
        f"`assign` per call: {ours:.2f} µs vs GrowthBook's hashing {gb['median_us']:.2f} µs "
        f"({gb['median_us'] / ours:.1f}x faster; {gb['note']}).",
        f"`assign_many`: {per_id['median_us']:.3f} µs per id, {per_id['median_us']:.2f} s per million ids "
        f"(min {per_id['min_us']:.2f}, max {per_id['max_us']:.2f}).",
    ]


def main(argv: list[str]) -> None:
    rows = run(quick="--quick" in argv)
    width = max(len(r.case) for r in rows)
    print(f"{'case':<{width}}  {'median µs':>10} {'min':>9} {'max':>9}  note")
    for r in rows:
        print(f"{r.case:<{width}}  {r.median_us:>10.3f} {r.min_us:>9.3f} {r.max_us:>9.3f}  {r.note}")
    print()
    print("\n".join(summary(rows)))


if __name__ == "__main__":
    main(sys.argv[1:])
