#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (unit + integration) with ctest,
# then the unit and integration tests again in an ASan/UBSan build. The exit status
# is the first failing ctest's. Integration tests need root (network namespaces).
#
# Environment: BUILD_DIR (default build), CMAKE_ARGS (extra configure arguments,
# e.g. -DSHUNT_SANITIZE=ON), CTEST_ARGS (extra ctest arguments, e.g. -L integration),
# CTEST_EXCLUDE (labels left out, a regex; default long, the hour-long runs: e.g.
# 'long|fuzz' also leaves out the fuzz targets, which build with clang),
# SHUNT_TEST_SANITIZE (0: no second pass in an ASan/UBSan build, BUILD_DIR-asan or
# SANITIZE_BUILD_DIR).
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

# The unit and integration tests again, built with ASan and UBSan in their own
# directory (shuntd, the engine and every test program sanitized; libshunt.so is
# not, as the programs it goes into are not: preload/CMakeLists.txt). The fuzz
# targets are sanitized already; the benchmark measures the production build.
# SHUNT_TEST_SANITIZE=0 skips this pass.
if [[ ${SHUNT_TEST_SANITIZE:-1} != 0 ]]; then
  san=${SANITIZE_BUILD_DIR:-$build-asan}
  set -e
  # shellcheck disable=SC2086
  cmake -S . -B "$san" -DSHUNT_SANITIZE=ON -DSHUNT_BUILD_BENCH=OFF ${CMAKE_ARGS:-}
  cmake --build "$san" -j2
  set +e
  # shellcheck disable=SC2086
  ctest --test-dir "$san" --output-on-failure --no-tests=error -LE "long|fuzz|bench" ${CTEST_ARGS:-}
  san_rc=$?
  echo "ctest exit status (ASan/UBSan build): $san_rc"
  ((rc != 0)) || rc=$san_rc
fi
exit "$rc"
