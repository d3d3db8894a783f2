#!/usr/bin/env bash
# The small leaderboard (`make eval-small`): every task the rebuilt data covers, 3 test users each, a CPU-sized
# training budget and the cheap subset of Table 2's methods (no PAG: profiles are written by the LM, slow on CPU).
# Bases and adapters are reused from runs/eval-small on re-runs. Extra flags are passed on, e.g.
#   bench/eval_small.sh --methods np-k0 rag-k1 pag-k0 oppu-k1 pag-oppu-k0 --tasks LaMP-2N
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${WORK:-runs/eval-small}
SOURCE=${SOURCE:-../shared/data}
if [ ! -f "$WORK/data/LaMP-7/test_questions.json" ]; then
  "$BIN/oppu-hub" data build --source_dir "$SOURCE" --out_dir "$WORK/data"
fi
exec "$BIN/oppu-hub" eval --data_dir "$WORK/data" --workdir "$WORK" \
  --tasks LaMP-1 LaMP-2N LaMP-2M LaMP-3 LaMP-4 LaMP-5 LaMP-7 \
  --methods majority user-majority bm25-copy np-k0 random-k1 rag-k1 oppu-k0 oppu-k1 \
  --users 3 --train_users 16 --base.max_examples 32 --base.num_train_epochs 1 --user.max_history 8 \
  --user.num_train_epochs 1 --max_prompt_length 256 "$@"
