"""Run one named benchmark: ``python scripts/bench.py NAME [--json] [benchmark options]``.

Prints a readable table, or with ``--json`` one JSON object, so CI can keep the
figures and compare runs. Unknown names print the list and exit 2.
"""

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

# Run as a file from a checkout that need not be installed: make the benchmarks package
# beside this script and the repository's own packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from benchmarks import REGISTRY, Result


def _listing() -> str:
    width = max(len(name) for name in REGISTRY)
    return "\n".join(f"  {name:<{width}}  {b.summary}" for name, b in sorted(REGISTRY.items()))


def _table(result: Result) -> str:
    rows = dict(_flat(result))
    width = max(len(key) for key in rows)
    return "\n".join(f"{key:<{width}}  {_number(value)}" for key, value in rows.items())


def _flat(result: Mapping[str, object], prefix: str = "") -> Iterator[tuple[str, object]]:
    """Nested results as dotted keys (``rtu.tags_per_s``), so the table stays one column."""
    for key, value in result.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and abs(value) < 1000:
        return f"{value:.2f}"
    return f"{value:,.0f}"


def main(argv: list[str]) -> int:
    """Run the benchmark named in ``argv``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python scripts/bench.py",
        description="Run one named benchmark.",
        epilog=f"benchmarks:\n{_listing()}\n\nOptions after NAME that are not --json go to "
        "the benchmark (try NAME --help).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=not argv or argv[0] in ("-h", "--help"),
    )
    parser.add_argument("name", metavar="NAME", nargs="?")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args, rest = parser.parse_known_args(argv)
    benchmark = REGISTRY.get(args.name or "")
    if benchmark is None:
        known = f"unknown benchmark {args.name!r}" if args.name else "no benchmark named"
        print(f"{known}; choose one of:\n{_listing()}", file=sys.stderr)
        return 2
    result = benchmark.load()(rest)
    print(json.dumps(result) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
