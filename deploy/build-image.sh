#!/usr/bin/env bash
# Builds a minimal Edgeplane container image WITHOUT pulling anything: a root filesystem that
# holds the four binaries (CLI, coordinator, agent, CPU inference worker) (debug info stripped) and exactly the shared libraries they link
# (from `ldd`), imported with `docker import`. Works where no registry can be reached.
#
#   deploy/build-image.sh [BIN_DIR] [TAG]      (defaults: target/release edgeplane:local)
#
# Users with a registry can use deploy/Dockerfile instead.
set -euo pipefail
bin_dir=${1:-target/release}
tag=${2:-edgeplane:local}
bins=(edgeplane edgeplane-coordinator edgeplane-agent edgeplane-worker)

command -v docker >/dev/null || { echo "build-image: docker is not installed" >&2; exit 1; }
for b in "${bins[@]}"; do
  [ -x "$bin_dir/$b" ] || {
    echo "build-image: $bin_dir/$b not found; build first: cargo build --release" >&2
    exit 1
  }
done

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/usr/local/bin "$root"/etc "$root"/tmp "$root"/var/lib/edgeplane
chmod 1777 "$root/tmp"
for b in "${bins[@]}"; do
  objcopy --strip-debug "$bin_dir/$b" "$root/usr/local/bin/$b"
  # every library the binary links, plus the dynamic loader, at the same paths
  ldd "$bin_dir/$b" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
    cp -L --parents -n "$lib" "$root/" 2>/dev/null || cp -L --parents "$lib" "$root/"
  done
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nedgeplane:x:10001:10001:edgeplane:/var/lib/edgeplane:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nedgeplane:x:10001:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chown -R 10001:10001 "$root/var/lib/edgeplane"

tar --numeric-owner -C "$root" -c . | docker import \
  --change 'USER 10001:10001' \
  --change 'ENV PATH=/usr/local/bin' \
  --change 'WORKDIR /var/lib/edgeplane' \
  --change 'ENTRYPOINT ["/usr/local/bin/edgeplane-coordinator"]' \
  --message "edgeplane $(git -C "$(dirname "$0")/.." rev-parse --short HEAD 2>/dev/null || echo dev)" \
  - "$tag" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.1f MB", $1/1e6}'))"
