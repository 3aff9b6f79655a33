async def test_health_is_exactly_ok(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_patients_search(client, clinician):
    created = await client.post(
        "/patients",
        json={
            "given_name": "John",
            "family_name": "Smith",
            "birth_date": "1960-01-01",
            "sex": "male",
        },
        headers=clinician.headers,
    )
    assert created.status_code == 201, created.text
    found = await client.get("/patients", params={"q": "Jonh Smth"}, headers=clinician.headers)
    assert found.status_code == 200, found.text
    assert [p["family_name"] for p in found.json()["items"]] == ["Smith"]
