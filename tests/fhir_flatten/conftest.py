"""Fixtures of the fhir_flatten tests: the built-in views registered, an analyst."""

import pytest

from app.security import Role
from features.fhir_flatten import handlers


@pytest.fixture
async def views(session):
    await handlers.ensure_builtin_views(session)
    await session.commit()


@pytest.fixture
async def analyst(make_user):
    return await make_user(Role.ANALYST)
