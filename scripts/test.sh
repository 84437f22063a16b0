#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (unit + integration) with ctest.
# The exit status is ctest's. Integration tests need root (network namespaces).
#
# Environment: BUILD_DIR (default build), CMAKE_ARGS (extra configure arguments,
# e.g. -DSHUNT_SANITIZE=ON), CTEST_ARGS (extra ctest arguments, e.g. -L integration),
# CTEST_EXCLUDE (labels left out, a regex; default long, the hour-long runs: e.g.
# 'long|fuzz' also leaves out the fuzz targets, which build with clang).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}

scripts/install-deps.sh
# shellcheck disable=SC2086  # word lists on purpose
cmake -S . -B "$build" ${CMAKE_ARGS:-}
cmake --build "$build" -j2
set +e
# shellcheck disable=SC2086
ctest --test-dir "$build" --output-on-failure --no-tests=error -LE "${CTEST_EXCLUDE:-long}" ${CTEST_ARGS:-}
rc=$?
echo "ctest exit status: $rc"
exit "$rc"
