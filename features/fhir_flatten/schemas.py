from pydantic import BaseModel, Field


class ColumnInfo(BaseModel):
    name: str
    type: str | None = Field(description="The column's FHIR type, as the view gives it.")
    collection: bool
    sql_type: str = Field(description="The PostgreSQL type of the column in the view's table.")
    description: str | None = None


class ViewInfo(BaseModel):
    name: str
    resource: str
    table: str = Field(description="The PostgreSQL table analysts query: flat_<name>.")
    builtin: bool
    columns: list[ColumnInfo]
    row_count: int


class LoadResult(BaseModel):
    resources: dict[str, int] = Field(description="Resources loaded, by type.")
    unchanged: dict[str, int] = Field(
        description="Resources older than the stored version (by meta.lastUpdated), by type."
    )
    deleted: dict[str, int] = Field(description="Resources deleted (DELETE entries), by type.")
    rows: dict[str, int] = Field(description="Rows written, by view.")
