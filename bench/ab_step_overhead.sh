#!/usr/bin/env bash
# A/B the per-step cost of two ignis builds, interleaved in every round:
#   bench/ab_step_overhead.sh OLD_IGNIS NEW_IGNIS [ROUNDS]   (default 30)
# Each binary needs its `ignis-agent` next to it. BACKEND defaults to sandbox (root).
# Per build: median wall time of a 1-step and a 20-step workflow; per extra step =
# (20-step - 1-step) / 19; minus the median of running the step script directly
# (`bash -e`, measured in the same rounds) = ignis's per-step overhead.
set -euo pipefail
OLD="$1"; NEW="$2"; ROUNDS="${3:-30}"; BACKEND="${BACKEND:-sandbox}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mk() {
  mkdir -p "$WORK/$1/.github/workflows"
  printf '%s\n' "$2" > "$WORK/$1/.github/workflows/w.yml"
  git -C "$WORK/$1" init -q && git -C "$WORK/$1" add -A
  git -C "$WORK/$1" -c user.name=b -c user.email=b@example.com commit -qm b
}
s=""; for i in $(seq 1 20); do s+="      - run: echo step-$i"$'\n'; done
mk one "on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: echo step-1"
mk twenty "on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
${s}"
printf 'echo step\n' > "$WORK/step.sh"
export OLD NEW ROUNDS BACKEND WORK
python3 - <<'PY'
import os, statistics, subprocess, time
old, new, rounds, backend, work = (os.environ[k] for k in ("OLD", "NEW", "ROUNDS", "BACKEND", "WORK"))
env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
def run(cmd, cwd):
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dt = (time.perf_counter() - t) * 1000
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed in {cwd}")
    return dt
bins = {"old": old, "new": new}
res = {(b, c): [] for b in bins for c in ("one", "twenty")}
direct = []
for r in range(int(rounds) + 2):
    order = list(bins.items()) if r % 2 == 0 else list(reversed(bins.items()))
    for c in ("one", "twenty"):
        for b, exe in order:
            dt = run([exe, "run", "push", "--backend", backend], os.path.join(work, c))
            if r >= 2:  # two warm-up rounds
                res[(b, c)].append(dt)
    dt = run(["bash", "-e", os.path.join(work, "step.sh")], work)
    if r >= 2:
        direct.append(dt)
d = statistics.median(direct)
print(f"backend {backend}, {rounds} interleaved rounds; bash -e step.sh median {d:.2f} ms")
for b in bins:
    one, twenty = statistics.median(res[(b, "one")]), statistics.median(res[(b, "twenty")])
    per = (twenty - one) / 19
    print(f"{b}: 1 step {one:.1f} ms, 20 steps {twenty:.1f} ms, per extra step {per:.2f} ms, "
          f"overhead over bash -e {per - d:.2f} ms")
PY
