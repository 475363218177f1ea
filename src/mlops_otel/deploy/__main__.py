"""``python -m mlops_otel.deploy DIR``: write (or ``--check``) the deployment artifacts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._files import check_dir, write_all


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m mlops_otel.deploy",
        description="Generate Prometheus, Grafana and OTel Collector artifacts from mlops_otel.semconv.",
    )
    parser.add_argument("outdir", help="directory to write the files into (created if missing)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file in OUTDIR is missing or out of date")
    args = parser.parse_args(argv)
    if args.check:
        stale = check_dir(args.outdir)
        for name in stale:
            print(f"{args.outdir}/{name} is missing or out of date", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all(args.outdir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
