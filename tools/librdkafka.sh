#!/usr/bin/env bash
# A current librdkafka for aiq, built once from Debian's own source package into a cache
# directory and reused from then on. The system's apt sources are never changed: the source
# package comes through a temporary deb-src list and a temporary apt state and cache dir.
# tools/bootstrap.sh runs `build`; the Dockerfile's build stage runs it too, so the image
# carries the same library the tests ran with.
set -euo pipefail

# The pinned source package: version, Debian suite it comes from, and the SHA-256 of its
# .dsc and of the upstream tarball the .dsc names (both checked before anything is built).
RDKAFKA_VERSION=2.14.2
RDKAFKA_DEBIAN_REVISION=1
RDKAFKA_SUITE=sid
RDKAFKA_DSC_SHA256=fafd510fdb29c4cf7732e115a416d93a5a3af4a1b3bd2b0c7731042d653d85ee
RDKAFKA_ORIG_SHA256=4d53568c13717b167d12c7b2a0fe12aeb5d6bfe02de53df5b68f86d870a81b33

usage() {
    cat <<EOF
usage: tools/librdkafka.sh COMMAND

  build    download librdkafka $RDKAFKA_VERSION (Debian source package, suite $RDKAFKA_SUITE), check
           its SHA-256, build it and install it into the prefix below; a no-op when the
           prefix already holds that build
  prefix   print the install prefix (exit 1 when it is not built yet)
  info     print version, features and whether it has the share consumer (KIP-932)
  help     this text

environment:
  AIQ_CACHE_DIR        cache root (default: \$HOME/.cache/aiq); the prefix is
                       \$AIQ_CACHE_DIR/librdkafka-$RDKAFKA_VERSION
  AIQ_DEBIAN_MIRROR    Debian archive for the source package (default http://deb.debian.org/debian)
  AIQ_BUILD_JOBS       make -j (default: nproc)
EOF
}

CACHE="${AIQ_CACHE_DIR:-${HOME:?HOME is not set; set AIQ_CACHE_DIR}/.cache/aiq}"
PREFIX="$CACHE/librdkafka-$RDKAFKA_VERSION"
STAMP="$PREFIX/aiq-build.txt"
MIRROR="${AIQ_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
JOBS="${AIQ_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
# Features every aiq deployment may need (names as the build's BUILT_WITH spells them: zlib
# is gzip, sasl_cyrus is GSSAPI and PLAIN, curl is the OIDC token fetch); the build fails when
# one is missing.
REQUIRED_FEATURES=(zlib ssl sasl_cyrus sasl_scram sasl_oauthbearer zstd lz4_ext curl)

AIQ_SCRIPT=librdkafka
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The stamp's "sha256" line names the tarball a build came from: a prefix without the
# stamp, or from another tarball, is rebuilt.
built() { [ -f "$STAMP" ] && grep -qx "sha256 $RDKAFKA_ORIG_SHA256" "$STAMP"; }

check_sha256() { # FILE EXPECTED
    local got
    got="$(sha256sum "$1" | cut -d' ' -f1)"
    [ "$got" = "$2" ] || die "checksum mismatch for $(basename "$1"): got $got, pinned $2"
}

# Downloads the source package into $1 through a throwaway apt configuration.
download_source() {
    local work="$1" apt="$1/apt"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: needs a Debian system"
    [ -r "$KEYRING" ] || die "no $KEYRING (Debian package debian-archive-keyring)"
    mkdir -p "$apt/etc" "$apt/state/lists/partial" "$apt/cache/archives/partial" "$work/src"
    : >"$apt/state/status"
    echo "deb-src [signed-by=$KEYRING] $MIRROR $RDKAFKA_SUITE main" >"$apt/etc/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$apt/etc/sources.list"
        -o "Dir::Etc::SourceParts=$apt/etc/none" -o "Dir::State=$apt/state"
        -o "Dir::Cache=$apt/cache" -o "Dir::State::status=$apt/state/status"
        -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1" -qq)
    say "fetching the deb-src index of $RDKAFKA_SUITE (temporary apt dir, system sources untouched)"
    apt-get "${opts[@]}" update >"$work/apt.log" 2>&1 \
        || { tail -n 20 "$work/apt.log" >&2; die "apt-get update of the temporary deb-src list failed"; }
    local pkg="librdkafka=$RDKAFKA_VERSION-$RDKAFKA_DEBIAN_REVISION"
    say "downloading source package $pkg"
    (cd "$work/src" && apt-get "${opts[@]}" source --download-only "$pkg") >>"$work/apt.log" 2>&1 \
        || { tail -n 20 "$work/apt.log" >&2
             die "apt-get source $pkg failed (is $RDKAFKA_VERSION still in $RDKAFKA_SUITE? then pin the new version)"; }
}

cmd_build() {
    if built; then
        say "$RDKAFKA_VERSION already built in $PREFIX"
        print_info
        return 0
    fi
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.librdkafka.lock"
    flock 9
    if built; then # another run built it while this one waited
        say "$RDKAFKA_VERSION built in $PREFIX (by a concurrent run)"
        print_info
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 not found (librdkafka's build runs lds-gen.py)"
    local t0 work
    t0="$(date +%s)"
    work="$(mktemp -d "$CACHE/.librdkafka-build.XXXXXX")"
    # shellcheck disable=SC2064  # expand $work now
    trap "rm -rf '$work'" EXIT
    download_source "$work"
    local dsc="$work/src/librdkafka_$RDKAFKA_VERSION-$RDKAFKA_DEBIAN_REVISION.dsc"
    local orig="$work/src/librdkafka_$RDKAFKA_VERSION.orig.tar.gz"
    [ -f "$dsc" ] && [ -f "$orig" ] || die "the source package lacks $(basename "$dsc") or $(basename "$orig")"
    check_sha256 "$dsc" "$RDKAFKA_DSC_SHA256"
    check_sha256 "$orig" "$RDKAFKA_ORIG_SHA256"
    grep -q " $RDKAFKA_ORIG_SHA256 [0-9]* $(basename "$orig")\$" "$dsc" \
        || die "$(basename "$dsc") does not name the pinned tarball"
    say "checksums match the pinned SHA-256"
    # Debian's patches only switch cJSON and nanopb to system copies, which Debian 12 lacks in
    # the versions needed; upstream's vendored copies are used instead.
    mkdir -p "$work/tree"
    tar -xzf "$orig" -C "$work/tree" --strip-components=1
    say "configuring (prefix $PREFIX)"
    (cd "$work/tree" && ./configure --prefix="$PREFIX" --no-download --enable-ssl \
        --enable-gssapi --enable-zstd --enable-zlib --enable-curl --enable-lz4-ext) \
        >"$work/configure.log" 2>&1 \
        || { tail -n 30 "$work/configure.log" >&2; die "configure failed (full log: rerun by hand)"; }
    say "building the C library (make -j$JOBS)"
    make -C "$work/tree/src" -j"$JOBS" >"$work/make.log" 2>&1 \
        || { grep -E 'error|Error' "$work/make.log" | tail -n 20 >&2; die "make failed"; }
    # Install into a staging dir and move it in at once, so a broken build never looks done.
    make -C "$work/tree/src" install DESTDIR="$work/stage" >>"$work/make.log" 2>&1 \
        || { tail -n 20 "$work/make.log" >&2; die "make install failed"; }
    local features
    features="$(sed -n 's/^BUILT_WITH=//p' "$work/tree/Makefile.config" | tr 'A-Z \t' 'a-z\n\n' \
        | grep -v '^$' | sort | paste -sd' ')"
    local f
    for f in "${REQUIRED_FEATURES[@]}"; do
        grep -qw "$f" <<<"$features" || die "built without $f (features: $features)"
    done
    {
        echo "version $RDKAFKA_VERSION-$RDKAFKA_DEBIAN_REVISION"
        echo "source Debian $RDKAFKA_SUITE source package librdkafka"
        echo "sha256 $RDKAFKA_ORIG_SHA256"
        echo "features $features"
    } >"$work/stage$PREFIX/aiq-build.txt"
    rm -rf "$PREFIX"
    mv "$work/stage$PREFIX" "$PREFIX"
    say "built $RDKAFKA_VERSION into $PREFIX in $(($(date +%s) - t0)) s"
    print_info
}

print_info() {
    local so="$PREFIX/lib/librdkafka.so.1" share=no
    [ -f "$so" ] || die "no $so: run tools/librdkafka.sh build"
    # The share consumer (KIP-932 share groups) is exported from 2.15 on (a preview there).
    if nm -D --defined-only "$so" 2>/dev/null | grep -qw 'rd_kafka_share_consumer_new'; then
        share=yes
    fi
    say "$(sed -n 's/^features /features: /p' "$STAMP")"
    say "share consumer (rd_kafka_share_consumer_new, KIP-932): $share"
}

case "${1:-}" in
    build) cmd_build ;;
    prefix)
        built || die "librdkafka $RDKAFKA_VERSION is not built in $PREFIX (tools/librdkafka.sh build)"
        echo "$PREFIX"
        ;;
    info)
        built || die "librdkafka $RDKAFKA_VERSION is not built in $PREFIX (tools/librdkafka.sh build)"
        sed -n 's/^version /librdkafka: version /p' "$STAMP"
        echo "librdkafka: prefix $PREFIX"
        print_info
        ;;
    -h | --help | help) usage ;;
    "") usage >&2; exit 2 ;;
    *) echo "librdkafka: unknown command '$1'" >&2; usage >&2; exit 2 ;;
esac
