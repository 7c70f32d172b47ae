"""An embedding actor whose batches hold nothing to embed never imports a model library; one
whose run surely embeds (an empty collection) opens its model as it starts."""

from __future__ import annotations

import json
import subprocess
import sys

# Run in a fresh interpreter: the test process has torch imported already.
ACTOR_SCRIPT = """
import asyncio, json, sys
import pyarrow as pa
from jobs.embedder import EmbedBatches
from vectorize import rows
from vectorize.providers.base import ProviderRequest, provider_spec

spec = provider_spec(ProviderRequest("local", sys.argv[1]))
plan = spec.plan_actors({"CPU": 1.0}, __import__("vectorize.providers.base", fromlist=["x"]).ActorRequest())
actor = EmbedBatches(spec, plan)

def manhattan():  # the one helper of sentence_transformers that needs scikit-learn
    import torch
    from sentence_transformers.util import manhattan_sim
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).to_sparse()
    return manhattan_sim(a, a).tolist()

def batch(status):
    row = rows.embed_row("a", "a text to embed", "ab" * 32, None, False)
    row.update(status=status, text=None if status == rows.UNCHANGED else row["text"])
    return pa.Table.from_pylist([row], schema=rows.PREPARED_SCHEMA)

libraries = ("torch", "transformers", "sentence_transformers", "sklearn")
asyncio.run(actor(batch(rows.UNCHANGED)))
after_stored = [m for m in libraries if m in sys.modules]
embedded = asyncio.run(actor(batch(rows.EMBED)))
print(json.dumps({
    "after_stored": after_stored,
    "after_embed": [m for m in libraries if m in sys.modules],
    "vector_length": len(embedded.column("embedding")[0].as_py()),
    "sparse_manhattan": manhattan(),
}))
"""


def test_a_batch_with_nothing_to_embed_imports_no_model_library_and_the_next_one_loads_it_without_sklearn(
    tiny_model,
):
    done = subprocess.run(
        [sys.executable, "-c", ACTOR_SCRIPT, tiny_model], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["after_stored"] == []
    assert set(seen["after_embed"]) == {"torch", "transformers", "sentence_transformers"}  # not scikit-learn
    assert seen["vector_length"] > 0
    assert seen["sparse_manhattan"] == [[-0.0, -3.0], [-3.0, -0.0]]


EARLY_SCRIPT = """
import json, sys, time
from jobs.batch_events import RunContext
from jobs.embedder import EmbedBatches
from vectorize.providers.base import ActorRequest, ProviderRequest, provider_spec

spec = provider_spec(ProviderRequest("local", sys.argv[1]))
actor = EmbedBatches(spec, spec.plan_actors({"CPU": 1.0}, ActorRequest()), run=RunContext("r", "c", open_early=True))
deadline = time.monotonic() + 90
while actor._provider is None and actor._open_error is None and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"opened": actor._provider is not None, "torch": "torch" in sys.modules}))
"""


def test_into_an_empty_collection_the_actor_opens_its_model_before_any_batch(tiny_model):
    done = subprocess.run(
        [sys.executable, "-c", EARLY_SCRIPT, tiny_model], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"opened": True, "torch": True}
