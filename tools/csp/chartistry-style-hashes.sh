#!/usr/bin/env bash
# Prints the CSP hashes of every fixed `style="..."` attribute in the leptos-chartistry crate the
# app uses, for index.html's `style-src 'self' 'unsafe-hashes' ...` (dynamic styles go through
# the CSSOM, which CSP does not restrict). Run after changing the chartistry version.
set -euo pipefail
version=$(grep -A1 'name = "leptos-chartistry"' "$(dirname "$0")/../../Cargo.lock" | sed -n 's/version = "\(.*\)"/\1/p')
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/leptos-chartistry-"$version"/src | head -1)
grep -rhoP 'style="[^"]*"' "$src" | sort -u | while read -r line; do
  value=${line#style=\"}; value=${value%\"}
  printf "'sha256-%s' " "$(printf '%s' "$value" | openssl dgst -sha256 -binary | base64)"
done
echo
