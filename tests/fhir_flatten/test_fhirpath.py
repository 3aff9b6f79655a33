"""The FHIRPath the view engine understands: syntax, semantics, limits, compile-once."""

import sys

import pytest

from features.fhir_flatten.engine.viewdef import FhirPathError, ViewError, compile_view, parser
from features.fhir_flatten.engine.viewdef.compiler import Compiler, Env

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "active": True,
    "gender": "female",
    "birthDate": "1970-06-15",
    "deceasedDateTime": "2020-01-01T10:00:00Z",
    "name": [
        {"use": "official", "family": "Smith", "given": ["Ann", "Marie"]},
        {"use": "nickname", "family": "Jones"},
    ],
    "extension": [
        {"url": "http://example.org/race", "extension": [{"url": "text", "valueString": "Mixed"}]},
        {"url": "http://example.org/sex", "valueCode": "F"},
    ],
    "managingOrganization": {"reference": "Organization/o1"},
}


def evaluate(expression: str, resource: dict = PATIENT, constants: dict | None = None) -> list:
    compiled = Compiler(constants).expression(expression)
    return compiled([resource], [resource], Env(resource))


# --- syntax -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", [7]),
        ("(1 + 2) * 3", [9]),
        ("10 - 4 - 3", [3]),
        ("2 * 3 div 4", [1]),
        ("1 + 2 = 3", [True]),
        ("1 < 2 = true", [True]),
        ("true or false and false", [True]),
        ("(true or false) and false", [False]),
        ("false implies false or true", [True]),
        ("'a' & 'b' = 'ab'", [True]),
        ("-name.count() + 3", [1]),
        ("name.given.count() > 1 and name.family.count() = 2", [True]),
        ("name[0].given[1]", ["Marie"]),
        ("(1 | 2 | 2).count()", [2]),
        ("2 in (1 | 2)", [True]),
    ],
)
def test_precedence_follows_the_fhirpath_grammar(expression, expected):
    assert evaluate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "position", "reason"),
    [
        ("name.given[0", 12, "expected ']'"),
        ("1 +", 3, "expected an expression"),
        ("name.(given)", 5, "expected a name or function after '.'"),
        ("'unterminated", 0, "unterminated string"),
        ("@@", 0, "invalid date/time literal"),
        ("name # given", 5, "unexpected character '#'"),
        ("1 2", 2, "expected an operator or the end of the expression"),
        ("name.where(use = 'x'", 20, "expected ')'"),
        ("name.foo()", 5, "unknown function 'foo'"),
        ("name.first(1)", 5, "function 'first' takes 0 argument(s), got 1"),
        ("%undefined", 0, "constant %undefined is not defined"),
        ("'\\q'", 1, "unknown escape"),
        ("name.ofType('x')", 12, "'ofType' expects a type name"),
        ("$index", 0, "$index is not supported"),
    ],
)
def test_bad_expressions_are_refused_with_the_position(expression, position, reason):
    with pytest.raises(FhirPathError) as caught:
        evaluate(expression)

    assert caught.value.position == position
    assert reason in caught.value.message
    assert f"position {position}" in caught.value.message
    assert isinstance(caught.value, ViewError)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'it\\'s'", ["it's"]),
        ("'caf\\u00e9'", ["café"]),
        ("'a\\nb'", ["a\nb"]),
        ("name.`family`", ["Smith", "Jones"]),
        ("name.given // a comment", ["Ann", "Marie"]),
        ("name /* inline */ .family.first()", ["Smith"]),
        ("{}", []),
        ("5L + 1", [6]),
    ],
)
def test_literals_escapes_and_comments(expression, expected):
    assert evaluate(expression) == expected


# --- three-valued logic -------------------------------------------------------------------

_T, _F, _E = "true", "false", "{}"


@pytest.mark.parametrize(
    ("left", "operator", "right", "expected"),
    [
        (_T, "and", _E, []),
        (_F, "and", _E, [False]),
        (_E, "and", _E, []),
        (_T, "and", _T, [True]),
        (_T, "or", _E, [True]),
        (_F, "or", _E, []),
        (_E, "or", _F, []),
        (_F, "or", _F, [False]),
        (_T, "xor", _E, []),
        (_T, "xor", _F, [True]),
        (_T, "xor", _T, [False]),
        (_E, "implies", _T, [True]),
        (_E, "implies", _F, []),
        (_F, "implies", _E, [True]),
        (_T, "implies", _E, []),
        (_T, "implies", _F, [False]),
    ],
)
def test_boolean_operators_use_three_valued_logic(left, operator, right, expected):
    assert evaluate(f"{left} {operator} {right}") == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("{}.not()", []),
        ("active.not()", [False]),
        ("(gender = 'male').not()", [True]),
        ("deceased.ofType(boolean).not()", []),
        ("active = {}", []),
        ("{} != {}", []),
    ],
)
def test_empty_propagates(expression, expected):
    assert evaluate(expression) == expected


# --- equality, comparison, arithmetic -----------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 = 1.0", [True]),
        ("true = 1", [False]),
        ("'1' = 1", [False]),
        ("name.family = 'Smith'", [False]),  # two items against one
        ("name.family = ('Smith' | 'Jones')", [True]),
        ("'A  b' ~ 'a B'", [True]),
        ("birthDate = @1970-06-15", [True]),
        ("birthDate = @1970-06", []),  # different precisions: unknown
        ("birthDate < @1971", [True]),
        ("birthDate > @1970-06-15T10:00", []),
        ("@2020-01-01T10:00:00Z = @2020-01-01T11:00:00+01:00", [True]),
        ("@2012-04-15T15:00:00Z < @2012-04-15T10:00:00-07:00", [True]),
        ("@T10:00 < @T11:00", [True]),
        ("@T10:00:00 = @T10:00:00.000", [True]),
        ("'abc' < 'abd'", [True]),
    ],
)
def test_equality_and_comparison(expression, expected):
    assert evaluate(expression) == expected


def test_comparing_many_items_or_unrelated_types_is_an_error():
    with pytest.raises(ViewError, match="single items"):
        evaluate("name.family > 'A'")
    with pytest.raises(ViewError, match="cannot compare"):
        evaluate("1 < 'a'")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("7 div 2", [3]),
        ("-7 div 2", [-3]),
        ("7 mod 3", [1]),
        ("-7 mod 3", [-1]),
        ("7 / 2", [3.5]),
        ("1 / 0", []),
        ("1 div 0", []),
        ("0.1 + 0.2 = 0.3", [True]),
        ("1.5 * 2", [3.0]),
        ("'a' + 'b'", ["ab"]),
        ("'a' + {}", []),
        ("'a' & {}", ["a"]),
        ("-(2 + 3)", [-5]),
        ("5 - -3", [8]),
    ],
)
def test_arithmetic(expression, expected):
    assert evaluate(expression) == expected


def test_arithmetic_on_strings_and_numbers_is_an_error():
    with pytest.raises(ViewError, match="cannot compute"):
        evaluate("'a' - 1")


# --- paths, choice types, functions -------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Patient.name.family", ["Smith", "Jones"]),
        ("Observation.id", []),
        ("deceased", ["2020-01-01T10:00:00Z"]),  # a choice element read whatever its type
        ("deceased.ofType(dateTime)", ["2020-01-01T10:00:00Z"]),
        ("deceased.ofType(boolean)", []),
        ("deceased.ofType(FHIR.dateTime)", ["2020-01-01T10:00:00Z"]),
        ("deceased is dateTime", [True]),
        ("deceased is boolean", [False]),
        ("(deceased as dateTime).exists()", [True]),
        ("gender.ofType(code)", ["female"]),  # not a choice: judged from the value
        ("active.ofType(boolean)", [True]),
        ("name.ofType(HumanName).count()", [2]),
        ("extension('http://example.org/sex').value.ofType(code)", ["F"]),
        ("extension('http://example.org/race').extension('text').value", ["Mixed"]),
        ("name.where(use = 'official').given.join(', ')", ["Ann, Marie"]),
        ("name.given.where($this = 'Marie')", ["Marie"]),
        ("name.exists(family = 'Jones')", [True]),
        ("name.all(family.exists())", [True]),
        ("name.select(given).count()", [2]),
        ("name.first().given.last()", ["Marie"]),
        ("name.tail().family", ["Jones"]),
        ("name.given.distinct().count()", [2]),
        ("iif(active, 'yes', 'no')", ["yes"]),
        ("name[5].family", []),
        ("getResourceKey()", ["p1"]),
        ("managingOrganization.getReferenceKey()", ["o1"]),
        ("managingOrganization.getReferenceKey(Organization)", ["o1"]),
        ("managingOrganization.getReferenceKey(Patient)", []),
        ("'abc'.substring(1).upper()", ["BC"]),
        ("'a,b'.split(',').count()", [2]),
        ("'12'.toInteger() + 1", [13]),
        ("1.5.toString()", ["1.5"]),
        ("%rowIndex", [0]),
        ("%resource.id", ["p1"]),
    ],
)
def test_paths_and_functions(expression, expected):
    assert evaluate(expression) == expected


QUESTIONNAIRE_RESPONSE = {
    "resourceType": "QuestionnaireResponse",
    "item": [{"linkId": "1", "item": [{"linkId": "1.1"}, {"linkId": "1.2"}]}, {"linkId": "2"}],
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("repeat(item).linkId", ["1", "2", "1.1", "1.2"]),
        ("repeat($this).count()", [1]),  # gives its own input: ends, nothing added twice
        ("('a' | 'b').repeat('a' | 'b')", ["a", "b"]),
    ],
)
def test_repeat_walks_the_tree_and_always_ends(expression, expected):
    assert evaluate(expression, QUESTIONNAIRE_RESPONSE) == expected


@pytest.mark.parametrize(
    ("reference", "wanted", "expected"),
    [
        ({"reference": "Patient/123"}, None, ["123"]),
        ({"reference": "http://example.org/fhir/Patient/123/_history/4"}, "Patient", ["123"]),
        ({"reference": "Patient/123"}, "Group", []),
        ({"reference": "urn:uuid:0b2c"}, "Patient", ["0b2c"]),  # bundle reference, type unknown
        ({"reference": "urn:uuid:0b2c", "type": "Group"}, "Patient", []),
        ({"reference": "#contained"}, None, []),
        ({"reference": "Patient?identifier=x|1"}, None, []),
        ({"display": "no reference"}, None, []),
    ],
)
def test_reference_keys(reference, wanted, expected):
    resource = {"resourceType": "Observation", "id": "o", "subject": reference}
    argument = wanted or ""
    assert evaluate(f"subject.getReferenceKey({argument})", resource) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1.0.lowBoundary()", [0.95]),
        ("1.0.highBoundary()", [1.05]),
        ("1.587.lowBoundary()", [1.5865]),
        ("-1.587.lowBoundary()", [-1.5875]),  # a negative literal, as in the FHIRPath spec
        ("1.587.highBoundary(2)", [1.59]),
        ("1.587.lowBoundary(2)", [1.58]),
        ("1.lowBoundary()", [0.5]),
        ("@2014.lowBoundary(6)", ["2014-01"]),
        ("@2014.highBoundary(6)", ["2014-12"]),
        ("@1970-06.highBoundary()", ["1970-06-30"]),
        ("@2024-02.highBoundary()", ["2024-02-29"]),
        ("@2010-10-10T.lowBoundary()", ["2010-10-10T00:00:00.000+14:00"]),
        ("@2010-10-10T.highBoundary()", ["2010-10-10T23:59:59.999-12:00"]),
        ("@2014-01-01T08.highBoundary(17)", ["2014-01-01T08:59:59.999-12:00"]),
        ("@2014-01-01T08:05+02:00.lowBoundary()", ["2014-01-01T08:05:00.000+02:00"]),
        ("@T10:30.lowBoundary()", ["10:30:00.000"]),
        ("@T10:30.highBoundary()", ["10:30:59.999"]),
        ("@T12:34:00.highBoundary()", ["12:34:00.999"]),
        ("birthDate.lowBoundary()", ["1970-06-15"]),
        ("deceased.ofType(dateTime).lowBoundary()", ["2020-01-01T10:00:00.000Z"]),
        ("'text'.lowBoundary()", []),
        ("1.0.lowBoundary(3)", [0.95]),
    ],
)
def test_boundaries(expression, expected):
    assert evaluate(expression) == expected


def test_constants_are_typed_by_their_value():
    constants = {"bd": [parser.temporal.FhirDate("1970-06-15")], "n": [1]}

    assert evaluate("birthDate = %bd", constants=constants) == [True]
    assert evaluate("name[%n].family", constants=constants) == ["Jones"]


def test_typed_dates_come_out_of_a_view_as_plain_strings():
    view = compile_view(
        {
            "resource": "Patient",
            "select": [
                {
                    "column": [
                        {"name": "at", "path": "deceased.ofType(dateTime)"},
                        {"name": "low", "path": "birthDate.lowBoundary()"},
                        {"name": "many", "path": "@2020 | @2021", "collection": True},
                    ]
                }
            ],
        }
    )

    [row] = view.rows(PATIENT)

    assert row == ("2020-01-01T10:00:00Z", "1970-06-15", ["2020", "2021"])
    assert {type(row[0]), type(row[1]), type(row[2][0])} == {str}


# --- limits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "(" * 10_000 + "1" + ")" * 10_000,
        "+".join(["1"] * 10_000),
        "-" * 10_000 + "1",
        ".".join(["name"] * 10_000),
        "where(" * 5_000 + "true" + ")" * 5_000,  # 5,000: 10,000 is over the length limit
        " and ".join(["true"] * 5_000),
        "name" + "[0]" * 10_000,
    ],
    ids=["parentheses", "sum", "negations", "path", "calls", "and", "indexers"],
)
def test_an_expression_10000_levels_deep_is_refused_cleanly(expression):
    with pytest.raises(FhirPathError, match=f"nested more than {parser.MAX_DEPTH} levels"):
        evaluate(expression)


def test_an_overlong_expression_is_refused_before_it_is_parsed():
    with pytest.raises(FhirPathError, match=f"longer than {parser.MAX_LENGTH} characters"):
        evaluate("where(" * 10_000 + "true" + ")" * 10_000)


def test_the_nesting_limit_is_exact():
    limit = parser.MAX_DEPTH

    assert evaluate("(" * limit + "1" + ")" * limit) == [1]
    with pytest.raises(FhirPathError):
        evaluate("(" * (limit + 1) + "1" + ")" * (limit + 1))


def test_a_deep_view_path_is_a_view_error_with_its_location():
    view = {
        "resource": "Patient",
        "select": [{"column": [{"name": "x", "path": "(" * 10_000 + "1" + ")" * 10_000}]}],
    }

    with pytest.raises(ViewError) as caught:
        compile_view(view)

    assert caught.value.location == "select[0].column[0].path"
    assert "nested more than" in caught.value.message


def test_the_deepest_allowed_expression_runs_even_from_a_deep_stack():
    """Within the limit it runs; if the caller's stack is nearly full it is a ViewError."""
    depth = parser.MAX_DEPTH - 1
    path = "exists(" * depth + "true" + ")" * depth
    view = compile_view(
        {"resource": "Patient", "select": [{"column": [{"name": "x", "path": path}]}]}
    )

    assert view.rows(PATIENT) == [(True,)]

    def from_deep_stack(levels: int):
        return from_deep_stack(levels - 1) if levels else view.rows(PATIENT)

    with pytest.raises(ViewError, match="nested too deeply"):
        from_deep_stack(sys.getrecursionlimit() - 300)


# --- compiled once ------------------------------------------------------------------------


def test_paths_are_parsed_when_the_view_is_compiled_never_per_resource(monkeypatch):
    calls = []
    original = parser._Parser.parse

    def counting(self):
        calls.append(self.source)
        return original(self)

    monkeypatch.setattr(parser._Parser, "parse", counting)
    view = compile_view(
        {
            "resource": "Patient",
            "where": [{"path": "active"}],
            "select": [
                {
                    "column": [
                        {"name": "id", "path": "getResourceKey()"},
                        {"name": "family", "path": "name.where(use = 'official').family"},
                    ]
                },
                {"forEach": "name.given", "column": [{"name": "given", "path": "$this"}]},
            ],
        }
    )
    parsed_at_compile = len(calls)
    resources = [{**PATIENT, "id": f"p{i}"} for i in range(10_000)]

    rows = list(view.run(resources))

    assert parsed_at_compile == 5  # the where, two columns, the forEach, its column
    assert len(calls) == parsed_at_compile
    assert len(rows) == 20_000
    assert rows[1] == {"id": "p0", "family": "Smith", "given": "Marie"}
