#!/usr/bin/env bash
# Reproduces the shipped portable LSTM (models/default/lstm.json; models/default/README-lstm.md).
#
# Training data: seven `clv gen` shop profiles (600 users, 900 days each, seeds 101..107) in one
# file; user and event ids are prefixed with the profile ("wholesale:u17"), so
# `--shop-separator :` fits every shop its own prior, as the scorer later uses the scored shop's
# baseline. Odd-numbered users keep only their purchases (no session id): the model learns
# purchase-only histories (CDNOW-like logs) beside clickstream ones.
# Three seeds are trained; the one with the lowest validation loss is kept.
#
# Usage: scripts/make-shipped-lstm.sh [BUILD_DIR] [WORK_DIR] [OUT]
#   SEEDS="1 2 3"   training seeds to try
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${1:-build}"
work="${2:-$(mktemp -d)}"
out="${3:-models/default/lstm.json}"
clv="$build_dir/apps/clv"
seeds="${SEEDS:-1 2 3}"
[[ -x "$clv" ]] || { echo "make-shipped-lstm: no $clv (build it first)" >&2; exit 2; }
mkdir -p "$work"

profiles=(default one_time no_dropout high_dropout wholesale cents day_granularity)
mix="$work/shops.jsonl"
: >"$mix"
seed=101
for profile in "${profiles[@]}"; do
  echo "make-shipped-lstm: generating $profile (seed $seed)" >&2
  "$clv" gen --users 600 --days 900 --seed "$seed" --profile "$profile" \
    --out "$work/$profile.jsonl" >/dev/null
  # Prefix ids with the shop; odd-numbered users: purchases only, without session ids.
  awk -v shop="$profile" '
    {
      match($0, /"user_id":"u[0-9]+"/)
      user = substr($0, RSTART + 11, RLENGTH - 12)
      odd = substr(user, 2) % 2 == 1
      if (odd && index($0, "\"type\":\"purchase\"") == 0) next
      if (odd) sub(/,"session_id":"[^"]*"/, "")
      sub(/"event_id":"/, "\"event_id\":\"" shop ":")
      sub(/"user_id":"/, "\"user_id\":\"" shop ":")
      print
    }' "$work/$profile.jsonl" >>"$mix"
  seed=$((seed + 1))
done
echo "make-shipped-lstm: $(wc -l <"$mix") events in $mix" >&2

# field FILE KEY...: a value of a model file (one JSON object), e.g. field m.json validation loss.
field() {
  python3 -c 'import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2:]: v = v[k]
print(v)' "$@"
}

best=""
best_loss=""
for s in $seeds; do
  model="$work/lstm-seed$s.json"
  echo "make-shipped-lstm: training seed $s" >&2
  "$clv" train --events "$mix" --portable --shop-separator : --horizon 365d --min-horizon 30d \
    --epochs 12 --batch-users 64 --lr 2e-3 --patience 12 --threads 1 --no-calibrate-total \
    --seed "$s" --out "$model" >&2
  loss=$(field "$model" validation loss)
  echo "make-shipped-lstm: seed $s validation loss $loss ($(field "$model" version))" >&2
  if [[ -z "$best" ]] || awk -v a="$loss" -v b="$best_loss" 'BEGIN { exit !(a < b) }'; then
    best="$model"
    best_loss="$loss"
  fi
done
cp "$best" "$out"
echo "make-shipped-lstm: kept $best (validation loss $best_loss) as $out: $(field "$out" version)"
