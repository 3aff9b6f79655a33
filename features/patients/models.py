from datetime import date

from sqlalchemy import CheckConstraint, Date, Index, Sequence, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Timestamps, UUIDPrimaryKey

SEXES = ("male", "female", "other", "unknown")
mrn_sequence = Sequence("patient_mrn_seq", metadata=Base.metadata)
# The expression the trigram index covers; searches must use the same one.
FULL_NAME_SQL = "(given_name || ' ' || family_name)"


class Patient(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "patients"

    mrn: Mapped[str] = mapped_column(
        String(32),
        unique=True,
        server_default=text("'MRN' || lpad(nextval('patient_mrn_seq')::text, 8, '0')"),
    )
    given_name: Mapped[str] = mapped_column(String(100))
    family_name: Mapped[str] = mapped_column(String(100))
    birth_date: Mapped[date] = mapped_column(Date)
    sex: Mapped[str] = mapped_column(String(10))
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version, "eager_defaults": True}
    __table_args__ = (
        CheckConstraint(f"sex IN {SEXES!r}", name="sex_known"),
        Index(
            "ix_patients_full_name_trgm",
            text(f"{FULL_NAME_SQL} gin_trgm_ops"),
            postgresql_using="gin",
            # No pending list: with it, every search rereads all recent inserts until the
            # next vacuum merges them (13,000 new patients made searches 15 times slower).
            postgresql_with={"fastupdate": "off"},
        ),
        Index("ix_patients_family_name_given_name", "family_name", "given_name"),
        Index("ix_patients_birth_date", "birth_date"),
    )
