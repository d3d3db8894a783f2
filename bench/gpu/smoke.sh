#!/usr/bin/env bash
# On the GPU box (second call of bench/gpu/stage.sh's recipe, carrying .gpu/smoke): every CUDA path the leaderboard
# takes -- base SFT, users trained side by side, generation, label scoring, contrastive decoding, the prior -- on a
# tiny random Llama and a tiny synthetic LaMP-2N (both made by stage.sh), in about a minute. BIN as in run.sh.
set -euo pipefail
[ -n "${BIN:-}" ] || source bench/gpu/env.sh
BIN=${BIN:-/tmp/bin}
WORK=${SMOKE_WORK:-/tmp/smoke}
rm -rf "$WORK"
common=(--data_dir .gpu/smoke/data --workdir "$WORK" --tasks LaMP-2N --users 3 --base.base_model .gpu/smoke/model
        --base.max_examples 16 --base.num_train_epochs 1 --user.num_train_epochs 1 --user.concurrent 3)
"$BIN/oppu-hub" eval "${common[@]}" --out_dir "$WORK/gen" --methods np-k0 oppu-k0 oppu-k1 pooled-k0 oppu-cd-k0
"$BIN/oppu-hub" eval "${common[@]}" --out_dir "$WORK/labels" --answers labels \
  --methods np-k0 oppu-k0 prior-np-k0 oppu-prior-k0
echo "smoke ok"
