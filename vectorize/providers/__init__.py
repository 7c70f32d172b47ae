"""Embedding providers: one file each, registered by name (``--provider NAME``) with the spec
that builds them; ``base.py`` is the interface every one keeps. Importing the package registers
the built-in ones (``local``, ``openai``, ``azure``); none of them imports a model library here."""

from __future__ import annotations

from vectorize.providers import api, local  # noqa: F401  (each registers itself)
