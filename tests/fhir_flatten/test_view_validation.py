"""Views the engine refuses (with the reason and the place in the view), and the shape of what
a valid view gives."""

import copy

import pytest

from features.fhir_flatten.engine.viewdef import Column, CompiledView, ViewError, compile_view

VALID = {
    "resourceType": "ViewDefinition",
    "name": "patient_names",
    "resource": "Patient",
    "constant": [{"name": "official", "valueCode": "official"}],
    "where": [{"path": "active"}],
    "select": [
        {"column": [{"name": "id", "path": "getResourceKey()", "type": "id"}]},
        {
            "forEachOrNull": "name",
            "column": [
                {"name": "family", "path": "family", "type": "string", "description": "Surname"},
                {"name": "given", "path": "given", "type": "string", "collection": True},
                {"name": "is_official", "path": "use = %official", "type": "boolean"},
            ],
        },
    ],
}


def _view(**changes) -> dict:
    """VALID with some parts replaced; a value of None removes the key."""
    view = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            view.pop(key, None)
        else:
            view[key] = value
    return view


def _column(**column) -> dict:
    return {"column": [{"name": "c", "path": "id", **column}]}


@pytest.mark.parametrize(
    ("view", "location", "reason"),
    [
        ([], "", "must be a JSON object"),
        ({}, "resource", "must name the resource type"),
        (_view(resource=None), "resource", "must name the resource type"),
        (_view(resource="patient"), "resource", "is not a FHIR resource type"),
        (_view(resource=["Patient"]), "resource", "is not a FHIR resource type"),
        (_view(resourceType="Patient"), "resourceType", "must be 'ViewDefinition'"),
        (_view(name="patient names"), "name", "is not a valid view name"),
        (_view(select=None), "select", "is required"),
        (_view(select=[]), "select", "non-empty list"),
        (_view(select={"column": []}), "select", "non-empty list"),
        (_view(column=[{"name": "id", "path": "id"}]), "column", "belongs inside a select"),
        (_view(select=[{}]), "select[0]", "needs a column, a select or a unionAll"),
        (_view(select=[{"colum": []}]), "select[0]", "unknown key(s) 'colum'"),
        (_view(select=[{"forEach": 1, **_column()}]), "select[0].forEach", "(a string), not int"),
        (_view(select=[{"forEach": "@@", **_column()}]), "select[0].forEach", "position 0"),
        (
            _view(select=[{"forEach": "name", "forEachOrNull": "name", **_column()}]),
            "select[0]",
            "one of forEach, forEachOrNull or repeat",
        ),
        (_view(select=[{"repeat": [], **_column()}]), "select[0].repeat", "non-empty list"),
        (
            _view(select=[{"repeat": ["item", "answer..item"], **_column()}]),
            "select[0].repeat[1]",
            "position 7",
        ),
        (_view(select=[_column(name="1st")]), "select[0].column[0].name", "not a valid column"),
        (_view(select=[_column(name="a-b")]), "select[0].column[0].name", "not a valid column"),
        (_view(select=[_column(path=None)]), "select[0].column[0].path", "not NoneType"),
        (_view(select=[{"column": [{"name": "c"}]}]), "select[0].column[0]", "has no path"),
        (_view(select=[_column(path="name.given[")]), "select[0].column[0].path", "position 11"),
        (_view(select=[_column(path="bogus()")]), "select[0].column[0].path", "unknown function"),
        (_view(select=[_column(collection="yes")]), "select[0].column[0].collection", "true or"),
        (_view(select=[_column(type=3)]), "select[0].column[0].type", "not a FHIR type code"),
        (_view(select=[_column(colour="red")]), "select[0].column[0]", "unknown key(s) 'colour'"),
        (
            _view(select=[_column(path="name.where(use = %nope)")]),
            "select[0].column[0].path",
            "constant %nope is not defined",
        ),
        (
            _view(select=[_column(), {"column": [{"name": "c", "path": "gender"}]}]),
            "select[1].column[0].name",
            "'c' is already used at select[0].column[0]",
        ),
        (
            _view(select=[_column(), {"forEach": "name", "select": [_column()]}]),
            "select[1].select[0].column[0].name",
            "already used",
        ),
        (
            _view(
                select=[
                    {
                        "unionAll": [
                            {"column": [{"name": "a", "path": "id"}, {"name": "b", "path": "id"}]},
                            {"column": [{"name": "a", "path": "id"}, {"name": "c", "path": "id"}]},
                        ]
                    }
                ]
            ),
            "select[0].unionAll[1]",
            "columns (a, c) differ from those of unionAll[0] (a, b)",
        ),
        (
            _view(
                select=[
                    {
                        "unionAll": [
                            {"column": [{"name": "a", "path": "id"}, {"name": "b", "path": "id"}]},
                            {"column": [{"name": "b", "path": "id"}, {"name": "a", "path": "id"}]},
                        ]
                    }
                ]
            ),
            "select[0].unionAll[1]",
            "same names in the same order",
        ),
        (_view(select=[{"unionAll": []}]), "select[0].unionAll", "non-empty list"),
        (_view(constant=[{"name": "x"}]), "constant[0]", "exactly one value[x]"),
        (
            _view(constant=[{"name": "x", "valueString": "a", "valueCode": "b"}]),
            "constant[0]",
            "exactly one value[x]",
        ),
        (_view(constant=[{"name": "x y", "valueString": "a"}]), "constant[0].name", "not a valid"),
        (_view(constant=[{"name": "rowIndex", "valueInteger": 1}]), "constant[0].name", "reserved"),
        (
            _view(constant=[{"name": "x", "valueInteger": "1"}]),
            "constant[0].valueInteger",
            "not a valid Integer",
        ),
        (
            _view(constant=[{"name": "x", "valueDate": "15/06/1970"}]),
            "constant[0].valueDate",
            "not a valid Date",
        ),
        (
            _view(constant=[{"name": "x", "valueQuantity": {"value": 1}}]),
            "constant[0].valueQuantity",
            "not supported",
        ),
        (
            _view(constant=[{"name": "x", "valueString": "a"}, {"name": "x", "valueString": "b"}]),
            "constant[1].name",
            "defined twice",
        ),
        (_view(where={"path": "active"}), "where", "must be a list"),
        (_view(where=[{"expression": "active"}]), "where[0]", "unknown key(s) 'expression'"),
        (_view(where=[{"path": "'yes'"}]), "where[0].path", "can never be a boolean"),
        (_view(where=[{"path": "name.count()"}]), "where[0].path", "can never be a boolean"),
    ],
)
def test_invalid_views_are_refused_with_reason_and_location(view, location, reason):
    with pytest.raises(ViewError) as caught:
        compile_view(view)

    assert caught.value.location == location
    assert reason in caught.value.message
    assert str(caught.value) == (f"{location}: " if location else "") + caught.value.message


def test_selects_nested_too_deeply_are_refused():
    view = {"resource": "Patient", "select": [_column()]}
    innermost = view["select"][0]
    for level in range(1000):
        innermost["select"] = [{"column": [{"name": f"c{level}", "path": "id"}]}]
        innermost = innermost["select"][0]

    with pytest.raises(ViewError, match="selects nested more than 64 levels"):
        compile_view(view)


# --- errors only data can reveal ----------------------------------------------------------


def test_a_where_that_gives_a_non_boolean_fails_at_run_time_with_its_location():
    view = compile_view(_view(where=[{"path": "name.family"}]))

    assert view.rows({"resourceType": "Patient", "id": "no-name"}) == []  # empty: filtered out
    with pytest.raises(ViewError) as caught:
        view.rows({"resourceType": "Patient", "id": "p", "name": [{"family": "Smith"}]})

    assert caught.value.location == "where[0].path"
    assert "gave str 'Smith', not a boolean" in caught.value.message


def test_many_values_in_a_single_valued_column_fail_with_its_location():
    view = compile_view(
        {
            "resource": "Patient",
            "select": [
                {"column": [{"name": "id", "path": "id"}, {"name": "f", "path": "name.family"}]}
            ],
        }
    )
    patient = {"resourceType": "Patient", "id": "p", "name": [{"family": "A"}, {"family": "B"}]}

    with pytest.raises(ViewError) as caught:
        view.rows(patient)

    assert caught.value.location == "select[0].column[1].path"
    assert "gave 2 values for one row" in caught.value.message
    assert "collection: true" in caught.value.message


def test_an_expression_error_at_run_time_names_the_column_and_expression():
    view = compile_view({"resource": "Patient", "select": [_column(path="name.family > 'A'")]})
    patient = {"resourceType": "Patient", "id": "p", "name": [{"family": "A"}, {"family": "B"}]}

    with pytest.raises(ViewError) as caught:
        view.rows(patient)

    assert caught.value.location == "select[0].column[0].path"
    assert "evaluating \"name.family > 'A'\"" in caught.value.message


# --- what a valid view gives --------------------------------------------------------------


def test_a_compiled_view_describes_its_columns():
    view = compile_view(VALID)

    assert isinstance(view, CompiledView)
    assert (view.name, view.resource) == ("patient_names", "Patient")
    assert view.columns == (
        Column("id", "id", False, None),
        Column("family", "string", False, "Surname"),
        Column("given", "string", True, None),
        Column("is_official", "boolean", False, None),
    )


def test_rows_are_tuples_in_column_order_and_run_gives_dicts():
    view = compile_view(VALID)
    ann = {
        "resourceType": "Patient",
        "id": "ann",
        "active": True,
        "name": [{"use": "official", "family": "Smith", "given": ["Ann", "Marie"]}, {"given": []}],
    }
    nameless = {"resourceType": "Patient", "id": "bob", "active": True}

    assert view.rows(ann) == [
        ("ann", "Smith", ["Ann", "Marie"], True),
        ("ann", None, [], None),
    ]
    assert view.rows(nameless) == [("bob", None, [], None)]  # forEachOrNull keeps the patient
    assert view.rows({**ann, "active": False}) == []  # the where filters it out
    assert view.rows({"resourceType": "Observation", "id": "o"}) == []  # not the view's type
    assert list(view.run([{"resourceType": "Group"}, nameless])) == [
        {"id": "bob", "family": None, "given": [], "is_official": None}
    ]


def test_collection_columns_are_fresh_lists():
    view = compile_view(VALID)
    ann = {"resourceType": "Patient", "id": "a", "active": True, "name": [{"given": ["Ann"]}]}

    [row] = view.rows(ann)
    row[2].append("changed")

    assert ann["name"][0]["given"] == ["Ann"]


def test_json_values_keep_their_python_types():
    view = compile_view(
        {
            "resource": "Observation",
            "select": [
                {
                    "column": [
                        {"name": "value", "path": "value.ofType(Quantity).value"},
                        {"name": "count", "path": "component.count()"},
                        {"name": "final", "path": "status = 'final'"},
                        {"name": "code", "path": "code"},
                    ]
                }
            ],
        }
    )
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Heart rate"},
        "valueQuantity": {"value": 72.5, "unit": "/min"},
    }

    assert view.rows(observation) == [(72.5, 0, True, {"text": "Heart rate"})]


def test_a_repeat_that_meets_a_node_again_does_not_walk_it_twice():
    view = compile_view(
        {
            "resource": "QuestionnaireResponse",
            "select": [
                {
                    "repeat": ["item", "item.where(linkId = '1.1')", "$this"],
                    "column": [
                        {"name": "link", "path": "linkId"},
                        {"name": "position", "path": "%rowIndex"},
                    ],
                }
            ],
        }
    )
    response = {
        "resourceType": "QuestionnaireResponse",
        "item": [{"linkId": "1", "item": [{"linkId": "1.1"}]}],
    }

    assert view.rows(response) == [("1", 0), ("1.1", 1), (None, 2)]  # None: the resource itself
