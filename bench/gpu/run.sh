#!/usr/bin/env bash
# On the GPU box (third call of bench/gpu/stage.sh's recipe): join the model, put the sources in place, run
# bench/protocol_run.sh in 5 lanes, and snapshot bench/results, oppu_hub/protocol.json and the logs to
# $OUT/results.tgz every 15 s (one file: a call returns only a few, and what a time limit leaves still comes back).
# A failing concurrent path falls back to one user at a time (not part of any artifact's identity: the run
# resumes). Extra flags go to protocol_run.sh.
set -u
mkdir -p runs/eval/logs
source bench/gpu/env.sh
join_staged || exit $?
RESULTS=$OUT  # the device's return folder; unset, so bench/eval_full.sh's own OUT keeps its default
unset OUT
start=$(date +%s)
python3 -c "from oppu_hub.models import ensure_default_base; print(ensure_default_base())" || exit 5
snap() { tar czf "$RESULTS/.r.tgz" bench/results oppu_hub/protocol.json runs/eval/logs 2>/dev/null
         mv "$RESULTS/.r.tgz" "$RESULTS/results.tgz"; }
run() { BIN=/tmp/bin SOURCE=/tmp/src LANES=5 bench/protocol_run.sh "$@"; local rc=$?
        echo "rc=$rc after $(( $(date +%s) - start )) s" >> runs/eval/logs/rc; return $rc; }
(run "$@" || { tail -n 5 runs/eval/logs/*.log; run "$@" --user.concurrent 1; }) &
lanes=$!
while kill -0 $lanes 2>/dev/null; do
  sleep 15; snap
  echo "t=$(( $(date +%s) - start ))s $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)" \
       "rows: $(ls bench/results/leaderboard/rows 2>/dev/null | tr '\n' ' ')"
done
snap; cat runs/eval/logs/rc; tail -n 3 runs/eval/logs/*.log
