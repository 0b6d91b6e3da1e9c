#!/usr/bin/env bash
# The FUSE-cost benchmark: the same fio jobs on a native directory, on a
# mirrorfs mount (no target) and on a bindfs mount, all on one filesystem.
#
#   scripts/bench_fs.sh [--quick] [--json FILE] [--dir DIR] [--bin PATH]
#                       [--systems native,mirrorfs,bindfs] [--reps N]
#
#   --quick     smaller sizes and 1 repetition (under ~3 minutes)
#   --json FILE also write the JSON lines to FILE
#   --dir DIR   where to make the scratch directory (default /var/tmp; it must
#               be a disk filesystem, not tmpfs, so that fsync means something)
#   --bin PATH  the mirrorfs binary (default build/mirrorfs)
#   --systems   which columns to run (default all three)
#   --reps N    repetitions per job; the median is reported (default 3, quick 1)
#
# MIRRORFS_OPTS (environment) adds mount options to the mirrorfs row, e.g.
# MIRRORFS_OPTS=writeback=yes.
#
# Output on stdout: one JSON line per (system, job), then a markdown table.
# Progress on stderr. Run as root (drop_caches; apt-get for fio and bindfs).
#
# Jobs (fio, ioengine=psync, numjobs=1, fallocate=none on every system; each
# rep starts after a sync so it does not pay for the previous one's writeback):
#   seqwrite_1M      buffered 1 MiB writes of a new file, end_fsync=1 (the
#                    fsync is inside fio's measured time)
#   seqread_1M_cold  1 MiB reads of that file after `echo 3 > drop_caches`:
#                    the file cannot be made bigger than RAM in the time budget,
#                    so the cache is dropped instead; this measures the first
#                    read of data from disk through the FUSE layer
#   seqread_1M_warm  the same reads again (3 passes) without dropping: data in
#                    the page cache, so this is the pure cost of the read path
#   randwrite_4k     buffered random 4 KiB overwrites of a preallocated file
#                    (every block once), end_fsync=1
#   meta_create      create + 4 KiB write + close of many files in one directory
#   meta_stat        stat of each of them, 5 passes (fio filestat engine)
#   meta_unlink      unlink of each of them (fio filedelete engine)
#                    (file_service_type=sequential, openfiles=1: otherwise fio
#                    measures its own round-robin file handling; a fresh
#                    directory per rep, see spread_dirs)
# Each timed run is capped by fio's runtime= (the bandwidth of what was done
# is still exact) and by a hard timeout against a hung mount.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

quick=0
json_out=""
base_dir=/var/tmp
bin="$repo/build/mirrorfs"
systems="native,mirrorfs,bindfs"
reps=""
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; }
need_arg() { [ "$2" -ge 2 ] || { echo "bench_fs.sh: $1 needs an argument" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --json) need_arg "$1" $#; json_out="$2"; shift 2 ;;
    --dir) need_arg "$1" $#; base_dir="$2"; shift 2 ;;
    --bin) need_arg "$1" $#; bin="$2"; shift 2 ;;
    --systems) need_arg "$1" $#; systems="$2"; shift 2 ;;
    --reps) need_arg "$1" $#; reps="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench_fs.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$quick" = 1 ]; then
  seq_size=256M rand_size=64M meta_files=5000 cap=10 reps=${reps:-1}
else
  seq_size=1G rand_size=256M meta_files=20000 cap=30 reps=${reps:-3}
fi
hard_timeout=$((cap * 4 + 120))   # per fio run, against a hung mount

say() { printf '[bench] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

IFS=, read -r -a system_list <<<"$systems"
for s in "${system_list[@]}"; do
  case "$s" in native|mirrorfs|bindfs) ;; *) die "unknown system '$s'";; esac
done
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || die "--reps wants a positive number, got '$reps'"
[ "$(id -u)" = 0 ] || die "run as root (drop_caches, apt-get)"
has_system() { [[ ",$systems," == *",$1,"* ]]; }
if has_system mirrorfs; then
  [ -x "$bin" ] || die "no mirrorfs binary at $bin (build it, pass --bin, or --systems native,bindfs)"
  bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
fi

# --- tools ----------------------------------------------------------------------
missing=()
command -v fio >/dev/null || missing+=(fio)
has_system bindfs && ! command -v bindfs >/dev/null && missing+=(bindfs)
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- scratch, mounts, cleanup -------------------------------------------------------
[ -d "$base_dir" ] || die "--dir $base_dir is not a directory"
base_dir="$(cd "$base_dir" && pwd)"
scratch="$(mktemp -d "$base_dir/mirrorfs-bench.XXXXXX")"
results="$scratch/results.tsv"
mounted=()       # mountpoints we mounted
daemon_pids=()   # FUSE daemons we started (all run with -f, so these are their pids)
fio_pid=""

unmount_one() {  # unmount_one MOUNTPOINT: polite, retried, then lazy
  local mnt=$1 i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    mountpoint -q -- "$mnt" || return 0
    fusermount3 -u -- "$mnt" 2>/dev/null && return 0
    sleep 0.3
    : "$i"
  done
  say "warning: $mnt still busy; lazy unmount"
  fusermount3 -u -z -- "$mnt" 2>/dev/null
}
# alive PID: running, not a zombie (kill -0 succeeds on an unreaped child).
alive() {
  local st
  st="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$st" ] && [ "${st%% *}" != Z ]
}
stop_daemon() {  # stop_daemon PID: it exits by itself once unmounted
  local pid=$1 i
  for i in $(seq 50); do
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
    : "$i"
  done
  say "warning: daemon pid $pid still running after unmount; sending TERM"
  kill -TERM "$pid" 2>/dev/null || true
  sleep 1
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317  # trap handler
cleanup() {
  local rc=$? m p left=0
  trap - EXIT INT TERM
  if [ -n "$fio_pid" ]; then
    kill -TERM "$fio_pid" 2>/dev/null || true
    wait "$fio_pid" 2>/dev/null || true
  fi
  for m in "${mounted[@]}"; do unmount_one "$m" || true; done
  for p in "${daemon_pids[@]}"; do stop_daemon "$p"; done
  for m in "${mounted[@]}"; do mountpoint -q -- "$m" && left=1; done
  if [ "$left" = 0 ]; then
    rm -rf -- "$scratch"
  else
    say "warning: a mount is still active; leaving $scratch"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

wait_mounted() {  # wait_mounted MOUNTPOINT PID LOG: up to 15 s, while PID lives
  local mnt=$1 pid=$2 log=$3 i
  for i in $(seq 150); do
    mountpoint -q -- "$mnt" && return 0
    if ! alive "$pid"; then
      sed 's/^/  | /' "$log" >&2
      die "the FUSE daemon exited before $mnt was mounted"
    fi
    sleep 0.1
    : "$i"
  done
  die "$mnt not mounted after 15 s"
}
# ext4 skips inodes freed in the last 5-300 s when it allocates new ones
# (recently_deleted()), in the parent directory's block group; creating 20,000
# files right after deleting 20,000 there then costs 10x more CPU, in bursts.
# So every metadata rep uses a fresh directory name, and the directories the
# jobs run in carry the Orlov "top directory" flag, which makes ext4 put each
# new subdirectory (and so its files) in a block group of its own choosing.
spread_dirs() { chattr +T "$1" 2>/dev/null || true; }

# Prepares the directory a system's jobs run in, in $sys_dir. (Not run in a
# $(...) subshell: it records the daemon it starts for cleanup.)
sys_dir=""
prepare_system() {
  local sys=$1 back="$scratch/$1-backing" mnt="$scratch/$1-mnt" log="$scratch/$1.log" pid
  case "$sys" in
    native) sys_dir="$scratch/native"; mkdir -p "$sys_dir"; spread_dirs "$sys_dir"; return ;;
    mirrorfs) mkdir -p "$back" "$mnt"; spread_dirs "$back"; "$bin" "$back" "$mnt" -f ${MIRRORFS_OPTS:+-o "$MIRRORFS_OPTS"} >"$log" 2>&1 & pid=$! ;;
    # bindfs' defaults as root (allow_other, default_permissions, single
    # threaded) give the same mount options as mirrorfs' (both work as root).
    bindfs) mkdir -p "$back" "$mnt"; spread_dirs "$back"; bindfs -f "$back" "$mnt" >"$log" 2>&1 & pid=$! ;;
  esac
  daemon_pids+=("$pid")
  mounted+=("$mnt")
  wait_mounted "$mnt" "$pid" "$log"
  say "$sys: mounted $(findmnt -n -o FSTYPE,OPTIONS --mountpoint "$mnt" | tr -s ' ')"
  sys_dir="$mnt"
}
finish_system() {
  local sys=$1 mnt="$scratch/$1-mnt" pid
  [ "$sys" = native ] && return 0
  unmount_one "$mnt"
  pid="${daemon_pids[${#daemon_pids[@]}-1]}"
  stop_daemon "$pid"
  # Reaped: forget both, so the exit trap never signals a reused pid.
  unset 'daemon_pids[${#daemon_pids[@]}-1]' 'mounted[${#mounted[@]}-1]'
  local n
  n="$(grep -ciE 'error|warn' "$scratch/$sys.log" || true)"
  if [ "${n:-0}" -gt 0 ]; then
    say "$sys: its log has $n warning/error line(s), the first ones:"
    grep -m 5 -iE 'error|warn' "$scratch/$sys.log" | sed 's/^/  | /' >&2
  fi
}

# --- fio ---------------------------------------------------------------------------------
can_drop=1
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; }
if ! drop_caches; then
  can_drop=0
  say "note: cannot write /proc/sys/vm/drop_caches: seqread_1M_cold is really a warm read"
fi

common=(--ioengine=psync --numjobs=1 --fallocate=none --output-format=json)
# run_fio OUT_JSON FIO_ARGS...: fio in the background so Ctrl-C and the hard
# timeout can reach it.
run_fio() {
  local out=$1 rc=0
  shift
  timeout --kill-after=10s "$hard_timeout" fio "${common[@]}" --output="$out" "$@" \
    >>"$scratch/fio.stderr" 2>&1 &
  fio_pid=$!
  wait "$fio_pid" || rc=$?
  fio_pid=""
  return "$rc"
}
# fio_metric JSON DIRECTION: prints "MiB/s IOPS seconds"
fio_metric() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
job = doc["jobs"][0]
d = job[sys.argv[2]]
if job.get("error"):
    sys.exit(f"fio error {job['error']}")
print(f"{d['bw'] / 1024:.3f} {d['iops']:.3f} {d['runtime'] / 1000:.3f}")
EOF
}
# record SYS JOB UNIT REP JSON DIRECTION: appends one rep's result (or its failure).
record() {
  local sys=$1 job=$2 unit=$3 rep=$4 json=$5 dir=$6 m mib iops secs value
  if m="$(fio_metric "$json" "$dir" 2>&1)"; then
    read -r mib iops secs <<<"$m"
    if [ "$unit" = "MiB/s" ]; then value=$mib; else value=$iops; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$sys" "$job" "$unit" "$rep" "$value" "$secs" >>"$results"
    say "$sys $job $rep/$reps: $value $unit (${secs}s)"
  else
    printf '%s\t%s\t%s\t%s\tnan\t0\n' "$sys" "$job" "$unit" "$rep" >>"$results"
    say "$sys $job $rep/$reps: FAILED ($m); fio said:"
    tail -n 5 "$scratch/fio.stderr" | sed 's/^/  | /' >&2
  fi
}
run_job() {  # run_job SYS DIR JOB
  local sys=$1 dir=$2 job=$3 rep out
  for rep in $(seq "$reps"); do
    out="$scratch/$sys-$job-$rep.json"
    case "$job" in
      seqwrite_1M)
        rm -f -- "$dir/seq.dat"; sync
        run_fio "$out" --name="$job" --filename="$dir/seq.dat" --rw=write --bs=1M \
          --size="$seq_size" --end_fsync=1 --runtime="$cap" || true
        record "$sys" "$job" MiB/s "$rep" "$out" write ;;
      seqread_1M_cold)
        [ "$can_drop" = 1 ] && drop_caches
        run_fio "$out" --name="$job" --filename="$dir/seq.dat" --rw=read --bs=1M \
          --size="$seq_size" --runtime="$cap" || true
        record "$sys" "$job" MiB/s "$rep" "$out" read ;;
      seqread_1M_warm)  # 3 passes: one pass from the page cache is too short to time
        run_fio "$out" --name="$job" --filename="$dir/seq.dat" --rw=read --bs=1M \
          --size="$seq_size" --loops=3 --runtime="$cap" || true
        record "$sys" "$job" MiB/s "$rep" "$out" read ;;
      randwrite_4k)
        sync
        run_fio "$out" --name="$job" --filename="$dir/rand.dat" --rw=randwrite --bs=4k \
          --size="$rand_size" --end_fsync=1 --runtime="$cap" || true
        record "$sys" "$job" MiB/s "$rep" "$out" write ;;
      meta)  # three timed phases over the same files
        local m=(--directory="$dir/meta.$rep" --filesize=4k --nrfiles="$meta_files" --openfiles=1
                 --file_service_type=sequential)
        mkdir -p "$dir/meta.$rep"; sync
        run_fio "$out.c" --name=meta "${m[@]}" --rw=write --bs=4k --create_on_open=1 || true
        record "$sys" meta_create ops/s "$rep" "$out.c" write
        run_fio "$out.s" --name=meta "${m[@]}" --ioengine=filestat --loops=5 || true
        record "$sys" meta_stat ops/s "$rep" "$out.s" read
        run_fio "$out.u" --name=meta "${m[@]}" --ioengine=filedelete || true
        record "$sys" meta_unlink ops/s "$rep" "$out.u" read
        rm -rf -- "$dir/meta.$rep" ;;
    esac
  done
}
prepare_rand_file() {  # untimed: randwrite overwrites a fully written file
  run_fio "$scratch/prep.json" --name=prep --filename="$1/rand.dat" --rw=write --bs=1M \
    --size="$rand_size" --end_fsync=1 || die "could not lay out $1/rand.dat"
}

# --- run ------------------------------------------------------------------------------------
say "fio $(fio --version | sed 's/^fio-//'), kernel $(uname -r), scratch $scratch ($(findmnt -n -o FSTYPE --target "$scratch")), $([ "$quick" = 1 ] && echo quick || echo full): seq $seq_size, rand $rand_size, $meta_files files, $reps rep(s), cap ${cap}s/run"
t_start=$SECONDS
for sys in "${system_list[@]}"; do
  t_sys=$SECONDS
  prepare_system "$sys"
  dir="$sys_dir"
  for job in seqwrite_1M seqread_1M_cold seqread_1M_warm; do run_job "$sys" "$dir" "$job"; done
  rm -f -- "$dir/seq.dat"
  prepare_rand_file "$dir"
  run_job "$sys" "$dir" randwrite_4k
  rm -f -- "$dir/rand.dat"
  run_job "$sys" "$dir" meta
  finish_system "$sys"
  say "$sys: done in $((SECONDS - t_sys))s"
done
say "all done in $((SECONDS - t_start))s"

# --- report ---------------------------------------------------------------------------------
report="$(python3 - "$results" "$systems" "$quick" "$can_drop" <<'EOF'
import json, math, statistics, sys
path, systems, quick, can_drop = sys.argv[1], sys.argv[2].split(","), sys.argv[3] == "1", sys.argv[4] == "1"
rows = {}
order = []
for line in open(path):
    sysname, job, unit, rep, value, secs = line.rstrip("\n").split("\t")
    key = (sysname, job)
    if key not in rows:
        rows[key] = {"unit": unit, "reps": []}
    if job not in order:
        order.append(job)
    rows[key]["reps"].append(float(value))
median = {}
for (sysname, job), r in rows.items():
    ok = [v for v in r["reps"] if not math.isnan(v)]
    m = statistics.median(ok) if len(ok) == len(r["reps"]) else None
    median[(sysname, job)] = m
    rec = {"system": sysname, "job": job, "unit": r["unit"],
           "value": None if m is None else round(m, 1),
           "reps": [None if math.isnan(v) else round(v, 1) for v in r["reps"]],
           "quick": quick}
    if job == "seqread_1M_cold":
        rec["caches_dropped"] = can_drop
    if m is None:
        rec["error"] = "a repetition failed"
    print("JSON " + json.dumps(rec))
def fmt(v):
    return "failed" if v is None else f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"
def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"
cols = ["native", "mirrorfs", "bindfs"]
print("TABLE | job | " + " | ".join(cols) + " | mirrorfs/native | bindfs/native |")
print("TABLE |---|" + "---:|" * (len(cols) + 2))
for job in order:
    unit = next(r["unit"] for (s, j), r in rows.items() if j == job)
    cells = []
    for c in cols:
        cells.append(fmt(median[(c, job)]) if (c, job) in median else "-")
    nat = median.get(("native", job))
    print(f"TABLE | {job} ({unit}) | " + " | ".join(cells) + " | "
          + ratio(median.get(("mirrorfs", job)), nat) + " | "
          + ratio(median.get(("bindfs", job)), nat) + " |")
EOF
)"
json_lines="$(sed -n 's/^JSON //p' <<<"$report")"
echo "$json_lines"
[ -z "$json_out" ] || printf '%s\n' "$json_lines" >"$json_out"
echo
sed -n 's/^TABLE //p' <<<"$report"
