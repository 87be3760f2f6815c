#!/usr/bin/env bash
# clang-format (the repo's .clang-format) over every tracked .h/.cpp file.
#   scripts/format.sh          rewrite the files in place
#   scripts/format.sh --check  change nothing; list the files that differ and
#                              exit 1 if any does (.ci/run)
# Only files git tracks are read, so build directories never are.
set -euo pipefail
cd "$(dirname "$0")/.."
clang_format=${CLANG_FORMAT:-clang-format}
if ! command -v "$clang_format" >/dev/null; then
  echo "format: $clang_format not found (scripts/install-deps.sh)" >&2
  exit 2
fi
mapfile -t files < <(git ls-files '*.h' '*.cpp')
if [[ ${1:-} == --check ]]; then
  bad=()
  for f in "${files[@]}"; do
    "$clang_format" --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if ((${#bad[@]} > 0)); then
    echo "format: ${#bad[@]} of ${#files[@]} files differ from .clang-format" \
      "(fix: scripts/format.sh):" >&2
    printf '  %s\n' "${bad[@]}" >&2
    exit 1
  fi
  echo "format: ${#files[@]} files match .clang-format"
else
  "$clang_format" -i "${files[@]}"
  echo "format: formatted ${#files[@]} files"
fi
