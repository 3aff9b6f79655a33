"""Run the SQL-on-FHIR v2 test suite (one JSON file per topic) against this engine.

The report has the suite's own format (test-report.schema.json): `{file: {"tests": [{"name",
"result": {"passed", "error"?, "details"?}}]}}`.
"""

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from features.fhir_flatten.engine.viewdef.errors import ViewError
from features.fhir_flatten.engine.viewdef.view import compile_view

DEFAULT_REPORT = "sof-test-report.json"


def _canonical(value: Any) -> Any:
    """A hashable form where 1 == 1.0 but true != 1, for comparing rows as multisets."""
    if value.__class__ is bool or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    if isinstance(value, str):
        return ("string", str(value))
    if isinstance(value, list):
        return ("list", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, _canonical(v)) for k, v in value.items())))
    return ("other", repr(value))


def _row_key(row: dict) -> Any:
    return tuple(sorted((name, _canonical(value)) for name, value in row.items()))


def run_test(test: dict, resources: list[dict]) -> dict:
    """One test's result: {"passed": bool, "error"?: str, "details"?: {...}}."""
    expects_error = bool(test.get("expectError"))
    try:
        view = compile_view(test["view"])
        rows = list(view.run(resources))
    except ViewError as exc:
        if expects_error:
            return {"passed": True}
        return {"passed": False, "error": f"unexpected ViewError: {exc}"}
    except Exception as exc:  # an engine bug, whatever the test expects
        return {"passed": False, "error": f"engine failure: {type(exc).__name__}: {exc}"}
    if expects_error:
        return {"passed": False, "error": f"expected an error, got {len(rows)} row(s)"}
    if "expectCount" in test:
        if len(rows) == test["expectCount"]:
            return {"passed": True}
        return {"passed": False, "error": f"expected {test['expectCount']} rows, got {len(rows)}"}
    expected = test.get("expect", [])
    columns = test.get("expectColumns")
    if columns is not None and [c.name for c in view.columns] != columns:
        return {
            "passed": False,
            "error": "columns differ",
            "details": {"expected": columns, "actual": [c.name for c in view.columns]},
        }
    if Counter(map(_row_key, rows)) == Counter(map(_row_key, expected)):
        return {"passed": True}
    return {
        "passed": False,
        "error": f"rows differ: expected {len(expected)}, got {len(rows)}",
        "details": {"expected": expected, "actual": json.loads(json.dumps(rows, default=str))},
    }


def run_suite(directory: Path) -> tuple[dict, int, int]:
    """(report, passed, failed) for every test file in `directory`."""
    report: dict[str, dict] = {}
    passed = failed = 0
    for path in sorted(Path(directory).glob("*.json")):
        suite = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(suite, dict) or not isinstance(suite.get("tests"), list):
            continue  # a schema or another file beside the tests
        results = []
        for test in suite["tests"]:
            result = run_test(test, suite.get("resources", []))
            results.append({"name": test.get("title", ""), "result": result})
            if result["passed"]:
                passed += 1
            else:
                failed += 1
        report[path.name] = {"tests": results}
    return report, passed, failed


def main(directory: str, report_path: str | None = None, out: TextIO = sys.stdout) -> int:
    """Print one line per test file and the totals; write the report; 0 when all pass."""
    report, passed, failed = run_suite(Path(directory))
    for name, suite in report.items():
        tests = suite["tests"]
        good = sum(1 for t in tests if t["result"]["passed"])
        print(f"{name}: {good}/{len(tests)}", file=out)
        for test in tests:
            if not test["result"]["passed"]:
                print(f"  FAILED {test['name']}: {test['result'].get('error', '')}", file=out)
    target = Path(report_path or DEFAULT_REPORT)
    target.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{passed} passed, {failed} failed", file=out)
    return 0 if failed == 0 else 1
