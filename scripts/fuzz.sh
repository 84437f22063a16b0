#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer, and runs each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     SECONDS per target, default 30
#   scripts/fuzz.sh --merge [TARGET...]       fold what runs found into fuzz/corpus
#
# Targets: fuzz_wire (the packet parsers on arbitrary bytes), fuzz_engine (the
# protocol engine fed frame sequences, time steps and socket calls) and
# fuzz_daemon (shuntd fed hostile application commands and region contents). Each starts
# from a seed corpus written by make_corpus (valid SYN, SYN-ACK, data, SACK, FIN,
# RST, ARP, ICMP echo; whole conversations for the engine), plus the corpus kept in
# the repository (fuzz/corpus/{wire,engine,daemon}: inputs earlier long runs found,
# minimized), plus what runs on this machine found (BUILD_DIR/corpus-work/TARGET,
# where new inputs go). --merge minimizes corpus-work into fuzz/corpus (libFuzzer
# -merge=1) for a commit. Exit status 0 when no target crashed; on a crash the
# input is saved under BUILD_DIR/artifacts/ and the command that replays it is
# printed.
#
# Environment: BUILD_DIR (default build-fuzz), JOBS (build parallelism, default 2),
# SHUNT_FUZZ_DRAIN=1 (fuzz_engine also requires every connection to go away once
# its socket is closed and time passes), FUZZ_ARGS (extra libFuzzer flags, e.g.
# -seed=1 or -jobs=2).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
merge=0
if [[ ${1:-} == --merge ]]; then
  merge=1
  shift
  secs=1
else
  secs=${1:-30}
  shift || true
fi
targets=("$@")
((${#targets[@]})) || targets=(fuzz_wire fuzz_engine fuzz_daemon)
build=${BUILD_DIR:-build-fuzz}
[[ $build == /* ]] || build=$root/$build

if ! [[ $secs =~ ^[0-9]+$ ]] || ((secs < 1)); then
  echo "fuzz.sh: SECONDS '$secs' must be a positive integer" >&2
  exit 2
fi
if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: clang++ not found: run scripts/install-deps.sh (clang, libclang-rt-14-dev)" >&2
  exit 1
fi

start=$(date +%s)
echo "fuzz.sh: building in $build"
mkdir -p "$build"
if ! CC=clang CXX=clang++ cmake -S fuzz -B "$build" >"$build/configure.log" 2>&1; then
  cat "$build/configure.log" >&2
  echo "fuzz.sh: configure failed" >&2
  exit 1
fi
if ! cmake --build "$build" -j"${JOBS:-2}" >"$build/build.log" 2>&1; then
  grep -E 'error|Error' "$build/build.log" | head -n 40 >&2
  echo "fuzz.sh: build failed (full log: $build/build.log)" >&2
  exit 1
fi
echo "fuzz.sh: built in $(($(date +%s) - start)) s"

seeds=$build/corpus-seed
rm -rf "$seeds"
"$build/bin/make_corpus" "$seeds" || exit 1
mkdir -p "$build/artifacts"

failed=0
for t in "${targets[@]}"; do
  case $t in
    fuzz_wire) corpus=wire ;;
    fuzz_engine) corpus=engine ;;
    fuzz_daemon) corpus=daemon ;;
    *)
      echo "fuzz.sh: unknown target $t (fuzz_wire, fuzz_engine, fuzz_daemon)" >&2
      exit 2
      ;;
  esac
  work=$build/corpus-work/$t
  kept=$root/fuzz/corpus/$corpus
  mkdir -p "$work" "$kept"
  log=$build/$t.log
  if ((merge)); then
    before=$(find "$kept" -type f | wc -l)
    if ! "$build/bin/$t" -merge=1 -timeout=10 -rss_limit_mb=2048 -max_len=4096 "$kept" "$work" >"$log" 2>&1; then
      echo "fuzz.sh: merging $t failed (log: $log)" >&2
      failed=1
      continue
    fi
    echo "fuzz.sh: $t: fuzz/corpus/$corpus has $(find "$kept" -type f | wc -l) inputs (was $before)"
    continue
  fi
  echo "fuzz.sh: $t for $secs s (seeds: $(find "$seeds/$corpus" -type f | wc -l), kept: $(find "$kept" -type f | wc -l), found here: $(find "$work" -type f | wc -l))"
  # The outer timeout only guards against a hang in libFuzzer itself.
  # shellcheck disable=SC2086  # FUZZ_ARGS is a word list
  timeout --kill-after=10 $((secs + 120)) "$build/bin/$t" -max_total_time="$secs" -timeout=10 \
    -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
    ${FUZZ_ARGS:-} "$work" "$kept" "$seeds/$corpus" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
  if ((rc == 0)); then
    echo "fuzz.sh: $t ok: ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-?}, corpus $(find "$work" -type f | wc -l)"
  else
    failed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    echo "fuzz.sh: $t FAILED (exit $rc) after ${runs:-?} runs" >&2
    # The harness's own message, the sanitizer's summary and the top of the stack.
    grep -E '^(fuzz_|parsed|written back|tcp_header_len|  [0-9a-f]{8}:)|ERROR: |SUMMARY: |runtime error' "$log" | head -n 20 >&2
    grep -E '^ +#[0-9]+ ' "$log" | grep -v -E 'libFuzzer|fuzzer::|__sanitizer|libc\.so|_start' | head -n 12 >&2
    if [[ -n $artifact ]]; then
      echo "fuzz.sh: input saved: $artifact" >&2
      echo "fuzz.sh: replay: $build/bin/$t $artifact" >&2
    fi
    echo "fuzz.sh: full log: $log" >&2
  fi
done
echo "fuzz.sh: done in $(($(date +%s) - start)) s"
exit "$failed"
