"""Settings from the environment and `.env`, with plain variable names (DATABASE_URL, ...)."""

import re
from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SECRET_KEY = "dev-secret-key-change-me-in-production-000000"
DEFAULT_ADMIN_PASSWORD = "admin-dev-password"
MIN_SECRET_KEY_LENGTH = 32
MIN_PRODUCTION_ADMIN_PASSWORD_LENGTH = 12
RESOURCE_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")
DEFAULT_FHIR_RESOURCE_TYPES = (
    "Patient",
    "Observation",
    "Condition",
    "MedicationRequest",
    "Procedure",
    "AllergyIntolerance",
    "Encounter",
    "DiagnosticReport",
    "Immunization",
    "CarePlan",
)


class InsecureSettingsError(ValueError):
    """Raised when production would start with development secrets."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    environment: Literal["development", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    cors_origins: Annotated[list[str], NoDecode] = []

    # When unset, an embedded PostgreSQL is started with its data in EMBEDDED_POSTGRES_DIR.
    database_url: str | None = None
    embedded_postgres_dir: str = ".data/postgres"
    database_pool_size: int = Field(default=20, ge=1, le=200)
    database_direct_pool_size: int = Field(default=10, ge=1, le=200)
    database_statement_timeout_ms: int = Field(default=30_000, ge=100)

    secret_key: str = DEFAULT_SECRET_KEY
    access_token_expire_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    jwt_issuer: str = "clinical-backend"
    jwt_audience: str = "clinical-backend-api"
    admin_email: str = "admin@example.org"
    admin_password: str = DEFAULT_ADMIN_PASSWORD
    login_max_failures: int = Field(default=5, ge=1)
    login_failure_window_minutes: int = Field(default=15, ge=1)

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    worker_in_process: bool = True
    # Development only: apply migrations and load the sample data when the service starts.
    migrate_on_start: bool = True
    seed_on_first_start: bool = True

    # Clinical notes: largest uploaded file, and the time limit on reading one (PDF, OCR).
    note_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    note_extract_timeout_s: float = Field(default=60.0, gt=0)

    # Patient summaries: any OpenAI-compatible server; no key means the offline summariser.
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str = "gpt-4o-mini"
    llm_timeout_s: float = Field(default=30.0, gt=0)
    # How the answer's JSON schema is asked for: auto tries strict json_schema and falls back
    # to json_object (schema in the prompt) on servers that refuse it, e.g. llama-cpp-python.
    llm_response_format: Literal["auto", "json_schema", "json_object"] = "auto"
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    llm_max_input_tokens: int = Field(default=12_000, ge=500)
    # The patient's name, MRN, birth date, phone numbers and e-mail addresses replaced with
    # placeholders before notes reach the LLM; false for an LLM inside the hospital.
    llm_deidentify: bool = True

    # FHIR server (HAPI FHIR in production). Unset: the FHIR features answer 503.
    fhir_base_url: str | None = None
    fhir_auth_token: SecretStr | None = None
    fhir_username: str | None = None
    fhir_password: SecretStr | None = None
    fhir_timeout_s: float = Field(default=10.0, gt=0)
    fhir_max_retries: int = Field(default=3, ge=0, le=10)
    # The FHIR proxy: resource types it lets through, and the largest page it asks for.
    fhir_resource_types: Annotated[list[str], NoDecode] = list(DEFAULT_FHIR_RESOURCE_TYPES)
    fhir_max_page_size: int = Field(default=100, ge=1, le=1000)

    # CSV uploads turned into FHIR resources.
    csv_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    csv_batch_size: int = Field(default=50, ge=1, le=1000)
    csv_max_attempts: int = Field(default=5, ge=1, le=100)
    # The first wait after the FHIR server could not be reached; it doubles, up to 5 minutes.
    csv_retry_delay_s: float = Field(default=5.0, gt=0, le=300)
    csv_patient_id_system: str = "urn:clinical-backend:csv-patient-id"
    # A FHIR terminology server ($translate, $lookup); unset: the built-in code table.
    terminology_url: str | None = None
    terminology_timeout_s: float = Field(default=10.0, gt=0)

    # FHIR data flattened into analytics tables: largest input, and the inbox folder the
    # periodic job loads files from (unset: no inbox).
    flatten_max_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024)
    flatten_inbox_dir: str | None = None
    # Processes that evaluate the views over large loads (0: a thread of the loading process).
    flatten_worker_processes: int = Field(default=1, ge=0, le=32)

    # OpenMRS, where TM2 diagnoses are submitted (unset: they wait as pending).
    openmrs_base_url: str | None = None
    openmrs_username: str | None = None
    openmrs_password: SecretStr | None = None
    openmrs_timeout_s: float = Field(default=10.0, gt=0)
    openmrs_max_retries: int = Field(default=3, ge=0, le=10)
    openmrs_tm2_concept_uuid: str | None = None
    tm2_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    tm2_submit_batch_size: int = Field(default=200, ge=1, le=10_000)
    tm2_max_attempts: int = Field(default=5, ge=1, le=100)

    @field_validator("fhir_resource_types", mode="before")
    @classmethod
    def _split_types(cls, value: object) -> object:
        if isinstance(value, str):
            value = [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("fhir_resource_types", mode="after")
    @classmethod
    def _resource_type_names(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not RESOURCE_TYPE_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"not FHIR resource type names: {', '.join(bad)}")
        return value

    @field_validator("fhir_base_url", "terminology_url", "openmrs_base_url", mode="after")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") or None if value else None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> "Settings":
        if self.environment != "production":
            return self
        problems = []
        if self.secret_key == DEFAULT_SECRET_KEY:
            problems.append("SECRET_KEY is the development default")
        elif len(self.secret_key) < MIN_SECRET_KEY_LENGTH:
            problems.append(f"SECRET_KEY is shorter than {MIN_SECRET_KEY_LENGTH} characters")
        if self.admin_password == DEFAULT_ADMIN_PASSWORD:
            problems.append("ADMIN_PASSWORD is the development default")
        elif len(self.admin_password) < MIN_PRODUCTION_ADMIN_PASSWORD_LENGTH:
            problems.append(
                f"ADMIN_PASSWORD is shorter than {MIN_PRODUCTION_ADMIN_PASSWORD_LENGTH} characters"
            )
        if problems:
            raise InsecureSettingsError("refusing to start in production: " + "; ".join(problems))
        return self

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    @cached_property
    def uses_embedded_postgres(self) -> bool:
        return not self.database_url
