#!/usr/bin/env bash
# mypy cannot follow setuptools' package-dir mapping, so it is given the installed layout as a
# tree of links: build/typecheck/hookpipe/ holds hookpipe/'s files, and ingress/, workers/ and
# schemas/ under the names they install as. Rebuilt on every run, so it never goes stale.
set -euo pipefail
cd "$(dirname "$0")/.."
root=build/typecheck
rm -rf "$root"
mkdir -p "$root/hookpipe"
for entry in hookpipe/*; do
    ln -s "../../../$entry" "$root/hookpipe/$(basename "$entry")"
done
for folder in ingress workers schemas; do
    ln -s "../../../$folder" "$root/hookpipe/$folder"
done
