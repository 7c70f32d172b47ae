"""One owner per text and one record per id in a run, held by the run's bookkeeping actor
(``jobs.run_actor``): identical texts anywhere in the run are embedded once, and an id read
twice is stored once, the other record becoming an error row that names it.

The claims live in a private on-disk SQLite database of the actor's process, not in its
memory: a run of any size holds a bounded page cache, and the file is gone when the process
ends, however it ends.
"""

from __future__ import annotations

import hashlib
import sqlite3

CACHE_KIB = 8 * 1024  # SQLite's page cache for the claims, whatever their number (bench/pipeline_ceiling.py)
_IN_LIST = 30_000  # under SQLite's limit of bound parameters in one statement


def _blob(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # one to one, lone surrogates of a hostile id included


def _digest(text: str, size: int) -> bytes:
    return hashlib.blake2b(_blob(text), digest_size=size).digest()


class Claims:
    """Maps a text's hash to the first (id, chunk) that asked for it, and an id to the first
    record that asked for it, named by its origin (a source position like ``data.jsonl:12``,
    or a digest of the record where the source has none).

    Asking again with the same claimant answers as the first time, so a retried task keeps
    the texts and ids it owned; every other record with that id learns who holds it. Keys are
    kept as 16-byte digests and a text's owner as an 8-byte one: a false match is a chance
    of one in 2**64 or less.
    """

    def __init__(self) -> None:
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)  # "": private, on disk
        for pragma in (f"cache_size = -{CACHE_KIB}", "journal_mode = OFF", "synchronous = OFF", "temp_store = FILE"):
            self._db.execute(f"PRAGMA {pragma}")
        for table in ("texts", "ids"):
            self._db.execute(f"CREATE TABLE {table} (key BLOB PRIMARY KEY, owner BLOB NOT NULL) WITHOUT ROWID")

    def claim(self, hashes: list[str], keys: list[str]) -> list[bool]:
        """For each text hash, whether the (id, chunk) ``key`` beside it owns the text."""
        mine = [_digest(key, 8) for key in keys]
        owners = self._first_claimants("texts", [bytes.fromhex(h)[:16] for h in hashes], mine)
        return [owner == tag for owner, tag in zip(owners, mine, strict=True)]

    def claim_ids(self, ids: list[str], origins: list[str]) -> list[str]:
        """For each id, the origin of the record that holds it."""
        owners = self._first_claimants("ids", [_digest(i, 16) for i in ids], [_blob(o) for o in origins])
        return [owner.decode("utf-8", "surrogatepass") for owner in owners]

    def claim_batch(
        self, ids: list[str], origins: list[str], hashes: list[str], keys: list[str], claimed_by: list[int]
    ) -> tuple[list[str], list[bool]]:
        """A batch's id claims, then its text claims: for each id, the origin of the record that
        holds it; for each text hash, whether ``keys`` beside it owns the text. A text whose
        record (its index in ``ids``, ``claimed_by``; -1: a record without an id) lost its id
        claims nothing, and is answered False."""
        holders = self.claim_ids(ids, origins) if ids else []
        lost = {i for i, (holder, origin) in enumerate(zip(holders, origins, strict=True)) if holder != origin}
        wanted = [j for j, record in enumerate(claimed_by) if record not in lost]
        owned = [False] * len(hashes)
        if wanted:
            for j, mine in zip(wanted, self.claim([hashes[j] for j in wanted], [keys[j] for j in wanted]), strict=True):
                owned[j] = mine
        return holders, owned

    def _first_claimants(self, table: str, keys: list[bytes], claimants: list[bytes]) -> list[bytes]:
        db = self._db
        before = db.total_changes
        db.execute("BEGIN")
        db.executemany(f"INSERT OR IGNORE INTO {table} (key, owner) VALUES (?, ?)", zip(keys, claimants, strict=True))
        db.execute("COMMIT")
        if db.total_changes - before == len(keys):  # every key new: each is its claimant's
            return claimants
        wanted = list(dict.fromkeys(keys))
        owners: dict[bytes, bytes] = {}
        for start in range(0, len(wanted), _IN_LIST):
            part = wanted[start : start + _IN_LIST]
            marks = ",".join("?" * len(part))
            owners.update(db.execute(f"SELECT key, owner FROM {table} WHERE key IN ({marks})", part).fetchall())
        return [owners[key] for key in keys]
