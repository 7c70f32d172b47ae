"""Model identity: what decides whether two vectors may share a column."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ModelIdentity:
    """Everything that changes the vector a model gives for a text.

    ``name`` is for people; two identities are the same model when every other field
    matches, so a copy of the same weights in another folder is the same model.
    """

    name: str
    revision: str
    dimensions: int
    normalized: bool
    prefix: str
    max_tokens: int

    @property
    def key(self) -> str:
        """Compact, stable text stored beside every vector."""
        norm = "norm" if self.normalized else "raw"
        prefix = f"/prefix={self.prefix!r}" if self.prefix else ""
        return f"{self.name}@{self.revision}/{self.dimensions}d/{norm}/max{self.max_tokens}{prefix}"

    def same_model(self, other: ModelIdentity) -> bool:
        return self.differences(other) == []

    def differences(self, other: ModelIdentity) -> list[str]:
        """Human-readable list of what differs, ignoring the display name."""
        out = []
        for f in fields(self):
            if f.name == "name":
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine != theirs:
                out.append(f"{f.name} {theirs!r} vs {mine!r}")
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)
