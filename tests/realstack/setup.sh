#!/usr/bin/env bash
# Real containerd (Debian 12's 1.6.20) + CRI for the kubeedge-stream real-stack tests.
#
#   RS=/tmp/kes-realstack bash tests/realstack/setup.sh [up]   # install if needed, build images, start
#   RS=/tmp/kes-realstack bash tests/realstack/setup.sh down   # remove pods, stop containerd, rm -rf $RS
#
# Must run as root. Works without systemd and without internet (apt mirror only).
# Environment:
#   RS           state directory (default /tmp/kes-realstack); keep it on ext4, not tmpfs/overlay
#   PYTHON       python with grpcio + protobuf, used by `down` to remove pods via CRI (default python3)
#   SNAPSHOTTER  force "overlayfs" or "native" (default: overlayfs if an overlay mount works)
#   NO_INSTALL=1 never call apt-get; fail if a package is missing
#
# After `up`:
#   CRI socket        $RS/ctd/containerd.sock
#   pod log root      $RS/podlogs
#   containerd log    $RS/ctd/containerd.log   (pid in $RS/ctd/containerd.pid)
#   images (k8s.io)   registry.k8s.io/pause:3.6, docker.io/library/busybox:latest
#   $RS/realstack.env shell-style KEY=VALUE summary of the above
# No CNI is configured: only host-network pods (NamespaceOption.network = NODE) can run.
set -euo pipefail

RS=${RS:-/tmp/kes-realstack}
RS=$(realpath -m -- "$RS")
SOCK=$RS/ctd/containerd.sock
PIDFILE=$RS/ctd/containerd.pid
PY=${PYTHON:-python3}
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$HERE/../.." && pwd)
PAUSE_IMAGE=registry.k8s.io/pause:3.6
BUSYBOX_IMAGE=docker.io/library/busybox:latest
ACTION=${1:-up}

T_START=$EPOCHREALTIME
T_PHASE=$EPOCHREALTIME
# phase NAME DETAIL...: print how long the phase that just ended took, and the running total.
phase() {
  local now=$EPOCHREALTIME name=$1
  shift
  awk -v n="$now" -v p="$T_PHASE" -v s="$T_START" -v name="$name" -v what="$*" \
    'BEGIN { printf "[realstack %s] %-18s %6.2fs (total %6.2fs) %s\n", ENVIRON["ACTION"], name, n - p, n - s, what }'
  T_PHASE=$now
}
export ACTION

die() { echo "[realstack $ACTION] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

# ---------------------------------------------------------------------------------------- down
# PIDs of containerd shims started for our socket (shims outlive containerd).
our_shims() {
  local p
  for p in $(pgrep -f containerd-shim || true); do
    if tr '\0' '\n' < "/proc/$p/cmdline" 2>/dev/null | grep -A1 -x -- '-address' | grep -qxF -- "$SOCK"; then
      echo "$p"
    fi
  done
}

ctd_alive() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

down() {
  if ctd_alive && [ -S "$SOCK" ]; then
    # Stop and remove every pod through CRI: kills containers, unmounts their shm and rootfs.
    if ! PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" timeout 120 "$PY" - "$SOCK" <<'EOF'
import sys

import grpc

from streamproto.cri.v1 import api_pb2, api_pb2_grpc

with grpc.insecure_channel("unix://" + sys.argv[1]) as channel:
    rt = api_pb2_grpc.RuntimeServiceStub(channel)
    pods = rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items
    for pod in pods:
        rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
        rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
    print(f"removed {len(pods)} pod(s) through CRI")
EOF
    then
      echo "[realstack down] CRI cleanup failed (is grpcio importable by $PY?); falling back to ctr" >&2
    fi
    # Belt and braces: anything CRI did not remove (or if python/grpc was unavailable).
    local t
    for t in $(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null || true); do
      ctr --address "$SOCK" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
    done
    for t in $(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null || true); do
      ctr --address "$SOCK" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true
    done
    phase "pods removed"
  fi
  if [ -f "$PIDFILE" ]; then
    local pid
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  local shim
  for shim in $(our_shims); do kill -9 "$shim" 2>/dev/null || true; done
  phase "containerd stopped"
  # Unmount everything below $RS, deepest first.
  awk -v rs="$RS/" 'index($2, rs) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  rm -rf -- "$RS"
  phase "removed $RS"
}

if [ "$ACTION" = down ]; then
  down
  exit 0
fi
[ "$ACTION" = up ] || die "usage: RS=DIR $0 [up|down]"

# ------------------------------------------------------------------------------------------ up
if ctd_alive && [ -S "$SOCK" ]; then
  echo "[realstack up] containerd already running (pid $(cat "$PIDFILE")) on $SOCK"
  exit 0
fi
mkdir -p "$RS"/ctd "$RS"/images "$RS"/podlogs

# 1. packages ------------------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
PKGS="containerd runc busybox-static"
if ! dpkg -s $PKGS >/dev/null 2>&1; then
  [ "${NO_INSTALL:-0}" = 1 ] && die "missing packages ($PKGS) and NO_INSTALL=1"
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -newermt '-1 day' 2>/dev/null | head -1)" ]; then
    apt-get update -qq
  fi
  apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
fi
phase "apt" "$(dpkg-query -W -f='${Package} ${Version}  ' $PKGS)"

# 2. offline images --------------------------------------------------------------------------
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (busybox-static)"
if command -v gcc >/dev/null 2>&1 && gcc -Os -static -s -o "$RS/images/pause" "$HERE/pause.c" 2>"$RS/images/gcc.log"; then
  "$PY" "$HERE/mkimage.py" --name "$PAUSE_IMAGE" --out "$RS/images/pause.tar" \
    --entrypoint '["/pause"]' --file "$RS/images/pause:/pause"
else
  # No compiler: the CRI stops sandboxes with SIGKILL, so a sleeping busybox does the job.
  echo "[realstack up] gcc unavailable, pause image uses busybox sleep" >&2
  "$PY" "$HERE/mkimage.py" --name "$PAUSE_IMAGE" --out "$RS/images/pause.tar" \
    --entrypoint '["/bin/busybox", "sleep", "2147483647"]' --file "$BUSYBOX:/bin/busybox"
fi
"$PY" "$HERE/mkimage.py" --name "$BUSYBOX_IMAGE" --out "$RS/images/busybox.tar" --cmd '["sh"]' --busybox "$BUSYBOX"
phase "images built" "$(du -ch "$RS"/images/*.tar | tail -1 | cut -f1)"

# 3. snapshotter + config --------------------------------------------------------------------
SNAP=${SNAPSHOTTER:-}
if [ -z "$SNAP" ]; then
  probe=$RS/ctd/overlay-probe
  mkdir -p "$probe"/lower "$probe"/upper "$probe"/work "$probe"/merged
  if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" "$probe/merged" 2>/dev/null; then
    umount "$probe/merged"
    SNAP=overlayfs
  else
    SNAP=native
  fi
  rm -rf -- "$probe"
fi

cat > "$RS/ctd/config.toml" <<EOF
version = 2
root = "$RS/ctd/root"
state = "$RS/ctd/state"
disabled_plugins = [
  "io.containerd.internal.v1.tracing",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$RS/ctd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # Nothing can be pulled: the sandbox image is the one imported below.
  sandbox_image = "$PAUSE_IMAGE"
  # Plain HTTP streaming server on a random loopback port; Exec/Attach/PortForward return its URLs.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  disable_apparmor = true
  # Required without CAP_SYS_RESOURCE: the sandbox's oom_score_adj of -998 would be refused.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$SNAP"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # PID 1 is not systemd here: use the cgroupfs driver.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    # No CNI configuration: host-network pods only.
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RS/ctd/cni-conf"
EOF
mkdir -p "$RS/ctd/cni-conf"
phase "config" "snapshotter=$SNAP"

# 4. start containerd --------------------------------------------------------------------------
# setsid: its own session, so a Ctrl-C to the test runner does not kill it before `down`.
# In a non-interactive script the background child is no group leader, so setsid execs in place
# and $! is containerd's own PID.
setsid containerd --config "$RS/ctd/config.toml" </dev/null >"$RS/ctd/containerd.log" 2>&1 &
echo $! > "$PIDFILE"
ok=0
for _ in $(seq 200); do
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
  if [ -S "$SOCK" ] && ctr --address "$SOCK" plugins ls 2>/dev/null | grep -Eq '^io\.containerd\.grpc\.v1[[:space:]]+cri[[:space:]].*[[:space:]]ok[[:space:]]*$'; then
    ok=1
    break
  fi
  sleep 0.05
done
if [ "$ok" != 1 ]; then
  tail -30 "$RS/ctd/containerd.log" >&2 || true
  die "containerd or its CRI plugin did not come up (log: $RS/ctd/containerd.log)"
fi
phase "containerd start" "$(containerd --version | awk '{print $3}') pid $(cat "$PIDFILE")"

# 5. import images -----------------------------------------------------------------------------
for t in pause busybox; do
  ctr --address "$SOCK" -n k8s.io images import --snapshotter "$SNAP" "$RS/images/$t.tar" >/dev/null
done
phase "images imported" "$(ctr --address "$SOCK" -n k8s.io images ls -q | grep -v '^sha256:' | tr '\n' ' ')"

cat > "$RS/realstack.env" <<EOF
RS=$RS
CRI_SOCK=$SOCK
CRI_LOGDIR=$RS/podlogs
CONTAINERD_PID=$(cat "$PIDFILE")
CONTAINERD_LOG=$RS/ctd/containerd.log
SNAPSHOTTER=$SNAP
PAUSE_IMAGE=$PAUSE_IMAGE
BUSYBOX_IMAGE=$BUSYBOX_IMAGE
EOF
echo "[realstack up] ready: CRI socket $SOCK"
