"""Recent (model, text) → vector, least recently used out first, with hit and miss counts."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class VectorCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], tuple[np.ndarray, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, model: str, text: str) -> tuple[np.ndarray, int] | None:
        key = (model, text)
        found = self._items.get(key)
        if found is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return found

    def put(self, model: str, text: str, vector: np.ndarray, tokens: int) -> None:
        if self.capacity <= 0:
            return
        self._items[(model, text)] = (vector, tokens)
        self._items.move_to_end((model, text))
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        while len(self._items) > max(capacity, 0):
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
