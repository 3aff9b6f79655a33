"""The official SQL-on-FHIR v2 test suite, run through the conformance runner."""

import io
import json
from pathlib import Path

import pytest

from features.fhir_flatten.engine.viewdef.conformance import main, run_suite

SUITE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sql-on-fhir-v2" / "tests"
SUITE_SIZE = 134

needs_suite = pytest.mark.skipif(
    not SUITE.is_dir(), reason=f"the SQL-on-FHIR v2 test suite is not at {SUITE}"
)


def _failures(report: dict) -> list[str]:
    return [
        f"{file}: {test['name']}: {test['result'].get('error')}"
        for file, suite in report.items()
        for test in suite["tests"]
        if not test["result"]["passed"]
    ]


@needs_suite
def test_every_test_of_the_suite_passes():
    report, passed, failed = run_suite(SUITE)

    assert _failures(report) == []
    assert (passed, failed) == (SUITE_SIZE, 0)
    assert len(report) == 22


@needs_suite
def test_the_report_has_the_suites_own_format():
    report, _, _ = run_suite(SUITE)

    for file, suite in report.items():
        assert file.endswith(".json")
        assert set(suite) == {"tests"}
        assert suite["tests"]
        for test in suite["tests"]:
            assert isinstance(test["name"], str)
            assert isinstance(test["result"]["passed"], bool)
            assert set(test["result"]) <= {"passed", "error", "details"}


@needs_suite
def test_main_prints_one_line_per_file_and_the_totals(tmp_path):
    out = io.StringIO()
    report_path = tmp_path / "report.json"

    status = main(str(SUITE), str(report_path), out=out)

    lines = out.getvalue().splitlines()
    assert status == 0
    assert "basic.json: 11/11" in lines
    assert "fn_boundary.json: 8/8" in lines
    assert lines[-1] == f"{SUITE_SIZE} passed, 0 failed"
    assert json.loads(report_path.read_text())["union.json"]["tests"][0]["result"]["passed"]


@needs_suite
def test_main_writes_the_report_in_the_current_directory_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    main(str(SUITE), out=io.StringIO())

    assert "repeat.json" in json.loads((tmp_path / "sof-test-report.json").read_text())


def test_a_failing_test_fails_the_run_and_says_why(tmp_path):
    """The runner must be able to fail: wrong rows, a missing error and a wrong count."""
    suite_dir = tmp_path / "suite"
    suite_dir.mkdir()
    view = {"resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}]}
    suite = {
        "title": "broken on purpose",
        "resources": [{"resourceType": "Patient", "id": "p1"}],
        "tests": [
            {"title": "right", "view": view, "expect": [{"id": "p1"}]},
            {"title": "wrong rows", "view": view, "expect": [{"id": "p2"}]},
            {"title": "no error", "view": view, "expectError": True},
            {"title": "wrong count", "view": view, "expectCount": 2},
            {"title": "right count", "view": view, "expectCount": 1},
        ],
    }
    (suite_dir / "broken.json").write_text(json.dumps(suite))
    out = io.StringIO()

    status = main(str(suite_dir), str(tmp_path / "report.json"), out=out)

    assert status == 1
    assert out.getvalue().splitlines()[-1] == "2 passed, 3 failed"
    results = {
        t["name"]: t["result"]
        for t in json.loads((tmp_path / "report.json").read_text())["broken.json"]["tests"]
    }
    assert results["wrong rows"]["details"] == {
        "expected": [{"id": "p2"}],
        "actual": [{"id": "p1"}],
    }
    assert results["no error"]["error"] == "expected an error, got 1 row(s)"
    assert results["wrong count"]["error"] == "expected 2 rows, got 1"


def test_rows_compare_as_multisets_with_json_numbers(tmp_path):
    """Order is not significant, duplicates are, 5 equals 5.0, and true is not 1."""
    view = {
        "resource": "Patient",
        "select": [{"column": [{"name": "v", "path": "value", "collection": True}]}],
    }
    resources = [
        {"resourceType": "Patient", "id": "a", "value": [5.0, True]},
        {"resourceType": "Patient", "id": "b", "value": [1]},
        {"resourceType": "Patient", "id": "c", "value": [1]},
    ]
    tests = [
        {"title": "reordered", "view": view, "expect": [{"v": [1]}, {"v": [5, True]}, {"v": [1]}]},
        {"title": "duplicate lost", "view": view, "expect": [{"v": [1]}, {"v": [5, True]}]},
        {"title": "true is not 1", "view": view, "expect": [{"v": [1]}, {"v": [5, 1]}, {"v": [1]}]},
    ]
    (tmp_path / "numbers.json").write_text(
        json.dumps({"title": "t", "resources": resources, "tests": tests})
    )

    report, _, _ = run_suite(tmp_path)

    outcome = {t["name"]: t["result"]["passed"] for t in report["numbers.json"]["tests"]}
    assert outcome == {"reordered": True, "duplicate lost": False, "true is not 1": False}


def test_an_engine_crash_is_a_failure_even_where_an_error_is_expected(tmp_path, monkeypatch):
    from features.fhir_flatten.engine.viewdef import conformance

    def crash(view):
        raise KeyError("boom")

    monkeypatch.setattr(conformance, "compile_view", crash)
    suite = {
        "title": "t",
        "resources": [],
        "tests": [{"title": "errs", "view": {}, "expectError": True}],
    }
    (tmp_path / "crash.json").write_text(json.dumps(suite))

    report, passed, failed = run_suite(tmp_path)

    assert (passed, failed) == (0, 1)
    assert report["crash.json"]["tests"][0]["result"]["error"].startswith(
        "engine failure: KeyError"
    )
