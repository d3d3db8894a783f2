#!/usr/bin/env bash
# The paper protocol end to end (docs/eval.md, "The protocol"): each task's settings chosen on dev users
# (bench/protocol_dev.py, recorded in oppu_hub/protocol.json), then the leaderboard on test users under them
# (bench/eval_full.sh, rows committed per task in bench/results/leaderboard). Tasks run in lanes side by side, one
# process each (a GPU has room for several; on 2 CPU cores use LANES=1: one lane, tasks one after another).
# LaMP-2M and LaMP-3 have too few dev users and follow LaMP-2N in its lane, whose choices they take.
# Resumable: every base, adapter, dev run and finished task is reused by content hash.
#   LANES=1 bench/protocol_run.sh            # CPU (LANE_GROUPS="LaMP-2N LaMP-3;LaMP-7": other tasks)
#   BIN=/tmp/bin bench/protocol_run.sh       # a GPU box without the venv (BIN holds `python` and `oppu-hub`)
# Extra flags go to both stages (pipeline settings, e.g. a tiny smoke run); DEV_FLAGS to protocol_dev.py alone.
set -uo pipefail
BIN=${BIN:-.venv/bin}
WORK=${WORK:-runs/eval}
SOURCE=${SOURCE:-../shared/data}
LANES=${LANES:-5}
LOGS=${LOGS:-$WORK/logs}
FLAGS=("$@")
IFS=';' read -r -a GROUPS_ <<< "${LANE_GROUPS:-LaMP-2N LaMP-2M LaMP-3;LaMP-7;LaMP-4;LaMP-1;LaMP-5}"  # one lane each
mkdir -p "$LOGS"
"$BIN/oppu-hub" data build --source_dir "$SOURCE" --out_dir "$WORK/data" --queries_per_user 3 || exit 2

lane() {  # tasks one after another: choose on dev, then the leaderboard rows
  for task in "$@"; do
    # shellcheck disable=SC2086  # DEV_FLAGS is a list
    "$BIN/python" bench/protocol_dev.py --tasks "$task" --data_dir "$WORK/data" --workdir "$WORK" ${DEV_FLAGS:-} \
      "${FLAGS[@]}" || return 1
    BIN=$BIN WORK=$WORK SOURCE=$SOURCE TASKS=$task bench/eval_full.sh "${FLAGS[@]}" || return 1
  done
}

if [ "$LANES" -le 1 ]; then
  # shellcheck disable=SC2086  # each group is a list of tasks
  lane ${GROUPS_[*]} 2>&1 | tee "$LOGS/protocol.log"
  exit "${PIPESTATUS[0]}"
fi
pids=()
for group in "${GROUPS_[@]}"; do
  # shellcheck disable=SC2086
  lane $group >"$LOGS/${group%% *}.log" 2>&1 &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
exit $rc
