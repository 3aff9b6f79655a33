"""Settings from the environment and `.env`, with plain variable names (DATABASE_URL, ...)."""

from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SECRET_KEY = "dev-secret-key-change-me-in-production-000000"
DEFAULT_ADMIN_PASSWORD = "admin-dev-password"
MIN_SECRET_KEY_LENGTH = 32
MIN_PRODUCTION_ADMIN_PASSWORD_LENGTH = 12


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
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    llm_max_input_tokens: int = Field(default=12_000, ge=500)

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
