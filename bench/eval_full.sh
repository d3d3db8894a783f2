#!/usr/bin/env bash
# The full-size leaderboard (`make eval`, docs/eval.md) under the paper protocol (oppu_hub/protocol.py: bases on
# every training user's examples for their dev-chosen epochs, adapters on users' whole histories up to the cap):
# the rebuilt LaMP tasks with 3 queries per user, up to 40 test users per task (all of LaMP-2M and LaMP-3), the
# label-prior / BM25-copy / pooled-adapter baselines beside np-k0, rag-k1, oppu-k0 and oppu-k1, and paired bootstrap
# intervals over users; then a second table (OUT-labels) with label-scored answers for LaMP-1, 2N, 2M and 3, and a
# third (OUT-decoding) with contrastive personal decoding for LaMP-4, 5 and 7, and a fourth (OUT-two-stage) with the
# two-stage (collective then personal) adapters on every task. The settings are the eval's defaults:
# nothing here re-declares them.
# The table, the LaMP-format prediction/gold files and each finished task's rows go to $OUT (committed:
# bench/results/leaderboard). It resumes where it stopped: bases and adapters are content-addressed under $WORK, and
# a task whose rows in $OUT/rows/ match the settings, the data and the bases/adapters those settings name is not
# run again (a fresh clone, without $WORK, reuses the committed rows of every task whose data it rebuilds byte for
# byte; a changed setting or dev choice re-runs the tasks it touches). A task cut short resumes method by method
# from $OUT/rows/{task}.partial.json (commit it with the predictions: a fresh machine then runs only the missing
# methods), and the later tables copy the methods they share with the earlier ones (--rows_from).
# bench/protocol_run.sh makes the dev choices first. Extra flags are passed on, e.g.
#   TASKS="LaMP-2N LaMP-3" bench/eval_full.sh --users 20
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${WORK:-runs/eval}
OUT=${OUT:-bench/results/leaderboard}
SOURCE=${SOURCE:-../shared/data}
TASKS=${TASKS:-LaMP-2N LaMP-2M LaMP-3 LaMP-7 LaMP-4 LaMP-1 LaMP-5}
"$BIN/oppu-hub" data build --source_dir "$SOURCE" --out_dir "$WORK/data" --queries_per_user 3
# shellcheck disable=SC2086  # TASKS is a list
"$BIN/oppu-hub" eval --data_dir "$WORK/data" --workdir "$WORK" --out_dir "$OUT" --tasks $TASKS \
  --methods majority user-majority bm25-copy np-k0 rag-k1 oppu-k0 oppu-k1 pooled-k0 --users 40 "$@"
# The second table: the classification and rating tasks' model columns with label-scored answers, and the
# calibrated user prior (same bases and adapters: predictions only).
LABELED=$(for t in $TASKS; do case $t in LaMP-1|LaMP-2N|LaMP-2M|LaMP-3) printf '%s ' "$t";; esac; done)
if [ -n "$LABELED" ]; then
  # shellcheck disable=SC2086
  "$BIN/oppu-hub" eval --data_dir "$WORK/data" --workdir "$WORK" --out_dir "$OUT-labels" --tasks $LABELED \
    --methods np-k0 rag-k1 oppu-k0 oppu-k1 pooled-k0 prior-np-k0 oppu-prior-k0 --users 40 --answers labels \
    --rows_from "$OUT" "$@"
fi
# The third: the generation tasks' users' adapters decoded contrastively against their base (same bases and
# adapters: predictions only).
GENERATED=$(for t in $TASKS; do case $t in LaMP-4|LaMP-5|LaMP-7) printf '%s ' "$t";; esac; done)
if [ -n "$GENERATED" ]; then
  # shellcheck disable=SC2086
  "$BIN/oppu-hub" eval --data_dir "$WORK/data" --workdir "$WORK" --out_dir "$OUT-decoding" --tasks $GENERATED \
    --methods np-k0 rag-k1 oppu-k0 oppu-k1 oppu-cd-k0 oppu-cd-k1 --users 40 --rows_from "$OUT" "$@"
fi
# The fourth: collective then personal (a collective LoRA merged into the k=0 base, then the users' adapters on
# it), against the per-user adapters, the pooled control and the user-prior baseline (label-scored: classification
# and rating tasks only), each with its paired interval. Trains two collective bases and their users' adapters.
# shellcheck disable=SC2086
exec "$BIN/oppu-hub" eval --data_dir "$WORK/data" --workdir "$WORK" --out_dir "$OUT-two-stage" --tasks $TASKS \
  --methods np-k0 prior-np-k0 oppu-k0 oppu-k1 pooled-k0 two-stage-k0 two-stage-pooled-k0 --users 40 \
  --references oppu-k0 oppu-k1 pooled-k0 prior-np-k0 --rows_from "$OUT" "$OUT-labels" "$OUT-decoding" "$@"
