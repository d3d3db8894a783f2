#!/usr/bin/env bash
# On the GPU box, after bench/gpu/stage.sh's staging calls, in a call of its own (stage.sh says which it carries):
# issue #26's GPU figures, written to bench/results/gpu/ and returned in $OUT/perf.tgz. Each command has its own time limit, so one that hangs leaves the others' figures.
#   train_users: 8 LaMP-2N users x 64 items (every mode), and 64 LaMP-5 users x 32 items (no LaMP split has 64 test
#     users with 64 items), the one-at-a-time mode on the first 8 of them (its time is linear in the users);
#   serve_users: 8 users on LaMP-2N, 64 users on LaMP-7 (LaMP-2N has 52 test users);
#   NF4 (QLoRA, when bitsandbytes was carried): one LaMP-2N user trained and served with --load_in_4bit.
set -u
source bench/gpu/env.sh
BIN=/tmp/bin
RESULTS=${OUT:-/tmp/out}
unset OUT
R=bench/results/gpu
D=runs/eval/data
mkdir -p "$R"
[ -s "$GGUF" ] || join_staged || exit $?
[ -d .gpu/bnb ] && python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/bnb/*.whl
"$BIN/oppu-hub" data build --source_dir /tmp/src --out_dir "$D" --queries_per_user 3 --tasks LaMP-2N LaMP-5 LaMP-7
t() { local limit=$1; shift; echo "+ $*"; timeout "$limit" "$@" 2>&1 | grep -v 'it/s\|s/it' | tail -n 12; }
t 200 "$BIN/python" bench/train_users.py --data_dir "$D" --users 8 --history 64 --epochs 1 \
  --modes reference sequential-bf16 concurrent-bf16 --out "$R/train_users-8.json"
t 240 "$BIN/python" bench/train_users.py --data_dir "$D" --task LaMP-5 --users 64 --sequential_users 8 --history 32 \
  --epochs 1 --modes sequential-bf16 concurrent-bf16 --out "$R/train_users-64.json"
t 120 "$BIN/python" bench/serve_users.py --data_dir "$D" --users 8 --requests 64 --batches 8 \
  --out "$R/serve_users-8.json"
t 180 "$BIN/python" bench/serve_users.py --data_dir "$D" --task LaMP-7 --users 64 --requests 128 --batches 64 \
  --out "$R/serve_users-64.json"
if python3 -c "import bitsandbytes" 2>/dev/null; then
  user=$(python3 -c "import json; print(json.load(open('$R/train_users-8.json'))['users'][0])")
  t 120 "$BIN/oppu-hub" train-users --task LaMP-2N --data_dir "$D" --base_dir SmolLM2-135M-Instruct --users "$user" \
    --max_history 64 --output_dir /tmp/nf4 --load_in_4bit
  t 60 "$BIN/oppu-hub" predict --task LaMP-2N --data_dir "$D" --base_dir SmolLM2-135M-Instruct --users "$user" \
    --load_in_4bit \
    --adapters_dir /tmp/nf4/LaMP-2N/k0-lora --output "$R/nf4-predictions.json"
fi
tar czf "$RESULTS/perf.tgz" "$R"
