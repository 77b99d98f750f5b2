#!/usr/bin/env bash
# Fetches NVIDIA's NVRTC 13.0 library and ptxas from PyPI (no GPU, no CUDA toolkit needed),
# so that tests/nvrtc.rs compiles every generated kernel with the real NVRTC for sm_80 and
# sm_90 and checks registers and spills with `ptxas -v`.
#
#   scripts/fetch-cuda-tools.sh            # -> target/cuda-tools/13.0.88/{lib,bin}
#
# Idempotent: a complete install is reused without touching the network. The wheels are
# checked against pinned sha256 sums; only libnvrtc.so.13, libnvrtc-builtins.so.13.0 and ptxas
# are unpacked (about 150 MB) and the wheels are deleted afterwards. When the download is
# impossible (offline, no pip, not x86-64 Linux) it says so in one line and exits 0: the
# NVRTC checks then print `SKIP:` and pass. A wheel whose checksum differs is an error.
#
# SNNC_CUDA_TOOLS=DIR installs into DIR instead (tests/nvrtc.rs reads the same variable).
set -euo pipefail

VERSION=13.0.88
# sha256 of the wheels, measured 2026-11 from pypi.org.
NVRTC_WHEEL=nvidia_cuda_nvrtc-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl
NVRTC_SHA256=ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575
NVCC_WHEEL=nvidia_cuda_nvcc-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
NVCC_SHA256=56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${SNNC_CUDA_TOOLS:-$root/target/cuda-tools/$VERSION}"
stamp="$dest/.complete"

skip() {
    echo "fetch-cuda-tools: $1; the NVRTC/ptxas checks (tests/nvrtc.rs) will be skipped" >&2
    exit 0
}

show() {
    echo "fetch-cuda-tools: NVRTC $VERSION ready"
    echo "  nvrtc:  $dest/lib/libnvrtc.so.13"
    echo "  ptxas:  $dest/bin/ptxas"
}

if [[ -f "$stamp" && -f "$dest/lib/libnvrtc.so.13" && -f "$dest/lib/libnvrtc-builtins.so.13.0" && -x "$dest/bin/ptxas" ]]; then
    show
    exit 0
fi

[[ "$(uname -s)-$(uname -m)" == Linux-x86_64 ]] || skip "the wheels are for x86-64 Linux only"
python=""
for p in python3 python; do
    if command -v "$p" >/dev/null && "$p" -m pip --version >/dev/null 2>&1; then
        python="$p"
        break
    fi
done
[[ -n "$python" ]] || skip "no python3 with pip to download the wheels"

mkdir -p "$(dirname "$dest")"
work="$(mktemp -d "$(dirname "$dest")/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

if ! "$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --retries 1 --timeout 30 \
    --disable-pip-version-check --no-cache-dir -d "$work/wheels" \
    "nvidia-cuda-nvrtc==$VERSION" "nvidia-cuda-nvcc==$VERSION" >"$work/pip.log" 2>&1; then
    skip "could not download the nvidia-cuda-nvrtc/nvcc $VERSION wheels (offline?): $(grep -m1 '^ERROR' "$work/pip.log" || tail -n1 "$work/pip.log")"
fi

# Checksums, then unpack only the files needed (Python's zipfile: no `unzip` needed).
"$python" - "$work" "$NVRTC_WHEEL" "$NVRTC_SHA256" "$NVCC_WHEEL" "$NVCC_SHA256" <<'EOF'
import hashlib, os, sys, zipfile
work, pairs = sys.argv[1], sys.argv[2:]
wanted = {
    "nvidia/cu13/lib/libnvrtc.so.13": "lib",
    "nvidia/cu13/lib/libnvrtc-builtins.so.13.0": "lib",
    "nvidia/cu13/bin/ptxas": "bin",
}
for name, sha in zip(pairs[0::2], pairs[1::2]):
    path = os.path.join(work, "wheels", name)
    if not os.path.isfile(path):
        sys.exit(f"fetch-cuda-tools: expected wheel {name} not downloaded (got {os.listdir(os.path.dirname(path))})")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != sha:
        sys.exit(f"fetch-cuda-tools: sha256 of {name} is {h.hexdigest()}, expected {sha}")
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            if member in wanted:
                out = os.path.join(work, "tools", wanted[member], os.path.basename(member))
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with z.open(member) as src, open(out, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                os.chmod(out, 0o755)
                del wanted[member]
if wanted:
    sys.exit(f"fetch-cuda-tools: missing from the wheels: {sorted(wanted)}")
EOF

touch "$work/tools/.complete"
rm -rf "$dest"
mv "$work/tools" "$dest"
show
