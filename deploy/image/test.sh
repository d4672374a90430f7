#!/usr/bin/env bash
# Builds the image (deploy/image/build.sh) and checks it: `raftlb up` inside it forms a cluster
# and `raftlb ctl status` answers. No network: the container has only its loopback. The
# container is removed also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=raftlb:ci
name="raftlb-image-test-$$"
podman=(podman --runtime runc)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
bash deploy/image/build.sh "$tag"
trap '"${podman[@]}" rm -f "$name" >/dev/null 2>&1 || true' EXIT
"${podman[@]}" run --rm --network=none "${limits[@]}" "$tag" --version
"${podman[@]}" run -d --name "$name" --network=none "${limits[@]}" "$tag" up --data-dir /var/lib/raftlb >/dev/null
for _ in $(seq 1 60); do
  if out=$("${podman[@]}" exec "$name" /usr/local/bin/raftlb ctl status 2>&1) && grep -q 'Leader' <<<"$out"; then
    echo "$out" | head -3
    echo "image test: ok"
    exit 0
  fi
  sleep 1
done
echo "image test: ctl status never answered inside the container:" >&2
echo "$out" >&2
"${podman[@]}" logs "$name" >&2 || true
exit 1
