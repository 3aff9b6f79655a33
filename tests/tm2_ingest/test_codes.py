"""TM2 codes: their shape, normalisation, the WHO list file, title comparison. No database."""

import io
from pathlib import Path

import pytest

from features.tm2_ingest.codes import (
    TM2_CODE,
    CodeListError,
    TM2Code,
    codes_in,
    normalise_code,
    read_code_list,
    titles_match,
)

ROOT = Path(__file__).resolve().parents[2]
WHO_DIR = ROOT.parent / "shared" / "data" / "icd11-tm2"
WHO_LIST = WHO_DIR / "who_tm2_2026-01.csv"
SEED_LIST = ROOT / "seeds" / "tm2_codes_sample.csv"
HEADER = "code,title,class_kind,foundation_uri,entity_uri,version"

needs_who_list = pytest.mark.skipif(
    not WHO_LIST.is_file(), reason=f"the WHO TM2 code list is not at {WHO_DIR}"
)


def read_list(text: str | bytes) -> list[TM2Code]:
    data = text.encode() if isinstance(text, str) else text
    return list(read_code_list(io.BytesIO(data)))


@pytest.mark.parametrize(
    ("written", "code"),
    [
        ("SK00", "SK00"),
        ("sk00", "SK00"),
        ("  Sp9y \t", "SP9Y"),
        ("\u00a0SR10\u00a0", "SR10"),
        ("\u2007SR10\u202f", "SR10"),
        ("\uff33\uff2b\uff10\uff10", "SK00"),  # full-width, as an East Asian keyboard types it
        ("SK\u200b00", "SK00"),  # a zero-width space pasted in
        ("SR10 (AAA-2.1)", "SR10"),
        ("AAB-3 (SP9Y)", "SP9Y"),
        ("TM2: st0g.", "ST0G"),
        ("SK00 / sk00", "SK00"),  # the same code twice is still one code
    ],
)
def test_normalise_code_finds_the_one_code(written: str, code: str) -> None:
    assert normalise_code(written) == code


@pytest.mark.parametrize(
    "written",
    [
        "",
        "   ",
        "headache",
        "AAA-2.1",
        "8A80",  # ICD-11, but not chapter 26
        "SO00",  # ICD-11 never uses the letter O
        "SK0I",  # nor I
        "SKA0",  # the third character is always a digit
        "SK000",
        "XSK00",
        "SK00.1",  # a finer code than the list has: not cut down to SK00
        "SK00/SK01",
        "SR10 or SR11",
    ],
)
def test_normalise_code_gives_none_without_exactly_one_code(written: str) -> None:
    assert normalise_code(written) is None


def test_codes_in_lists_several_codes_in_order() -> None:
    assert codes_in("sk01 then SK00, then SK01") == ["SK01", "SK00"]


@pytest.mark.parametrize(
    ("given", "official"),
    [
        ("Cephalalgia disorder", "Cephalalgia disorder (TM2)"),
        ("  CEPHALALGIA   disorder ", "Cephalalgia disorder (TM2)"),
        ("Cephalalgia disorder (tm2)", "Cephalalgia disorder (TM2)"),
        ("Cephalalgia disorder TM2", "Cephalalgia disorder (TM2)"),
        ("Headache disorders, unspecified", "Headache disorders (TM2), unspecified"),
        ("Headache disorders unspecified", "Headache disorders (TM2), unspecified"),
        ("Vitiation of vata pattern", "Vitiation of vāta pattern (TM2)"),
        ("Ludwig's angina disorder", "Ludwig’s angina disorder (TM2)"),
        ("Ludwigs angina disorder", "Ludwig’s angina disorder (TM2)"),
        (
            "Gastro intestinal disorders, unspecified",
            "Gastro-intestinal disorders (TM2), unspecified",
        ),
    ],
)
def test_titles_match_ignores_presentation(given: str, official: str) -> None:
    assert titles_match(given, official)


@pytest.mark.parametrize(
    ("given", "official"),
    [
        ("Migraine", "Migraine disorder (TM2)"),
        ("Cephalalgia disorder", "Migraine disorder (TM2)"),
        ("Headache disorders", "Headache disorders (TM2), unspecified"),
        ("", "Migraine disorder (TM2)"),
    ],
)
def test_titles_match_tells_other_words_apart(given: str, official: str) -> None:
    assert not titles_match(given, official)


@needs_who_list
def test_the_who_list_loads_648_codes_of_the_documented_shape() -> None:
    with WHO_LIST.open("rb") as stream:
        codes = list(read_code_list(stream))
    assert len(codes) == 648
    assert len({code.code for code in codes}) == 648
    assert all(TM2_CODE.fullmatch(code.code) for code in codes)
    assert {code.release for code in codes} == {"2026-01"}
    assert codes[0] == TM2Code(
        code="SK00",
        title="Cephalalgia disorder (TM2)",
        foundation_uri="http://id.who.int/icd/entity/1488428775",
        entity_uri="http://id.who.int/icd/release/11/2026-01/mms/1488428775",
        release="2026-01",
    )
    by_code = {code.code: code for code in codes}
    # A residual category has no foundation entity of its own; a quoted title keeps its comma.
    assert by_code["SK0Z"].foundation_uri is None
    assert by_code["SK0Z"].title == "Headache disorders (TM2), unspecified"


@needs_who_list
def test_every_seed_code_is_in_the_who_list_as_it_is_there() -> None:
    with WHO_LIST.open("rb") as stream:
        official = {code.code: code for code in read_code_list(stream)}
    with SEED_LIST.open("rb") as stream:
        seeds = list(read_code_list(stream))
    assert 20 <= len(seeds) <= 30
    for seed in seeds:
        assert official.get(seed.code) == seed


def test_read_code_list_accepts_a_bom_and_skips_grouping_rows() -> None:
    text = (
        f"\ufeff{HEADER}\r\n"
        ",Traditional medicine conditions,chapter,http://id.who.int/icd/entity/1,,2026-01\r\n"
        "BlockL1-SK0,Headache disorders (TM2),block,,,2026-01\r\n"
        "SK00,Cephalalgia disorder (TM2),category,,,2026-01\r\n"
        "\r\n"
    )
    assert read_list(text) == [TM2Code("SK00", "Cephalalgia disorder (TM2)", None, None, "2026-01")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("code,title,version\nSK00,Cephalalgia disorder (TM2),2026-01\n", "class_kind"),
        (f"{HEADER}\nSK00,A (TM2),category,,,2026-01\nSK0O,B (TM2),category,,,2026-01\n", "row 3"),
        (f"{HEADER}\nSK00,A (TM2),category,,,2026-01\nSK00,B (TM2),category,,,2026-01\n", "row 3"),
        (f"{HEADER}\nSK00,,category,,,2026-01\n", "row 2"),
        (f"{HEADER}\nSK00,A (TM2),category,,,\n", "row 2"),
        (f"{HEADER}\nSK00,A (TM2),modifier,,,2026-01\n", "modifier"),
        (f'{HEADER}\nSK00,"A (TM2),category,,,2026-01\n', "row 2"),
    ],
)
def test_read_code_list_names_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(CodeListError, match=message):
        read_list(text)


def test_read_code_list_refuses_text_that_is_not_utf8() -> None:
    text = f"{HEADER}\nSK00,Caf\xe9 (TM2),category,,,2026-01\n".encode("latin-1")
    with pytest.raises(CodeListError, match="UTF-8"):
        read_list(text)
