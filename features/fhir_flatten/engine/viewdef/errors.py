"""The one error of the engine: what is wrong with a view, and where in it."""


class ViewError(Exception):
    """A view that cannot be compiled, or a resource it cannot turn into rows.

    `location` is a JSON-pointer-like path into the view (`select[0].column[1].path`), or ""
    when the problem concerns the whole view.
    """

    def __init__(self, message: str, location: str = "") -> None:
        super().__init__(message, location)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message

    def at(self, location: str) -> "ViewError":
        """The same error placed in the view, unless it already knows its place."""
        if self.location:
            return self
        return type(self)(self.message, location)


class FhirPathError(ViewError):
    """An expression that does not parse or compile; `position` is the 0-based offset of the
    problem in the expression text."""

    def __init__(self, message: str, position: int, location: str = "") -> None:
        super().__init__(message, location)
        self.position = position
        self.args = (message, position, location)

    def at(self, location: str) -> "ViewError":
        if self.location:
            return self
        return FhirPathError(self.message, self.position, location)
