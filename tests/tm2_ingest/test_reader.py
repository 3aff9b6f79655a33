"""Reading and validating TM2 diagnosis uploads: no database, no network."""

import csv
import io
from datetime import date
from pathlib import Path

import pytest

from features.tm2_ingest.codes import read_code_list
from features.tm2_ingest.reader import (
    CSVFormatError,
    InvalidRow,
    MissingColumns,
    Problem,
    ValidRow,
    read_upload,
)

TODAY = date(2026, 1, 1)
SEEDS = Path(__file__).resolve().parents[2] / "seeds"
TITLES = {
    "SK00": "Cephalalgia disorder (TM2)",
    "SK01": "Migraine disorder (TM2)",
    "SK0Z": "Headache disorders (TM2), unspecified",
    "SR10": "Vitiation of vāta pattern (TM2)",
    "SP9Y": "Other specified disorders affecting the whole body (TM2)",
}
COLUMNS = (
    "patient_id",
    "tm2_code",
    "condition_name",
    "system_type",
    "severity",
    "diagnosis_date",
    "practitioner_id",
)
HEADER = ",".join(COLUMNS)
GOOD = {
    "patient_id": "P-1",
    "tm2_code": "SK00",
    "condition_name": "Cephalalgia disorder",
    "system_type": "Ayurveda",
    "severity": "Mild",
    "diagnosis_date": "2025-05-01",
    "practitioner_id": "PR-1",
}


def read(text: str | bytes) -> list[ValidRow | InvalidRow]:
    data = text.encode() if isinstance(text, str) else text
    return list(read_upload(io.BytesIO(data), TITLES.get, today=TODAY))


def line(delimiter: str = ",", **changes: str) -> str:
    """A data line: the good row with some cells changed, quoted where needed."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerow({**GOOD, **changes}.values())
    return out.getvalue()


def read_one(**changes: str) -> ValidRow | InvalidRow:
    [result] = read(f"{HEADER}\n{line(**changes)}")
    return result


def valid(**changes: str) -> ValidRow:
    result = read_one(**changes)
    assert isinstance(result, ValidRow), result
    return result


# --- the file as a whole -----------------------------------------------------------------


def test_a_good_row_is_read_with_its_cells_as_written() -> None:
    row = valid(tm2_code=" sk00 ", system_type="ayurveda", severity="MILD")
    assert row == ValidRow(
        row=2,
        patient_id="P-1",
        code="SK00",
        condition_name="Cephalalgia disorder",
        system_type="Ayurveda",
        severity="Mild",
        diagnosis_date=date(2025, 5, 1),
        practitioner_id="PR-1",
        raw={**GOOD, "tm2_code": " sk00 ", "system_type": "ayurveda", "severity": "MILD"},
        warnings=(),
    )


def test_a_utf8_bom_is_dropped() -> None:
    [row] = read(b"\xef\xbb\xbf" + f"{HEADER}\r\n{line()}".encode())
    assert isinstance(row, ValidRow)


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_the_delimiter_is_the_headers(delimiter: str) -> None:
    header = delimiter.join(COLUMNS)
    title = "Headache disorders, unspecified"  # a comma that must not split the cell
    # Blank lines before the header are passed over to find the line to detect it from.
    [row] = read(f"\n\n{header}\n{line(delimiter, tm2_code='SK0Z', condition_name=title)}")
    assert isinstance(row, ValidRow)
    assert (row.row, row.code, row.condition_name, row.warnings) == (4, "SK0Z", title, ())


def test_header_names_ignore_case_and_spaces_and_extra_columns_are_left_out() -> None:
    header = (
        "Notes,Patient ID,TM2 Code,Condition Name,SYSTEM TYPE,Severity,Diagnosis Date,"
        "Practitioner-ID"
    )
    [row] = read(f"{header}\nprivate remark,{line()}")
    assert isinstance(row, ValidRow)
    assert row.raw == GOOD


def test_missing_columns_are_named_before_any_row_is_read() -> None:
    header = "patient_id,tm2_code,condition_name,system_type,diagnosis_date"
    with pytest.raises(MissingColumns) as raised:
        read_upload(io.BytesIO(f"{header}\nP-1,SK00,x,Ayurveda,2025-01-01\n".encode()), TITLES.get)
    assert raised.value.columns == ["severity", "practitioner_id"]
    assert "severity, practitioner_id" in raised.value.message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\r\n  \n", "empty"),
        (f"{HEADER}\n\n".encode(), "no data rows"),
        (b"SQLite format 3\x00\x10\x00\x01\x01", "binary"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8"),
        (b"PK\x03\x04\x14\x00\x06\x00", "Excel"),
        (f"{HEADER}\n".encode("utf-16"), "UTF-16"),
        (
            f"{HEADER}\n{line()}P-2,SK00,Caf\xe9,Ayurveda,Mild,2025-01-01,PR-1\n".encode("latin-1"),
            "line 3",
        ),
        (
            f'{HEADER}\n{line()}P-2,SK00,"never closed,Ayurveda,Mild,2025-01-01,PR-1\n'.encode(),
            "row 3",
        ),
        (f"{HEADER},{HEADER.split(',')[0]}\n{line()}".encode(), "patient_id is given twice"),
    ],
)
def test_unusable_files_raise_csv_format_error(content: bytes, message: str) -> None:
    with pytest.raises(CSVFormatError, match=message):
        read(content)


def test_row_numbers_are_as_a_spreadsheet_shows_them() -> None:
    multi_line = line(condition_name="Cephalalgia\ndisorder")
    text = f"\n{HEADER}\n{line()}\n{multi_line}{line(severity='bad')}"
    rows = read(text)
    # Row 1 is blank, the header row 2, a blank row 5; the value over two lines is one row.
    assert [row.row for row in rows] == [3, 5, 6]
    assert isinstance(rows[2], InvalidRow)
    assert rows[2].problems[0].row == 6


# --- each rule, on its row and column ------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "column", "message"),
    [
        ({"patient_id": ""}, "patient_id", "patient_id is required"),
        ({"patient_id": "x" * 65}, "patient_id", "longer than 64"),
        ({"patient_id": "P\n1"}, "patient_id", "control character"),
        ({"tm2_code": " "}, "tm2_code", "tm2_code is required"),
        ({"tm2_code": "headache"}, "tm2_code", "'headache' is not a TM2 code"),
        ({"tm2_code": "SK00 / SK01"}, "tm2_code", "several codes in one cell (SK00, SK01)"),
        ({"tm2_code": "sk02"}, "tm2_code", "SK02 is not in the TM2 code list"),
        ({"condition_name": ""}, "condition_name", "condition_name is required"),
        ({"condition_name": "c" * 256}, "condition_name", "longer than 255"),
        ({"system_type": ""}, "system_type", "system_type is required"),
        ({"system_type": "Homeopathy"}, "system_type", "'Homeopathy' is not one of Ayurveda"),
        ({"system_type": "KM"}, "system_type", "'KM' is not one of"),  # Korean or Kampo?
        ({"severity": "Critical"}, "severity", "'Critical' is not one of Mild, Moderate, Severe"),
        ({"diagnosis_date": ""}, "diagnosis_date", "diagnosis_date is required"),
        ({"diagnosis_date": "01/05/2025"}, "diagnosis_date", "not a date written as YYYY-MM-DD"),
        ({"diagnosis_date": "20250501"}, "diagnosis_date", "not a date written as YYYY-MM-DD"),
        ({"diagnosis_date": "2025-02-30"}, "diagnosis_date", "not a date"),
        ({"diagnosis_date": "2026-01-02"}, "diagnosis_date", "in the future"),
        ({"diagnosis_date": "2026-01-02T00:10:00+14:00"}, "diagnosis_date", "in the future"),
        ({"practitioner_id": ""}, "practitioner_id", "practitioner_id is required"),
        ({"practitioner_id": "p" * 65}, "practitioner_id", "longer than 64"),
    ],
)
def test_each_rule_names_the_row_and_column(
    changes: dict[str, str], column: str, message: str
) -> None:
    result = read_one(**changes)
    assert isinstance(result, InvalidRow)
    assert result.row == 2
    [problem] = [p for p in result.problems if p.severity == "error"]
    assert (problem.row, problem.column) == (2, column)
    assert message in problem.message
    assert result.raw == {**GOOD, **changes}


def test_every_problem_of_a_row_is_reported_together() -> None:
    result = read_one(patient_id="", severity="extreme", diagnosis_date="yesterday")
    assert isinstance(result, InvalidRow)
    assert [p.column for p in result.problems] == ["patient_id", "severity", "diagnosis_date"]


def test_values_beyond_the_header_make_the_row_invalid() -> None:
    [result] = read(f"{HEADER}\n{line().rstrip()},Mild,oops\n")
    assert isinstance(result, InvalidRow)
    assert result.problems[0].column is None
    assert "9 values but the header has 7 columns" in result.problems[0].message
    [trailing_empty] = read(f"{HEADER}\n{line().rstrip()},,\n")
    assert isinstance(trailing_empty, ValidRow)


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"system_type": "tcm"}, "system_type", "Traditional Chinese Medicine"),
        ({"system_type": "TKM"}, "system_type", "Korean Medicine"),
        ({"system_type": "korean  MEDICINE"}, "system_type", "Korean Medicine"),
        (
            {"system_type": "traditional-chinese-medicine"},
            "system_type",
            "Traditional Chinese Medicine",
        ),
        ({"system_type": "KAMPO"}, "system_type", "Kampo"),
        ({"severity": "severe"}, "severity", "Severe"),
        ({"severity": " Moderate "}, "severity", "Moderate"),
        (
            {"tm2_code": "SR10 (AAA-2.1)", "condition_name": "Vitiation of vata pattern"},
            "code",
            "SR10",
        ),
        ({"tm2_code": "AAB-3 (SP9Y)", "condition_name": TITLES["SP9Y"]}, "code", "SP9Y"),
        ({"diagnosis_date": "2026-01-01"}, "diagnosis_date", date(2026, 1, 1)),  # today
        ({"diagnosis_date": "2025-05-01T23:30:00-05:00"}, "diagnosis_date", date(2025, 5, 1)),
        ({"diagnosis_date": "2025-05-01 08:00"}, "diagnosis_date", date(2025, 5, 1)),
        ({"patient_id": " \u00a0P-1\u00a0"}, "patient_id", "P-1"),
        ({"patient_id": "\uff30-\uff11"}, "patient_id", "P-1"),  # typed full-width
    ],
)
def test_accepted_spellings_give_the_canonical_value(
    changes: dict[str, str], field: str, value: object
) -> None:
    row = valid(**changes)
    assert getattr(row, field) == value
    assert row.warnings == ()


def test_a_title_other_than_the_official_one_is_a_warning_on_a_valid_row() -> None:
    row = valid(tm2_code="SK01", condition_name="Migraine")
    assert row.warnings == (
        Problem(
            row=2,
            column="condition_name",
            message="'Migraine' is not the official title of SK01: 'Migraine disorder (TM2)'",
            severity="warning",
        ),
    )
    assert row.warnings[0].to_dict()["severity"] == "warning"
    assert valid(tm2_code="SK01", condition_name="MIGRAINE disorder (tm2)").warnings == ()


def test_formula_cells_are_kept_verbatim() -> None:
    formulas = {
        "patient_id": '=HYPERLINK("http://example.org","P-1")',
        "practitioner_id": "+PR-1",
        "condition_name": "@SUM(A1:A2)",
    }
    row = valid(**formulas)
    assert (row.patient_id, row.practitioner_id, row.condition_name) == tuple(formulas.values())
    assert row.raw == {**GOOD, **formulas}
    assert valid(patient_id="-1").patient_id == "-1"


# --- the dedupe key ----------------------------------------------------------------------


def test_the_dedupe_key_is_the_same_however_the_row_is_written() -> None:
    key = valid().dedupe_key
    assert len(key) == 64 and int(key, 16) >= 0
    same = valid(
        patient_id="  P-1 ",
        tm2_code="sk00 (AAA-1)",
        condition_name="Cephalalgia",
        system_type="TCM",
        severity="severe",
        diagnosis_date="2025-05-01T09:30:00+02:00",
        practitioner_id="PR-1\u00a0",
    )
    assert same.dedupe_key == key


@pytest.mark.parametrize(
    "changes",
    [
        {"diagnosis_date": "2025-05-02"},
        {"tm2_code": "SK01", "condition_name": "Migraine disorder"},
        {"patient_id": "P-2"},
        {"patient_id": "p-1"},  # identifiers can be case-sensitive
        {"practitioner_id": "PR-2"},
    ],
)
def test_the_dedupe_key_differs_for_another_diagnosis(changes: dict[str, str]) -> None:
    assert valid(**changes).dedupe_key != valid().dedupe_key


# --- streaming and the seed sample -------------------------------------------------------


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def test_rows_are_yielded_before_the_file_is_read_to_its_end() -> None:
    data = (HEADER + "\n" + line() * 20_000).encode()
    stream = CountingStream(data)
    rows = read_upload(stream, TITLES.get, today=TODAY)
    first = next(rows)
    assert isinstance(first, ValidRow)
    assert stream.bytes_read < len(data) // 4
    assert sum(1 for _ in rows) == 19_999
    assert stream.bytes_read == len(data)


def test_the_sample_upload_has_exactly_the_planted_problems() -> None:
    with (SEEDS / "tm2_codes_sample.csv").open("rb") as stream:
        titles = {code.code: code.title for code in read_code_list(stream)}
    with (SEEDS / "tm2_sample_upload.csv").open("rb") as stream:
        rows = list(read_upload(stream, titles.get, today=TODAY))
    assert len(rows) == 15
    invalid = {
        row.row: [(p.column, p.message) for p in row.problems]
        for row in rows
        if isinstance(row, InvalidRow)
    }
    assert invalid == {
        8: [("tm2_code", "SR99 is not in the TM2 code list")],
        9: [("severity", "severity 'Critical' is not one of Mild, Moderate, Severe")],
    }
    warned = {row.row: row.warnings for row in rows if isinstance(row, ValidRow) and row.warnings}
    assert list(warned) == [10]
    assert [(w.column, w.severity) for w in warned[10]] == [("condition_name", "warning")]
    assert "Bronchial asthma disorder (TM2)" in warned[10][0].message
