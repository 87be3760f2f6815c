#!/usr/bin/env bash
# Regenerates docs/CONFIGURATION.md from the option table in config/config.cpp:
#   build/apps/clv config --markdown > docs/CONFIGURATION.md
# Usage: scripts/gen-config-docs.sh [BUILD_DIR]   (default: build)
# Falls back to the config test (which writes the fresh text to
# $TMPDIR/clv-CONFIGURATION.md when the docs differ) while the clv binary has
# no `config` subcommand.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${1:-build}"
clv="$build_dir/apps/clv"
config_test="$build_dir/tests/config_test"
fresh="$(mktemp)"
trap 'rm -f "$fresh"' EXIT

if [[ -x "$clv" ]] && "$clv" config --markdown >"$fresh" 2>/dev/null &&
    head -n 1 "$fresh" | grep -q '^# clvstream configuration'; then
  :
elif [[ -x "$config_test" ]]; then
  generated="${TMPDIR:-/tmp}/clv-CONFIGURATION.md"
  rm -f "$generated"
  "$config_test" --gtest_filter='ConfigDocs.ConfigurationMdIsGeneratedFromTheOptionTable' >/dev/null 2>&1 || true
  if [[ ! -f "$generated" ]]; then
    echo "docs/CONFIGURATION.md is already up to date"
    exit 0
  fi
  mv "$generated" "$fresh"
else
  echo "gen-config-docs: build $clv or $config_test first (cmake --build $build_dir --target clv)" >&2
  exit 1
fi
cat "$fresh" >docs/CONFIGURATION.md
echo "wrote docs/CONFIGURATION.md"
