#!/bin/sh
# Regenerates the image's lock files from pyproject.toml, with every distribution's sha256:
#   deploy/requirements.lock        hookpipe's runtime dependencies, pinned
#   deploy/requirements-build.lock  what builds hookpipe's own wheel (setuptools)
# Run it after changing the dependencies in pyproject.toml; it needs the package index (uv,
# installed into a throwaway venv, resolves for Linux and Python 3.11, the image's).
# tests/test_deploy.py checks that every runtime dependency is pinned in the lock.
set -eu
cd "$(dirname "$0")/.."
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/pip" install --quiet uv
# --no-config: no index or pip.conf of this machine's own; the resolution is the public index's.
compile() {
    "$tools/bin/uv" pip compile --quiet --no-config --generate-hashes \
        --python-version 3.11 --python-platform linux --custom-compile-command deploy/lock.sh \
        "$@"
}
compile pyproject.toml -o deploy/requirements.lock
printf 'setuptools>=68\n' | compile - -o deploy/requirements-build.lock
echo "wrote deploy/requirements.lock and deploy/requirements-build.lock"
