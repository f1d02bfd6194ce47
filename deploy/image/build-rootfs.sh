#!/usr/bin/env bash
# Builds the Sluice container image offline, from the binary already built on this machine: a
# root filesystem holding build/bin/sluice, the shared libraries `ldd` says it loads, /etc/passwd
# with the non-root user 65532, and the CA certificates; then an image made of that one layer
# (buildah, or podman import) saved as archives that podman, buildah, docker, kind and containerd
# can load. Nothing is pulled from a registry. For a build from source on a machine that can pull
# debian:bookworm, see deploy/Dockerfile.
#
#   deploy/image/build-rootfs.sh [--rootfs-only] [--tool auto|buildah|podman] [--out DIR]
#                                [--image NAME] [--keep-debug]
#
# The binary's debug information is stripped (as in deploy/Dockerfile; its symbols stay) unless
# --keep-debug is given.
#
# Writes, under --out (default build/image):
#   rootfs/                     the tree
#   sluice-rootfs.tar           the tree as one tar (files owned by root, sorted, fixed mtimes)
#   sluice-VERSION.oci.tar      OCI image archive   (podman load -i, skopeo, ctr images import)
#   sluice-VERSION.docker.tar   docker-archive      (docker load -i, kind load image-archive)
#   libraries.txt               each library and the Debian package it came from
#
# The image is named docker.io/library/sluice:VERSION (what "sluice:VERSION" in the Deployment
# resolves to). Environment: SLUICE_BIN (default build/bin/sluice), SOURCE_DATE_EPOCH (file and
# image timestamps; default: the last commit's time). Building the image needs root, or rootless
# buildah/podman set up with subordinate ids.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$root/build/image"
tool=auto
rootfs_only=0
keep_debug=0
image=""
while (($#)); do
  case "$1" in
    --rootfs-only) rootfs_only=1 ;;
    --tool) tool="$2"; shift ;;
    --out) out="$2"; shift ;;
    --image) image="$2"; shift ;;
    --keep-debug) keep_debug=1 ;;
    -h | --help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-rootfs: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

bin="${SLUICE_BIN:-$root/build/bin/sluice}"
version="$(sed -n 's/^project(sluice VERSION \([0-9][0-9.]*\).*/\1/p' "$root/CMakeLists.txt")"
version="${version:-0.0.0}"
image="${image:-docker.io/library/sluice:$version}"
epoch="${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}"
uid=65532

die() { echo "build-rootfs: $*" >&2; exit 1; }
[ -x "$bin" ] || die "$bin not found or not executable (make build, or set SLUICE_BIN)"

rootfs="$out/rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs"/{etc/ssl/certs,usr/local/bin,usr/lib,tmp}
chmod 1777 "$rootfs/tmp"
if ((keep_debug)) || ! command -v strip >/dev/null; then
  install -m 0755 "$bin" "$rootfs/usr/local/bin/sluice"
else
  strip --strip-debug -o "$rootfs/usr/local/bin/sluice" "$bin"
  chmod 0755 "$rootfs/usr/local/bin/sluice"
fi

# Debian 12 has a merged /usr: keep the same links so that PT_INTERP (/lib64/ld-linux-x86-64.so.2)
# and the paths ldd printed resolve in the image as on this machine.
for d in lib lib64 bin sbin; do
  if [ -L "/$d" ]; then
    mkdir -p "$rootfs/$(readlink "/$d")"
    ln -sfn "$(readlink "/$d")" "$rootfs/$d"
  fi
done

# The libraries: every "=> /path" of ldd, and the loader. Each lands in its directory as resolved
# on this machine, under its soname, with the content of the file it points at.
libs=()
if ldd_out="$(ldd "$bin" 2>&1)"; then
  if grep -q 'not found' <<<"$ldd_out"; then
    die "ldd cannot resolve every library of $bin:"$'\n'"$(grep 'not found' <<<"$ldd_out")"
  fi
  while read -r path; do libs+=("$path"); done < <(
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out")
elif ! grep -q 'not a dynamic executable' <<<"$ldd_out"; then
  die "ldd $bin failed: $ldd_out"
fi
: >"$out/libraries.txt"
declare -A lib_dirs=()
for lib in "${libs[@]}"; do
  dir="$(readlink -f "$(dirname "$lib")")"
  mkdir -p "$rootfs$dir"
  cp -L "$lib" "$rootfs$dir/$(basename "$lib")"
  lib_dirs["$dir"]=1
  pkg=""
  if command -v dpkg >/dev/null; then
    for candidate in "$lib" "$(readlink -f "$lib")" "${lib#/usr}" "/usr$lib"; do
      if pkg="$(dpkg -S "$candidate" 2>/dev/null | head -1 | cut -d: -f1)" && [ -n "$pkg" ]; then
        break
      fi
    done
  fi
  printf '%s\t%s\n' "$lib" "${pkg:-?}" >>"$out/libraries.txt"
done
# A loader cache, so that libraries outside the default directories are found too.
if command -v ldconfig >/dev/null && ((${#lib_dirs[@]})); then
  printf '%s\n' "${!lib_dirs[@]}" | sort >"$rootfs/etc/ld.so.conf"
  ldconfig -r "$rootfs" 2>/dev/null || echo "build-rootfs: ldconfig -r failed; no ld.so.cache (the default directories still work)" >&2
fi

# Users: root owns the files; the router runs as sluice (65532), as the Deployment says.
cat >"$rootfs/etc/passwd" <<EOF
root:x:0:0:root:/root:/usr/sbin/nologin
sluice:x:$uid:$uid:sluice:/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<EOF
root:x:0:
sluice:x:$uid:
nogroup:x:65534:
EOF
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

# CA certificates (provider and API-server TLS): Debian's bundle, where OpenSSL looks by default.
ca=/etc/ssl/certs/ca-certificates.crt
if [ -r "$ca" ]; then
  cp -L "$ca" "$rootfs$ca"
  openssldir="$(openssl version -d 2>/dev/null | sed -n 's/^OPENSSLDIR: "\(.*\)"$/\1/p')"
  openssldir="${openssldir:-/usr/lib/ssl}"
  mkdir -p "$rootfs$openssldir"
  ln -sfn "$ca" "$rootfs$openssldir/cert.pem"
  ln -sfn /etc/ssl/certs "$rootfs$openssldir/certs"
else
  echo "build-rootfs: warning: $ca missing (apt-get install ca-certificates); the image trusts no CA" >&2
fi

cat >"$rootfs/etc/os-release" <<EOF
NAME="sluice"
ID=sluice
VERSION_ID="$version"
PRETTY_NAME="sluice $version (libraries from $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-this host}"))"
EOF

# The Dockerfile's runtime stage installs the same libraries from Debian: say when it misses one.
dockerfile="$root/deploy/Dockerfile"
if [ -f "$dockerfile" ]; then
  while IFS=$'\t' read -r lib pkg; do
    case "$pkg" in libc6 | libstdc++6 | libgcc-s1 | "?") continue ;; esac
    grep -qE "(^|[[:space:]])$pkg([[:space:]]|\\\\|$)" "$dockerfile" ||
      echo "build-rootfs: warning: $lib comes from $pkg, which deploy/Dockerfile's runtime stage does not install" >&2
  done <"$out/libraries.txt"
fi

tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$rootfs" -cf "$out/sluice-rootfs.tar" .
echo "build-rootfs: $out/sluice-rootfs.tar ($(du -h "$out/sluice-rootfs.tar" | cut -f1), ${#libs[@]} libraries)"
((rootfs_only)) && exit 0

if [ "$tool" = auto ]; then
  if command -v buildah >/dev/null; then tool=buildah
  elif command -v podman >/dev/null; then tool=podman
  else die "neither buildah nor podman is installed (apt-get install buildah podman); the rootfs tar is ready"
  fi
fi

labels=(
  "org.opencontainers.image.title=sluice"
  "org.opencontainers.image.description=Model-aware LLM inference router"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
)
ports=(8080 9090 15000)
oci="$out/sluice-$version.oci.tar"
docker="$out/sluice-$version.docker.tar"
rm -f "$oci" "$docker"
# The image this name had before, removed below once nothing refers to it.
previous="$("$tool" images --noheading --quiet "$image" 2>/dev/null | head -1 || true)"

case "$tool" in
  buildah)
    ctr="$(buildah from scratch)"
    trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
    buildah add --quiet "$ctr" "$out/sluice-rootfs.tar" / >/dev/null
    args=(--entrypoint '["/usr/local/bin/sluice"]' --cmd '["serve"]' --user "$uid:$uid"
      --workingdir / --env PATH=/usr/local/bin:/usr/bin --stop-signal SIGTERM
      --os linux --arch "$(dpkg --print-architecture 2>/dev/null || echo amd64)"
      --created-by "deploy/image/build-rootfs.sh")
    for p in "${ports[@]}"; do args+=(--port "$p/tcp"); done
    for l in "${labels[@]}"; do args+=(--label "$l"); done
    buildah config "${args[@]}" "$ctr"
    buildah commit --quiet --format oci --timestamp "$epoch" --identity-label=false "$ctr" "$image" >/dev/null
    buildah push --quiet "$image" "oci-archive:$oci:$image"
    buildah push --quiet --format v2s2 "$image" "docker-archive:$docker:$image"
    ;;
  podman)
    changes=(--change 'ENTRYPOINT ["/usr/local/bin/sluice"]' --change 'CMD ["serve"]'
      --change "USER $uid:$uid" --change 'WORKDIR /' --change 'ENV PATH=/usr/local/bin:/usr/bin'
      --change 'STOPSIGNAL SIGTERM')
    for p in "${ports[@]}"; do changes+=(--change "EXPOSE $p/tcp"); done
    for l in "${labels[@]}"; do changes+=(--change "LABEL ${l%%=*}=\"${l#*=}\""); done
    podman import --quiet "${changes[@]}" "$out/sluice-rootfs.tar" "$image" >/dev/null
    podman save --quiet --format oci-archive -o "$oci" "$image"
    podman save --quiet --format docker-archive -o "$docker" "$image"
    ;;
  *) die "--tool must be auto, buildah or podman" ;;
esac
current="$("$tool" images --noheading --quiet "$image" 2>/dev/null | head -1 || true)"
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  "$tool" rmi "$previous" >/dev/null 2>&1 || true
fi
echo "build-rootfs: image $image ($tool): $oci, $docker"
