"""Load the sample patients and development users. Idempotent: run it as often as you like."""

import json
from datetime import date
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.security import hash_password
from features.auth.models import User
from features.patients.models import Patient
from features.tm2_ingest import handlers as tm2
from features.tm2_ingest.models import TM2Code

SAMPLE_DATA = Path(__file__).with_name("sample_data.json")
# Real codes from the WHO TM2 list, so that TM2 uploads can be tried at once.
TM2_CODES_SAMPLE = Path(__file__).with_name("tm2_codes_sample.csv")
# Present once the sample data has been loaded; the first start loads it only when absent.
MARKER_EMAIL = "clinician@example.org"


def sample_data() -> dict:
    return json.loads(SAMPLE_DATA.read_text(encoding="utf-8"))


async def load(session: AsyncSession) -> dict[str, int]:
    """Insert what is missing; return how many patients and users were added."""
    data = sample_data()
    rows = [{**p, "birth_date": date.fromisoformat(p["birth_date"])} for p in data["patients"]]
    inserted = await session.execute(
        insert(Patient)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["mrn"])
        .returning(Patient.id)
    )
    patients_added = len(inserted.all())
    users_added = 0
    for spec in data["users"]:
        exists = await session.scalar(select(func.count()).where(User.email == spec["email"]))
        if exists:
            continue
        session.add(
            User(
                name=spec["name"],
                email=spec["email"],
                role=spec["role"],
                password_hash=await hash_password(spec["password"]),
            )
        )
        users_added += 1
    await session.flush()
    codes_added = 0
    if not await session.scalar(select(func.count()).select_from(TM2Code)):
        with TM2_CODES_SAMPLE.open("rb") as handle:
            codes_added = await tm2.load_codes(session, handle)
    return {"patients": patients_added, "users": users_added, "tm2_codes": codes_added}


async def load_if_first_start(session: AsyncSession) -> dict[str, int] | None:
    if await session.scalar(select(func.count()).where(User.email == MARKER_EMAIL)):
        return None
    return await load(session)
