#!/usr/bin/env bash
# The web app's CI steps (run by .ci/run after `cargo test`, which built target/debug/edgechat):
# install the locked npm packages, regenerate the protobuf code and rebuild the bundle and fail
# if either differs from what is committed (the server embeds web/dist/ at cargo build time,
# so a stale bundle would ship), typecheck, unit tests, then the browser suite in Debian's
# Chromium against the real server, installing chromium with apt-get when it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

echo "==> web: npm ci"
npm ci --no-audit --no-fund

echo "==> web: regenerate src/gen and rebuild dist; both must match the commit"
npm run --silent gen
npm run --silent build
if [ -n "$(git status --porcelain -- src/gen dist)" ]; then
  git status --short -- src/gen dist
  echo "web/src/gen or web/dist is stale: run 'npm run gen && npm run build' in web/ and commit" >&2
  exit 1
fi

echo "==> web: typecheck and unit tests"
npm run --silent typecheck
npm test

if ! command -v "${CHROMIUM:-/usr/bin/chromium}" > /dev/null; then
  echo "==> web: installing chromium (apt-get)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium > /dev/null
fi

echo "==> web: browser suite (Chromium, real server; screenshots in target/web-screenshots)"
# The binary must embed this bundle: cargo rebuilds it if web/dist changed since `cargo test`.
(cd .. && cargo build --quiet)
npm run --silent browser
