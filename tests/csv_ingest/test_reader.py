"""Reading and validating patient CSV uploads: no database, no network."""

import io
import json
import tracemalloc
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from features.csv_ingest.reader import (
    MAX_CELL_CHARS,
    CSVFormatError,
    MissingColumns,
    ObservationValue,
    ParsedRow,
    RowError,
    detect_delimiter,
    read_csv,
)

TODAY = date(2024, 6, 1)
HEADER = (
    "patient_id,given_name,family_name,birth_date,gender,conditions,observations,observation_date"
)
SAMPLE = Path(__file__).resolve().parents[2] / "seeds" / "sample_patients.csv"


def read(text: str | bytes, today: date = TODAY) -> list[ParsedRow | RowError]:
    data = text.encode() if isinstance(text, str) else text
    return list(read_csv(io.BytesIO(data), today=today))


def read_one(row: str) -> ParsedRow | RowError:
    [result] = read(f"{HEADER}\n{row}\n")
    return result


def parsed(row: str) -> ParsedRow:
    result = read_one(row)
    assert isinstance(result, ParsedRow), result
    return result


def errors(row: str) -> list[tuple[str | None, str]]:
    result = read_one(row)
    assert isinstance(result, RowError), result
    return [(problem.column, problem.message) for problem in result.problems]


def format_error(data: str | bytes) -> str:
    with pytest.raises(CSVFormatError) as raised:
        read(data)
    return raised.value.message


# --- header, delimiters, encoding ---------------------------------------------------------


def test_a_full_row_is_read_into_typed_values():
    row = parsed(
        'P1,Ann,Lee,1980-02-03,F,"Hypertension;Asthma",'
        '"Body weight=72.50 kg;Blood pressure=120/80 mmHg",2024-05-01'
    )
    assert row.row == 2
    assert (row.patient_id, row.given_name, row.family_name) == ("P1", "Ann", "Lee")
    assert row.birth_date == date(1980, 2, 3)
    assert row.gender == "female"
    assert row.conditions == ["Hypertension", "Asthma"]
    assert row.observations == [
        ObservationValue("Body weight", Decimal("72.50"), "kg"),
        ObservationValue("Blood pressure", None, "mmHg", Decimal("120"), Decimal("80")),
    ]
    assert row.observation_date == date(2024, 5, 1)


@pytest.mark.parametrize(
    "header",
    [
        "ID,First Name,Last Name,DOB,Sex",
        "MRN,firstname,lastname,Date of Birth,sex",
        "Patient-ID,Forename,Surname,Birthdate,SEX",
        "  patient id , given , family , date_of_birth , gender ",
        "Patient ID,First_Name,Last-Name,D.O.B.,Gender",
    ],
)
def test_common_header_aliases_are_recognised(header):
    [row] = read(f"{header}\nP1,Ann,Lee,1980-02-03,f\n")
    assert isinstance(row, ParsedRow)
    assert (row.patient_id, row.given_name, row.family_name) == ("P1", "Ann", "Lee")
    assert (row.birth_date, row.gender) == (date(1980, 2, 3), "female")


def test_optional_column_aliases_are_recognised():
    [row] = read(
        "id,first_name,last_name,dob,sex,Diagnoses,Vitals,Visit Date\n"
        "P1,Ann,Lee,1980-02-03,f,Asthma,Heart rate=80 /min,2024-01-02\n"
    )
    assert isinstance(row, ParsedRow)
    assert row.conditions == ["Asthma"]
    assert row.observations[0].name == "Heart rate"
    assert row.observation_date == date(2024, 1, 2)


def test_a_byte_order_mark_does_not_hide_the_first_column():
    [row] = read(b"\xef\xbb\xbf" + f"{HEADER}\nP1,Ann,Lee,,,,,\n".encode())
    assert isinstance(row, ParsedRow)
    assert row.patient_id == "P1"


def test_semicolon_delimited_file_with_quoted_lists():
    text = (
        "patient_id;given_name;family_name;birth_date;gender;conditions;observations;"
        "observation_date\r\n"
        'P1;Ann;Lee;1980-02-03;female;"Hypertension;Asthma";"Heart rate=80 /min";2024-01-02\r\n'
    )
    reader = read_csv(io.BytesIO(text.encode()), today=TODAY)
    assert reader.delimiter == ";"
    [row] = list(reader)
    assert isinstance(row, ParsedRow)
    assert row.conditions == ["Hypertension", "Asthma"]
    assert row.observations == [ObservationValue("Heart rate", Decimal(80), "/min")]


def test_tab_delimited_file_with_commas_inside_values():
    text = HEADER.replace(",", "\t") + "\nP1\tAnn, Marie\tLee\t\t\tAsthma\t\t\n"
    reader = read_csv(io.BytesIO(text.encode()), today=TODAY)
    assert reader.delimiter == "\t"
    [row] = list(reader)
    assert isinstance(row, ParsedRow)
    assert row.given_name == "Ann, Marie"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("a,b,c", ","),
        ("a;b;c", ";"),
        ("a\tb\tc", "\t"),
        ("a;b,c", ","),  # a tie goes to the comma
        ('"a,b,c";d;e', ";"),  # delimiters inside quotes do not count
        ("single", ","),
    ],
)
def test_delimiter_is_the_most_frequent_outside_quotes(header, expected):
    assert detect_delimiter(header) == expected


def test_quoted_values_may_hold_delimiters_quotes_and_line_breaks():
    text = f'{HEADER}\nP1,"Ann ""Nan"", Marie",Lee,,,"Hypertension\nAsthma",,\nP2,Bob,Ray,,,,,\n'
    first, second = read(text)
    assert isinstance(first, ParsedRow)
    assert first.given_name == 'Ann "Nan", Marie'
    # A line break inside a cell (Alt+Enter in a spreadsheet) separates items like ";".
    assert first.conditions == ["Hypertension", "Asthma"]
    # Row numbers count records, as a spreadsheet does, not physical lines.
    assert (first.row, second.row) == (2, 3)


def test_unknown_columns_are_ignored_with_one_warning():
    reader = read_csv(
        io.BytesIO(f"{HEADER},Favourite colour\nP1,Ann,Lee,,,,,,blue\n".encode()), today=TODAY
    )
    [row] = list(reader)
    assert isinstance(row, ParsedRow)
    assert [(w.row, w.column, w.severity) for w in reader.warnings] == [
        (1, "Favourite colour", "warning")
    ]


def test_missing_required_columns_are_named():
    with pytest.raises(MissingColumns) as raised:
        read("patient_id,first_name,last_name\nP1,Ann,Lee\n")
    assert raised.value.columns == ["birth_date", "gender"]
    assert "birth_date, gender" in raised.value.message


def test_a_column_given_twice_under_two_names_is_refused():
    message = format_error("patient_id,first_name,given_name,family_name,dob,sex\nP1,A,B,C,,\n")
    assert "duplicate columns" in message
    assert "given_name" in message


@pytest.mark.parametrize(
    "data",
    [b"", b"\n\n", HEADER.encode(), f"{HEADER}\n".encode(), f"{HEADER}\n\n,,,,,,,\n\n".encode()],
)
def test_an_empty_or_header_only_file_has_no_data_rows(data):
    assert format_error(data) == "the file has no data rows"


def test_nul_bytes_are_binary_content_and_say_where():
    message = format_error(f"{HEADER}\nP1,Ann,Lee,,,,,\nP2,Bo\x00b,Ray,,,,,\n".encode())
    assert "binary" in message
    assert "line 3" in message


def test_an_image_is_not_csv():
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"
    with pytest.raises(CSVFormatError):
        read(png)


def test_text_in_another_encoding_is_not_utf8_and_the_line_is_named():
    data = f"{HEADER}\nP1,Ann,Lee,,,,,\nP2,Zoë,Ray,,,,,\n".encode("latin-1")
    assert format_error(data) == "not UTF-8 text (line 3); save it as CSV UTF-8"


def test_utf16_text_is_named_as_such():
    assert "UTF-16" in format_error(f"{HEADER}\nP1,Ann,Lee,,,,,\n".encode("utf-16"))


def test_a_decoding_error_far_down_the_file_comes_after_the_rows_before_it():
    good = "".join(f"P{i},Ann,Lee,,,,,\n" for i in range(20_000))
    data = f"{HEADER}\n{good}".encode() + b"P-bad,Zo\xeb,Ray,,,,,\n"
    reader = read_csv(io.BytesIO(data), today=TODAY)
    seen = []
    with pytest.raises(CSVFormatError) as raised:
        for row in reader:
            seen.append(row)
    assert len(seen) > 1000
    assert raised.value.message == f"not UTF-8 text (line {20_002}); save it as CSV UTF-8"


@pytest.mark.parametrize(
    "data", ['"patient_id,given_name\nP1,Ann\n', '"patient_id"x,given_name\nP1,Ann\n']
)
def test_a_header_that_is_not_csv_is_refused(data):
    assert format_error(data).startswith("the header")


def test_a_quote_left_open_in_a_row_is_refused_with_its_row():
    message = format_error(f'{HEADER}\nP1,Ann,Lee,,,,,\nP2,"Bob,Ray,,,,,\nP3,C,D,,,,,\n')
    assert message == "row 3: a quoted value is never closed"


def test_an_oversized_value_is_refused():
    message = format_error(f"{HEADER}\nP1,{'A' * (MAX_CELL_CHARS + 1)},Lee,,,,,\n")
    assert "row 2" in message
    assert "longer than" in message


def test_too_many_columns_are_refused():
    assert "columns" in format_error(HEADER + ",x" * 300 + "\nP1,Ann,Lee,,,,,\n")


def test_lone_carriage_returns_end_lines_too():
    rows = read(f"{HEADER}\rP1,Ann,Lee,,,,,\rP2,Bob,Ray,,,,,\r")
    assert [row.patient_id for row in rows if isinstance(row, ParsedRow)] == ["P1", "P2"]


# --- rows ---------------------------------------------------------------------------------


def test_blank_lines_are_skipped_but_keep_their_row_numbers():
    rows = read(f"{HEADER}\nP1,Ann,Lee,,,,,\n\n,,,,,,,\nP2,Bob,Ray,,,,,\n")
    assert [(row.row, row.patient_id) for row in rows] == [(2, "P1"), (5, "P2")]


def test_bad_cells_make_that_row_an_error_and_good_rows_pass():
    rows = read(
        f"{HEADER}\n"
        "P1,Ann,Lee,1980-02-03,female,,,\n"
        "P2,Bob,Ray,03/02/1980,female,,,\n"
        "P3,Cy,Day,1980-02-03,yes,,,\n"
        "P4,Di,Eve,1980-02-03,f,,Body weight=heavy kg,2024-01-01\n"
        "P5,Ed,Fox,1980-02-03,m,,,\n"
    )
    assert [type(row).__name__ for row in rows] == [
        "ParsedRow",
        "RowError",
        "RowError",
        "RowError",
        "ParsedRow",
    ]
    found = [(p.row, p.column) for row in rows if isinstance(row, RowError) for p in row.problems]
    assert found == [(3, "birth_date"), (4, "gender"), (5, "observations")]
    assert "'heavy kg' is not a number" in rows[3].problems[0].message
    assert "Body weight" in rows[3].problems[0].message


def test_a_row_error_keeps_the_cells_as_read():
    result = read_one("P1,Ann,Lee,1980-13-01, F ,,,")
    assert isinstance(result, RowError)
    assert result.row == 2
    assert result.cells["birth_date"] == "1980-13-01"
    assert result.cells["gender"] == " F "
    assert result.to_json()["problems"][0] == {
        "row": 2,
        "column": "birth_date",
        "message": "'1980-13-01' is not a real date or time",
        "severity": "error",
    }


def test_all_problems_of_a_row_are_reported():
    assert [column for column, _ in errors(",,,1980-02-30,x,,,")] == [
        "patient_id",
        "given_name",
        "birth_date",
        "gender",
    ]


@pytest.mark.parametrize(
    ("cells", "column"),
    [
        ("P" * 65 + ",Ann,Lee,,", "patient_id"),
        ("P1," + "A" * 101 + ",Lee,,", "given_name"),
        ("P1,Ann," + "L" * 101 + ",,", "family_name"),
        ("P1,Ann,Lee,1980-2-3,", "birth_date"),
        ("P1,Ann,Lee,2024-06-02,", "birth_date"),
        ("P1,Ann,Lee,,man", "gender"),
    ],
)
def test_identity_cells_are_checked(cells, column):
    assert [c for c, _ in errors(cells + ",,,")] == [column]


def test_one_of_the_names_is_enough():
    assert parsed("P1,,Lee,,,,,").given_name is None
    assert parsed("P1,Ann,,,,,,").family_name is None


@pytest.mark.parametrize(
    ("written", "gender"),
    [("M", "male"), ("f", "female"), ("O", "other"), ("u", "unknown"), ("FEMALE", "female")],
)
def test_gender_letters_and_any_case_are_accepted(written, gender):
    assert parsed(f"P1,Ann,Lee,,{written},,,").gender == gender


def test_a_birth_date_of_today_is_fine_and_tomorrow_is_in_the_future():
    assert parsed("P1,Ann,Lee,2024-06-01,,,,").birth_date == TODAY
    assert "future" in errors("P1,Ann,Lee,2024-06-02,,,,")[0][1]


def test_conditions_are_trimmed_without_empties_or_repeats():
    row = parsed('P1,Ann,Lee,,," Asthma ;; Hypertension;Asthma;",,')
    assert row.conditions == ["Asthma", "Hypertension"]


def test_an_overlong_condition_is_an_error():
    assert errors(f"P1,Ann,Lee,,,{'x' * 201},,")[0][0] == "conditions"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("72 kg", ObservationValue("W", Decimal("72"), "kg")),
        ("72kg", ObservationValue("W", Decimal("72"), "kg")),
        ("-1.50", ObservationValue("W", Decimal("-1.50"), None)),
        ("+.5 mmol/L", ObservationValue("W", Decimal("0.5"), "mmol/L")),
        ("80 /min", ObservationValue("W", Decimal("80"), "/min")),
        ("80/min", ObservationValue("W", Decimal("80"), "/min")),
        ("37.2°C", ObservationValue("W", Decimal("37.2"), "°C")),
        ("7.1 10*3/uL", ObservationValue("W", Decimal("7.1"), "10*3/uL")),
        ("120/80", ObservationValue("W", None, None, Decimal(120), Decimal(80))),
        ("120 / 80 mmHg", ObservationValue("W", None, "mmHg", Decimal(120), Decimal(80))),
        ("120/80mmHg", ObservationValue("W", None, "mmHg", Decimal(120), Decimal(80))),
    ],
)
def test_observation_values_and_units(written, expected):
    [item] = parsed(f"P1,Ann,Lee,,,,W={written},2024-01-01").observations
    assert item == expected
    assert item.value is None or isinstance(item.value, Decimal)


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("Body weight", "not written as name=value unit"),
        ("=72 kg", "not written as name=value unit"),
        ("Body weight=", "has no value"),
        ("Body weight=heavy", "'heavy' is not a number"),
        ("Body weight=72,5 kg", "use '.' for decimals"),
        ("Body weight=1/2/3", "not a number"),
        ("Body weight=72 " + "k" * 31, "unit longer than 30"),
        ("Heart rate=80;heart rate=82", "given twice"),
    ],
)
def test_bad_observations_are_errors_naming_the_item(written, message):
    [(column, text)] = errors(f'P1,Ann,Lee,,,,"{written}",2024-01-01')
    assert column == "observations"
    assert message in text


def test_observation_date_is_required_with_observations():
    assert errors("P1,Ann,Lee,,,,Heart rate=80,") == [
        ("observation_date", "observation_date is required when observations are given")
    ]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2024-05-01", date(2024, 5, 1)),
        ("2024-05-01T10:30", datetime(2024, 5, 1, 10, 30)),
        ("2024-05-01 10:30:15", datetime(2024, 5, 1, 10, 30, 15)),
        ("2024-05-01T10:30:00Z", datetime(2024, 5, 1, 10, 30, tzinfo=UTC)),
        ("2024-06-01T23:59:00+02:00", datetime.fromisoformat("2024-06-01T23:59:00+02:00")),
    ],
)
def test_observation_date_is_a_date_or_a_date_time(written, expected):
    observed = parsed(f"P1,Ann,Lee,,,,Heart rate=80,{written}").observation_date
    assert observed == expected
    assert type(observed) is type(expected)


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("2024-06-02", "future"),
        ("2024-06-02T00:01:00+14:00", "future"),
        ("01/05/2024", "not a date"),
        ("2024-05-01T25:00", "not a real date or time"),
        ("20240501", "not a date"),
        ("1979-12-31", "before the birth date"),
    ],
)
def test_bad_observation_dates_are_errors(written, message):
    [(column, text)] = errors(f"P1,Ann,Lee,1980-01-01,,,Heart rate=80,{written}")
    assert column == "observation_date"
    assert message in text


def test_today_defaults_to_the_real_date():
    rows = list(read_csv(io.BytesIO(f"{HEADER}\nP1,Ann,Lee,2999-01-01,,,,\n".encode())))
    assert isinstance(rows[0], RowError)


@pytest.mark.parametrize(
    "formula", ['=HYPERLINK("http://x","y")', "+1+2", "-2+3", "@SUM(A1:A2)", "=1+1"]
)
def test_formula_like_cells_are_kept_verbatim(formula):
    quoted = '"' + formula.replace('"', '""') + '"'
    row = parsed(f"P1,{quoted},Lee,,,{quoted},,")
    assert row.given_name == formula
    assert row.conditions == [formula]


def test_filled_cells_beyond_the_header_make_the_row_an_error():
    problems = errors("P1,Lee, Jr.,Ann,,,Asthma,,2024-01-01")
    shifted = "9 values but the header has 8 columns (an unquoted delimiter inside a value?)"
    assert (None, shifted) in problems
    # Empty trailing cells are what spreadsheets write: not an error.
    assert isinstance(read_one("P1,Ann,Lee,,,,,,,,"), ParsedRow)


def test_short_rows_read_missing_cells_as_empty():
    assert parsed("P1,Ann,Lee").conditions == []


# --- JSON round trip ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "observation_date",
    ["2024-05-01", "2024-05-01T10:30:00", "2024-05-01T10:30:00.250+05:30", "2024-05-01T10:30Z"],
)
def test_rows_round_trip_through_json_exactly(observation_date):
    row = parsed(
        'P1,=HYPERLINK("x"),Lee,1980-02-03,u,"Asthma;Zorblax",'
        f'"Body weight=72.50 kg;Blood pressure=120.0/80;Ratio=-0.0",{observation_date}'
    )
    stored = json.loads(json.dumps(row.to_json()))
    assert stored["observations"][0]["value"] == "72.50"
    back = ParsedRow.from_json(stored)
    assert back == row
    assert back.to_json() == row.to_json()
    assert type(back.observation_date) is type(row.observation_date)


def test_a_row_without_optional_values_round_trips():
    row = parsed("P1,,Lee,,,,,")
    assert ParsedRow.from_json(json.loads(json.dumps(row.to_json()))) == row


# --- streaming and the sample file --------------------------------------------------------


class GeneratedCSV(io.RawIOBase):
    """A byte stream produced row by row, never held whole: as an upload arriving."""

    def __init__(self, rows: int) -> None:
        self._lines = self._generate(rows)
        self._buffer = b""
        self.exhausted = False

    @staticmethod
    def _generate(rows: int):
        yield (HEADER + "\n").encode()
        for i in range(rows):
            yield (
                f"P{i:06d},Ann,Lee,1980-02-03,female,Hypertension;Asthma,"
                f"Body weight=72 kg;Heart rate={60 + i % 40} /min,2024-01-02\n"
            ).encode()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while len(self._buffer) < len(buffer) and not self.exhausted:
            try:
                self._buffer += next(self._lines)
            except StopIteration:
                self.exhausted = True
        size = min(len(buffer), len(self._buffer))
        buffer[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def test_the_first_row_comes_before_the_stream_is_read_to_the_end():
    stream = GeneratedCSV(200_000)
    reader = read_csv(stream, today=TODAY)
    first = next(reader)
    assert isinstance(first, ParsedRow)
    assert first.patient_id == "P000000"
    assert not stream.exhausted


def peak_memory_reading(rows: int) -> int:
    stream = GeneratedCSV(rows)
    tracemalloc.start()
    try:
        count = sum(1 for row in read_csv(stream, today=TODAY) if isinstance(row, ParsedRow))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (count, stream.exhausted) == (rows, True)
    return peak


def test_memory_does_not_grow_with_the_file():
    # tracemalloc makes reading ~10x slower, hence files of 330 kB and 1.3 MB, not 200,000 rows;
    # holding the rows would cost several MB for the larger one.
    small = peak_memory_reading(3_000)
    large = peak_memory_reading(12_000)
    assert large < 1024 * 1024, f"peak {large} bytes"
    assert large < small * 1.25, f"peak {small} bytes for 3,000 rows, {large} for 12,000"


def test_the_sample_file_reads_without_errors():
    with SAMPLE.open("rb") as stream:
        reader = read_csv(stream)
        rows = list(reader)
    assert reader.delimiter == ","
    assert reader.warnings == []
    assert [row for row in rows if isinstance(row, RowError)] == []
    assert len(rows) >= 12
    assert len({row.patient_id for row in rows}) == len(rows)
    assert any(item.is_pair for row in rows for item in row.observations)
