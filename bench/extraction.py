"""Note extraction speed: `analyse()` per note on the shared ACI-Bench notes.

    .venv/bin/python bench/extraction.py [--runs 30]

Prints the median and 95th percentile per note over every note of ../shared/data/soap-notes,
and the median on the largest one, against the target (median under 5 ms on one core).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.notes.extraction import analyse  # noqa: E402

NOTES = ROOT.parent / "shared" / "data" / "soap-notes"
TARGET_MS = 5.0


def timings_ms(text: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        analyse(text)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    paths = sorted(NOTES.glob("*.txt"))
    if not paths:
        raise SystemExit(f"no notes at {NOTES}")
    texts = [p.read_text(encoding="utf-8") for p in paths]
    per_note = [statistics.median(timings_ms(t, args.runs)) for t in texts]
    largest = max(texts, key=len)
    median_largest = statistics.median(timings_ms(largest, args.runs * 3))
    p95 = statistics.quantiles(per_note, n=20)[-1]
    print(f"{len(texts)} notes, {sum(map(len, texts)) // len(texts)} characters on average")
    print(f"median per note  {statistics.median(per_note):6.2f} ms")
    print(f"p95 per note     {p95:6.2f} ms")
    verdict = "met" if median_largest < TARGET_MS else "not met"
    print(
        f"largest note     {median_largest:6.2f} ms ({len(largest)} chars; "
        f"target < {TARGET_MS:.0f} ms: {verdict})"
    )


if __name__ == "__main__":
    main()
