"""One owner per text and one record per id in a run, held by the run's bookkeeping actor
(``jobs.run_actor``): identical texts anywhere in the run are embedded once, and an id read
twice is stored once, the other record becoming an error row that names it."""

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


class IdClaims:
    """Maps an id to the first record that asked for it, named by its origin (a source
    position like ``data.jsonl:12``, or a digest of the record where the source has none).

    Asking again with the same origin answers that origin again, so a retried task keeps the
    ids it owned; every other record with that id learns who holds it.
    """

    def __init__(self) -> None:
        self._holders: dict[str, str] = {}

    def claim_ids(self, ids: list[str], origins: list[str]) -> list[str]:
        holders = self._holders
        return [holders.setdefault(key, origin) for key, origin in zip(ids, origins, strict=True)]
