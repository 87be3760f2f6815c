#!/usr/bin/env bash
# Robustness matrix (issue 10, item 5): every `clv gen` shop profile and the real datasets of
# ../shared/data, each through `clv fit-baseline` (BG/NBD + Gamma-Gamma), `clv train` (the
# LSTM with its default flags) and `clv eval`, printed as one Markdown table for
# docs/MODELS.md: normalized Gini, Spearman, MAE and predicted total / actual total of the
# LSTM, BG/NBD + GG and the simple formula.
#
# Usage: scripts/robustness-matrix.sh [BUILD_DIR] [WORK_DIR]
#   USERS=3000 DAYS=365 HORIZON=180 SEED=8   synthetic shop size (long_history: USERS/10)
#   PROFILES="wholesale one_time ..."         profiles to run (default: all but "default" first)
#   DATASETS="cdnow dunnhumby grocery"        real datasets to run ("" = none)
#   TRAIN_FLAGS="--epochs 5"                  extra `clv train` flags (default: none)
# Synthetic shops are judged against the generator's truth (realized spend after the period);
# real datasets on their usual calibration/holdout split. Runs take long at the default size:
# run it with `nice`, one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${1:-build}"
work="${2:-$(mktemp -d)}"
clv="$build_dir/apps/clv"
data="${CLV_SHARED_DATA:-$(cd .. && pwd)/shared/data}"
users="${USERS:-3000}"
days="${DAYS:-365}"
horizon="${HORIZON:-180}"
seed="${SEED:-8}"
profiles="${PROFILES:-default wholesale one_time no_dropout high_dropout long_history day_granularity cents}"
datasets="${DATASETS-cdnow dunnhumby grocery}"
read -r -a train_flags <<<"${TRAIN_FLAGS:-}"
mkdir -p "$work"
[[ -x "$clv" ]] || { echo "robustness-matrix: no $clv (build it first)" >&2; exit 2; }

rows=()
# row NAME REPORT: one table row per model of interest from an eval JSON report.
row() {
  python3 - "$1" "$2" <<'PY'
import json, math, sys
name, path = sys.argv[1], sys.argv[2]
report = json.load(open(path))
def fmt(v, digits=3):
    return "n/a" if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) \
        else f"{v:.{digits}f}"
cells = []
for prefix in ("LSTM", "BG/NBD", "simple formula"):
    m = next((m for m in report["models"] if m["name"].startswith(prefix)), None)
    if m is None:
        cells.append("-- | -- | -- | --")
        continue
    actual = m.get("total_actual")
    ratio = m["total_predicted"] / actual if actual else None
    cells.append(" | ".join([fmt(m.get("normalized_gini")), fmt(m.get("spearman")),
                             fmt(m.get("mae"), 2), fmt(ratio, 2)]))
print(f"| {name} | " + " | ".join(cells) + " |")
PY
}

# run NAME CUTOFF HORIZON_DAYS TRUTH EXTRA_ARGS...: fit, train, eval; appends a row.
run() {
  local name="$1" cutoff="$2" hz="$3" truth="$4"
  shift 4
  local dir="$work/$name"
  mkdir -p "$dir"
  local -a events=("$@")
  local -a truth_args=()
  [[ -n "$truth" ]] && truth_args=(--truth "$truth")
  echo "robustness-matrix: $name: fit-baseline" >&2
  "$clv" fit-baseline "${events[@]}" --calibration-end "$cutoff" --out "$dir/baseline.json" \
    >"$dir/fit.log" 2>&1 || { rows+=("| $name | fit-baseline failed: $(tail -1 "$dir/fit.log") |"); return; }
  echo "robustness-matrix: $name: train" >&2
  "$clv" train "${events[@]}" --calibration-end "$cutoff" --horizon "${hz}d" \
    --out "$dir/lstm.json" "${train_flags[@]}" >"$dir/train.log" 2>&1 ||
    { rows+=("| $name | train failed: $(tail -1 "$dir/train.log") |"); return; }
  echo "robustness-matrix: $name: eval" >&2
  "$clv" eval "${events[@]}" --cutoff "$cutoff" --horizon "${hz}d" --model "$dir/lstm.json" \
    --baseline "$dir/baseline.json" "${truth_args[@]}" --json "$dir/report.json" \
    >"$dir/eval.log" 2>&1 || { rows+=("| $name | eval failed: $(tail -1 "$dir/eval.log") |"); return; }
  rows+=("$(row "$name" "$dir/report.json")")
}

for profile in $profiles; do
  n="$users"
  [[ "$profile" == long_history ]] && n=$((users / 10))
  dir="$work/$profile"
  mkdir -p "$dir"
  echo "robustness-matrix: $profile: gen $n users, $days days" >&2
  "$clv" gen --profile "$profile" --users "$n" --days "$days" --seed "$seed" --start 2025-01-01 \
    --horizon "${horizon}d" --out "$dir/events.jsonl" --truth "$dir/truth.jsonl" 2>"$dir/gen.log"
  cutoff=$(python3 -c "import datetime as d; print(d.date(2025,1,1)+d.timedelta(days=$days))")
  # The truth's realized spend is the actual; train on the period itself.
  run "$profile" "$cutoff" "$horizon" "$dir/truth.jsonl" --events "$dir/events.jsonl"
done

for dataset in $datasets; do
  case "$dataset" in
    cdnow)
      run "CDNOW (master)" 1997-10-01 273 "" --events "$data/cdnow/CDNOW_master.txt" \
        --config config/samples/cdnow.json ;;
    dunnhumby)
      run "dunnhumby" 2017-09-01 121 "" --events "$data/dunnhumby/baskets.csv" \
        --set mapping.user_id_field=household_id --set mapping.event_id_field=basket_id \
        --set mapping.ts_field=transaction_timestamp --set "mapping.ts_format=%Y-%m-%d %H:%M:%S" \
        --set mapping.amount_field=sales_value --set mapping.default_type=purchase \
        --set validation.min_ts_ms=0 ;;
    grocery)
      # No value column: judged on purchases (docs/MODELS.md, "Data without order values").
      run "grocery (purchases)" 2007-01-01 364 "" --events "$data/grocery/groceryElog.csv" \
        --config config/samples/grocery.json ;;
    *) echo "robustness-matrix: unknown dataset $dataset" >&2 ;;
  esac
done

echo "| shop | LSTM Gini | Spearman | MAE | total ratio | BG/NBD+GG Gini | Spearman | MAE | total ratio | formula Gini | Spearman | MAE | total ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo "(work files in $work)" >&2
