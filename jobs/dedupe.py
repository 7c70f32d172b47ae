"""One owner per text in a run: identical texts anywhere in the run are embedded once (held
by the run's bookkeeping actor, ``jobs.run_actor``)."""

from __future__ import annotations


class TextClaims:
    """Maps a text's hash to the first (id, chunk) that asked for it.

    Asking again for the same (id, chunk) answers "yours" again, so a retried task
    keeps the texts it owned.
    """

    def __init__(self) -> None:
        self._owners: dict[bytes, str] = {}

    def claim(self, hashes: list[str], keys: list[str]) -> list[bool]:
        owners = self._owners
        return [owners.setdefault(bytes.fromhex(h), k) == k for h, k in zip(hashes, keys, strict=True)]

    def size(self) -> int:
        return len(self._owners)
