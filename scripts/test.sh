#!/usr/bin/env bash
# Sets up the machine, builds, and runs the test suite: the one command the
# README gives to "set up and pass the tests". Also what .ci/run execs.
#
#   scripts/test.sh [LABEL | -L LABEL] [--sanitize] [--no-setup]
#
#   LABEL        run only the ctest tests with this label (unit, integration, scenario)
#   --sanitize   also build the unit tests with ASan+UBSan in build-asan and run them,
#                and run the libFuzzer targets (clang, build-fuzz) for a bounded time
#                (always on when CI=true)
#   --no-setup   skip scripts/setup.sh (packages + build) and use ./build as it is
#
# Phases, one status line each: setup, install (cmake --install build: the
# integration tests run `mount -t mirrorfs` through /sbin/mount.mirrorfs),
# lint, ctest (whose own output is shown), asan, fuzz, mounts. A failed setup stops
# the run; any other failure is reported and the remaining phases still run,
# so one CI run shows every problem. Exit status 0 only if every phase passed.
# A fuse.mirrorfs mount left behind by the run fails it (and is lazily
# unmounted). Build logs go to build/test-logs/; their first errors and tail
# are printed when a build fails.
#
# Environment: CI=true (implies --sanitize and MIRRORFS_WERROR=ON),
# MIRRORFS_WERROR (passed to setup.sh), MIRRORFS_CTEST_TIMEOUT (overall ctest
# budget, default 40m), MIRRORFS_ASAN_TIMEOUT (ASan build + run, default 30m),
# MIRRORFS_FUZZ_SECONDS (run time of each fuzz target, default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

label=""
sanitize=0
run_setup=1
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -L|--label) [ $# -ge 2 ] || { echo "test.sh: $1 needs a label" >&2; exit 2; }
                label="$2"; shift 2 ;;
    --sanitize) sanitize=1; shift ;;
    --no-setup) run_setup=0; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "test.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) [ -z "$label" ] || { echo "test.sh: more than one label" >&2; exit 2; }
       label="$1"; shift ;;
  esac
done
if [ "${CI:-}" = true ]; then
  sanitize=1
  export MIRRORFS_WERROR="${MIRRORFS_WERROR:-ON}"
fi
ctest_budget="${MIRRORFS_CTEST_TIMEOUT:-40m}"
asan_budget="${MIRRORFS_ASAN_TIMEOUT:-30m}"
jobs=2

log_dir="$repo/build/test-logs"
mkdir -p "$log_dir"
failed=()
t_start=$SECONDS

say() { printf '[test] %s\n' "$*"; }
elapsed() { printf '%ds' $((SECONDS - $1)); }
phase_ok() { say "$1: ok ($(elapsed "$2"))${3:+ $3}"; }
phase_fail() { say "$1: FAILED ($(elapsed "$2"))${3:+ $3}"; failed+=("$1"); }

# Prints what matters of a build log: the first error lines, then the tail.
show_log() {
  local log=$1
  echo "----- $log (first errors) -----"
  grep -nE -m 30 'error|Error|FAILED|undefined reference' "$log" || true
  echo "----- $log (last 40 lines) -----"
  tail -n 40 "$log"
  echo "-----"
}

# --- mounts -------------------------------------------------------------------
# /proc/mounts escapes space, tab, newline and backslash as \ooo.
unescape_mount_path() { printf '%b' "$(printf '%s' "$1" | sed -E 's/\\([0-7]{3})/\\0\1/g')"; }
mirrorfs_mounts() { awk '$3 == "fuse.mirrorfs" { print $2 }' /proc/mounts; }

# Mounts that existed before the run are someone else's (a developer's own
# mount, a benchmark running beside us): note them, never touch them.
mounts_before="$(mirrorfs_mounts)"
[ -z "$mounts_before" ] ||
  say "note: fuse.mirrorfs mounts present before the run are left alone: $(echo "$mounts_before" | tr '\n' ' ')"

mounts_checked=0
check_mounts() {
  mounts_checked=1
  local t0=$SECONDS left=() m path
  while IFS= read -r m; do
    [ -n "$m" ] || continue
    grep -qxF -- "$m" <<<"$mounts_before" && continue
    left+=("$m")
  done <<<"$(mirrorfs_mounts)"
  if [ ${#left[@]} -eq 0 ]; then
    phase_ok mounts "$t0" "(no fuse.mirrorfs mount left)"
    return
  fi
  for m in "${left[@]}"; do
    path="$(unescape_mount_path "$m")"
    if fusermount3 -u -z -- "$path" 2>/dev/null; then
      say "mounts: left behind and lazily unmounted: $path"
    else
      say "mounts: left behind and could NOT be unmounted: $path"
    fi
  done
  phase_fail mounts "$t0" "(${#left[@]} fuse.mirrorfs mount(s) left by the tests)"
}
# shellcheck disable=SC2317  # trap handler
on_exit() {
  local rc=$?
  if [ "$mounts_checked" = 0 ]; then
    check_mounts || true
    [ ${#failed[@]} -eq 0 ] || rc=1
  fi
  exit "$rc"
}
# Bounded commands run in the background under timeout(1), which puts them in
# a process group of their own (so a budget overrun kills every test process);
# Ctrl-C then reaches only this shell, which passes it on.
bounded_pid=""
run_bounded() {  # run_bounded BUDGET CMD...
  local budget=$1 rc=0
  shift
  timeout --kill-after=30s "$budget" "$@" &
  bounded_pid=$!
  wait "$bounded_pid" || rc=$?
  bounded_pid=""
  return "$rc"
}
# shellcheck disable=SC2317  # trap handler
on_signal() {
  say "interrupted"
  if [ -n "$bounded_pid" ]; then
    kill -TERM "$bounded_pid" 2>/dev/null || true
    wait "$bounded_pid" 2>/dev/null || true
  fi
  exit 130
}
trap on_exit EXIT
trap on_signal INT TERM

# --- setup: packages, configure, build ----------------------------------------
if [ "$run_setup" = 1 ]; then
  t0=$SECONDS
  if scripts/setup.sh >"$log_dir/setup.log" 2>&1; then
    phase_ok setup "$t0" "(MIRRORFS_WERROR=${MIRRORFS_WERROR:-OFF}; log build/test-logs/setup.log)"
  else
    show_log "$log_dir/setup.log"
    phase_fail setup "$t0" "(see build/test-logs/setup.log)"
    say "FAILED: ${failed[*]}"
    exit 1
  fi
else
  say "setup: skipped (--no-setup)"
fi

# --- install: the mount(8) path is tested, so mount.mirrorfs must be in /sbin ----
t0=$SECONDS
if cmake --install build >"$log_dir/install.log" 2>&1; then
  phase_ok install "$t0" "(mirrorfs, /sbin/mount.mirrorfs)"
else
  show_log "$log_dir/install.log"
  phase_fail install "$t0" "(see build/test-logs/install.log)"
fi

# --- lint: module boundaries ----------------------------------------------------
# fs/ serves FUSE, replicate/ replicates; they share only fs/api/ (no FUSE headers).
t0=$SECONDS
sources=()
while IFS= read -r -d '' f; do sources+=("${f#./}"); done < <(
  find . \( -name '.git' -o -name 'build*' \) -prune -o \
    -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.cc' -o -name '*.hh' \) \
    -print0 | sort -z)
lint_errors=()
lint_rule() {  # lint_rule DESCRIPTION FILE_FILTER_REGEX INCLUDE_REGEX [ALLOWED_REGEX]
  local desc=$1 files_re=$2 inc_re=$3 allow_re=${4:-} f hits
  for f in "${sources[@]}"; do
    [[ "$f" =~ $files_re ]] || continue
    hits="$(grep -nE "^[[:space:]]*#[[:space:]]*include[[:space:]]*$inc_re" -- "$f" || true)"
    [ -n "$allow_re" ] && [ -n "$hits" ] && hits="$(grep -vE "$allow_re" <<<"$hits" || true)"
    [ -z "$hits" ] || while IFS= read -r h; do lint_errors+=("$f:$h  ($desc)"); done <<<"$hits"
  done
}
lint_rule 'FUSE headers only in fs/'                 '^([^f]|f[^s]|fs[^/])'  '<fuse'
lint_rule 'fs/api/ is FUSE-free'                     '^fs/api/'              '<fuse'
lint_rule 'replicate/ includes only fs/api/ of fs/'  '^replicate/'           '"fs/'  'include[[:space:]]*"fs/api/'
lint_rule 'fs/ knows nothing of replicate/'          '^fs/'                  '"replicate/'
if [ ${#sources[@]} -eq 0 ]; then
  phase_fail lint "$t0" "(no C++ sources found)"
elif [ ${#lint_errors[@]} -eq 0 ]; then
  phase_ok lint "$t0" "(${#sources[@]} files, module boundaries hold)"
else
  printf '  %s\n' "${lint_errors[@]}"
  phase_fail lint "$t0" "(${#lint_errors[@]} boundary violation(s))"
fi

# --- ctest ------------------------------------------------------------------------
t0=$SECONDS
ctest_args=(--test-dir build --output-on-failure -j"$jobs" --no-tests=error)
[ -z "$label" ] || ctest_args+=(-L "$label")
say "ctest: running${label:+ label $label} (budget $ctest_budget)"
rc=0
run_bounded "$ctest_budget" ctest "${ctest_args[@]}" || rc=$?
if [ "$rc" = 0 ]; then
  phase_ok ctest "$t0"
elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  phase_fail ctest "$t0" "(overall budget $ctest_budget exceeded)"
else
  phase_fail ctest "$t0" "(exit $rc)"
fi

# --- asan: ASan+UBSan build of the unit tests -------------------------------------
# Only the unit tests (and what they depend on) are built here: an ASan build of
# everything would double CI time on 2 cores for little gain, since the
# integration tests mostly exercise the kernel and the unsanitized daemon.
run_asan() {
  local t0=$SECONDS targets=() f name rc=0
  for f in tests/unit/*_test.cpp; do
    [ -e "$f" ] || continue
    name="$(basename "$f" .cpp)"
    targets+=("$name")
  done
  if [ ${#targets[@]} -eq 0 ]; then
    phase_fail asan "$t0" "(no tests/unit/*_test.cpp to build)"
    return
  fi
  if ! { cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG='-g -O1' \
           -DMIRRORFS_SANITIZE=address,undefined -DMIRRORFS_WERROR="${MIRRORFS_WERROR:-OFF}" &&
         run_bounded "$asan_budget" cmake --build build-asan -j"$jobs" --target "${targets[@]}"; } >"$log_dir/asan-build.log" 2>&1; then
    show_log "$log_dir/asan-build.log"
    phase_fail asan "$t0" "(build failed, see build/test-logs/asan-build.log)"
    return
  fi
  say "asan: built ${#targets[@]} unit test executable(s) in $(elapsed "$t0"); running label unit"
  # halt_on_error: UBSan only prints by default; a report must fail the test.
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1}" \
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}" \
    run_bounded "$asan_budget" ctest --test-dir build-asan --output-on-failure -j"$jobs" --no-tests=error -L unit || rc=$?
  if [ "$rc" = 0 ]; then
    phase_ok asan "$t0" "(ASan+UBSan, label unit)"
  else
    phase_fail asan "$t0" "(ASan+UBSan unit tests, exit $rc)"
  fi
}
# --- fuzz: libFuzzer targets (tests/fuzz), clang with ASan+UBSan -------------------
# The seeds in tests/fuzz/corpus are read, never written: what a run finds
# goes to a scratch directory; a crash leaves its input in build/test-logs.
run_fuzz() {
  local t0=$SECONDS secs="${MIRRORFS_FUZZ_SECONDS:-60}" rc=0 work
  if ! { cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
           -DMIRRORFS_FUZZ=ON -DMIRRORFS_TESTS=OFF &&
         run_bounded 20m cmake --build build-fuzz -j"$jobs" --target protocol_fuzz; } >"$log_dir/fuzz-build.log" 2>&1; then
    show_log "$log_dir/fuzz-build.log"
    phase_fail fuzz "$t0" "(build failed, see build/test-logs/fuzz-build.log)"
    return
  fi
  work="$(mktemp -d)"
  say "fuzz: protocol_fuzz for ${secs}s"
  (cd "$log_dir" && run_bounded "$((secs + 120))s" "$repo/build-fuzz/tests/fuzz/protocol_fuzz" \
     -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
     "$work" "$repo/tests/fuzz/corpus") >"$log_dir/fuzz.log" 2>&1 || rc=$?
  rm -rf "$work"
  if [ "$rc" = 0 ]; then
    phase_ok fuzz "$t0" "(protocol_fuzz: $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log_dir/fuzz.log" | grep -o '[0-9]*$') inputs, nothing found)"
  else
    tail -n 40 "$log_dir/fuzz.log"
    phase_fail fuzz "$t0" "(protocol_fuzz exit $rc; the input is in build/test-logs/crash-*)"
  fi
}
if [ "$sanitize" = 1 ]; then
  run_asan
  run_fuzz
else
  say "asan, fuzz: skipped (pass --sanitize, or CI=true)"
fi

# --- mounts left behind -------------------------------------------------------------
check_mounts

if [ ${#failed[@]} -eq 0 ]; then
  say "all phases passed in $(elapsed "$t_start")"
  exit 0
fi
say "FAILED: ${failed[*]} (total $(elapsed "$t_start"))"
exit 1
