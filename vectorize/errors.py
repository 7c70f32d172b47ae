"""The one error tree of vectorize.

    VectorizeError                    base: everything vectorize raises on purpose
    ├── ConfigError                   the run cannot start; one line says what to change (exit 2)
    │   ├── SourceError               a path that cannot be read, a field missing from the whole source
    │   ├── ModelError                an unknown model, a model that cannot be loaded
    │   ├── ModelMismatchError        the collection holds vectors of another model identity
    │   ├── UnknownCollectionError    no collection of that name in the database
    │   └── DatabaseConfigError       a bad DSN, an unreachable server, no pgvector
    ├── StoreError                    the database failed or went away while the run was going (exit 3)
    ├── StallError                    the run stopped making progress for --stall-timeout seconds
    └── ProviderError                 an embedding provider failed on a whole request
        └── ProviderStopError         the provider refuses the run (key, access, model, quota, per-day cap):
                                      it stops at once, one line says what to fix (exit 2)

Row-level problems (a malformed line, an empty text, a broken ADF document) are not exceptions
of the run: they travel with the row as an error status and land in the collection's errors
table (inside preparation, ``extract.records.RecordError`` carries one to its row). Every class here keeps its
message in ``args`` so that it pickles across Ray's process boundaries unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator


class VectorizeError(Exception):
    """Base of every error vectorize raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[VectorizeError], tuple[str]]:
        return (type(self), (self.message,))


class ConfigError(VectorizeError):
    """The run cannot start as configured; the message says what to change."""

    exit_code = 2


class SourceError(ConfigError):
    """The source cannot be read, or lacks a field the run needs."""


class ModelError(ConfigError):
    """The model is unknown or cannot be loaded."""


class ModelMismatchError(ConfigError):
    """The collection already holds vectors of another model identity."""


class UnknownCollectionError(ConfigError):
    """No collection of that name is registered in the database."""


class MigrationError(ConfigError):
    """A migration step that the collection's versions do not allow (nothing was changed)."""


class DatabaseConfigError(ConfigError):
    """The database cannot be reached or lacks what the run needs."""


class StoreError(VectorizeError):
    """The database failed or went away while the run was going; what was written is kept."""

    exit_code = 3


class StallError(VectorizeError):
    """No rows were finished for longer than the run's stall timeout; it was stopped."""


class ProviderError(VectorizeError):
    """An embedding provider failed on a whole request."""


class ProviderStopError(ProviderError):
    """The provider refuses every request of this run; retrying cannot help."""

    exit_code = 2


def causes(exc: BaseException, *, context: bool = False) -> Iterator[BaseException]:
    """``exc`` and what lies under it, outermost first: inside a Ray error the exception the
    worker raised (its ``cause``), else the one it was raised from (and, with ``context``, the
    one being handled when it was raised)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return
        yield seen
        if ray_wrapper(seen):
            seen = seen.cause
        else:
            seen = seen.__cause__ or (seen.__context__ if context else None)


def vectorize_cause(exc: BaseException) -> VectorizeError | None:
    """The VectorizeError inside a Ray error, if a worker raised one."""
    return next((e for e in causes(exc) if isinstance(e, VectorizeError) and not ray_wrapper(e)), None)


def worker_error(exc: BaseException) -> BaseException:
    """What a worker raised, inside a Ray error (whose own text is a stage name and a traceback)."""
    return next((e for e in causes(exc) if not ray_wrapper(e)), exc)


def ray_wrapper(exc: BaseException) -> bool:
    """A Ray error carrying a worker's exception (Ray makes it an instance of that exception's
    class too, with a traceback for its text)."""
    return isinstance(getattr(exc, "cause", None), BaseException) and exc.cause is not exc
