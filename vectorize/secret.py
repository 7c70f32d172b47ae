"""A secret (an API key) that shows as ``***`` wherever it is printed, logged or repr'd."""

from __future__ import annotations


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))

    def scrub(self, text: str) -> str:
        """``text`` with every copy of the secret replaced by ``***``."""
        return text.replace(self._value, "***") if self._value else text
