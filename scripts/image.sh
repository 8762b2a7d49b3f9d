#!/usr/bin/env bash
# Build the container image (default localhost/newstagger:dev) from the project's Dockerfile.
#
#   scripts/image.sh            docker build when a Docker daemon answers; else buildah
#   BUILDER=buildah scripts/image.sh     buildah even where Docker works (what tests/image runs)
#   IMAGE=registry.example.com/newstagger:0.1.0 scripts/image.sh        another name
#   scripts/image.sh base       only make sure the buildah base exists (.ci/run, while tests run)
#
# The buildah path is for machines with no Docker daemon and no reachable image registry or
# package index from inside a build: it runs the same Dockerfile with --isolation chroot on
#   - PYTHON_IMAGE when it can be pulled, else a Debian bookworm base (python3) bootstrapped from
#     Debian's packages with debootstrap, kept in buildah's storage and reused by later runs;
#   - a wheelhouse built on the host (`pip wheel .`), passed as --build-arg WHEELHOUSE, so pip in
#     the build installs from it with no index.
# Everything it writes lives in .image/ (git-ignored) and buildah's own storage.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-localhost/newstagger:dev}"
PYTHON_IMAGE="${PYTHON_IMAGE:-docker.io/library/python:3.11-slim}"
BASE_IMAGE="${BASE_IMAGE:-localhost/newstagger-base:bookworm-1}"
PIP="${PIP:-.venv/bin/pip}"
WORK=.image

say() { echo "image: $*" >&2; }

if [ "${BUILDER:-}" != buildah ] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  [ "${1:-}" = base ] && exit 0
  say "docker build -t $IMAGE"
  exec docker build -t "$IMAGE" .
fi
for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || { say "no Docker daemon and no $tool: install buildah and debootstrap (apt-get install buildah debootstrap)"; exit 2; }
done

# buildah's and pip's scratch files stay in .image/ too
mkdir -p "$WORK/tmp"
export TMPDIR="$PWD/$WORK/tmp"

start=$SECONDS
if buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  base="$BASE_IMAGE"
  say "base: $base (cached)"
elif timeout 120 buildah pull --quiet "$PYTHON_IMAGE" >/dev/null 2>&1; then
  base="$PYTHON_IMAGE"
  say "base: $base (pulled)"
else
  # No registry: Debian bookworm's python3 (3.11, as python:3.11-slim) from Debian's packages.
  say "cannot pull $PYTHON_IMAGE: bootstrapping $BASE_IMAGE from Debian's packages"
  rm -rf "$WORK/rootfs" && mkdir -p "$WORK"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  ln -sf python3 "$WORK/rootfs/usr/bin/python"
  rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
  tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
  ctr="$(buildah from scratch)"
  buildah add --quiet "$ctr" "$WORK/rootfs.tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$ctr"
  buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
  rm -rf "$WORK/rootfs" "$WORK/rootfs.tar"
  base="$BASE_IMAGE"
  say "base: $base bootstrapped in $((SECONDS - start)) s"
fi
[ "${1:-}" = base ] && exit 0

# The wheelhouse: this package and every dependency, as wheels for the host's CPython (3.11, the
# image's), rebuilt only when the package's files changed since the last one.
step=$SECONDS
stamp="$WORK/wheelhouse/.built"
if [ ! -e "$stamp" ] || [ -n "$(find pyproject.toml README.md newstagger service training -newer "$stamp" -print -quit)" ]; then
  rm -rf "$WORK/wheelhouse"
  "$PIP" wheel --quiet --wheel-dir "$WORK/wheelhouse" . >"$WORK/wheelhouse.log" 2>&1 \
    || { tail -20 "$WORK/wheelhouse.log" >&2; exit 1; }
  touch "$stamp"
  say "wheelhouse: $(du -sh "$WORK/wheelhouse" | cut -f1) in $((SECONDS - step)) s"
else
  say "wheelhouse: $WORK/wheelhouse (cached)"
fi

# The image: rebuilt only when the wheelhouse, the Dockerfile or the base changed since it was built.
# No layer cache (--layers would keep a few hundred MB of layers per code change); the image it
# replaces is removed.
built="$WORK/image.id"
old="$(buildah images --quiet --no-trunc "$IMAGE" 2>/dev/null | head -1 || true)"
if [ -n "$old" ] && [ -e "$built" ] && [ "$(cat "$built")" = "$old $base" ] \
   && [ -z "$(find Dockerfile .dockerignore "$stamp" -newer "$built" -print -quit)" ]; then
  say "$IMAGE is up to date ($((SECONDS - start)) s)"
  exit 0
fi
step=$SECONDS
buildah bud --quiet --isolation chroot \
  --build-arg PYTHON_IMAGE="$base" --build-arg WHEELHOUSE="$WORK/wheelhouse" \
  -t "$IMAGE" . >/dev/null
new="$(buildah images --quiet --no-trunc "$IMAGE" | head -1)"
echo "$new $base" >"$built"
if [ -n "$old" ] && [ "$old" != "$new" ]; then
  buildah rmi "$old" >/dev/null 2>&1 || true   # still tagged elsewhere, or in use: kept
fi
size="$(buildah images --format '{{.Size}}' "$IMAGE" | head -1)"
say "built $IMAGE ($size) in $((SECONDS - step)) s ($((SECONDS - start)) s in all)"
