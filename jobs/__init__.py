"""Ray Data pipelines and Ray Jobs entrypoints (`python -m jobs.embed ...`)."""
