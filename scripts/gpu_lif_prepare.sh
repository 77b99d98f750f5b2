#!/usr/bin/env bash
# Prepare .gpu/ for scripts/gpu_lif_check.py: the generated CUDA of scripts/lif64.snn and the
# CPU back end's reference result on a closed-form input. Run on the CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu
cargo build -q --release -p snnc
SNNC=target/release/snnc
$SNNC compile scripts/lif64.snn -o .gpu --emit cuda
cp .gpu/lif.cu .gpu/lif.cu 2>/dev/null || true
cp kernels/cuda/snn_prelude.cuh .gpu/
python3 - <<'PY'
import array, struct
T, B, N = 64, 32, 4096
n = T * B * N
x = array.array('f', ((((i * 2654435761) % (1 << 20)) / (1 << 20) * 2.5) for i in range(n)))
hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d, %d), }" % (T, B, N)
hdr = hdr + " " * (((len(hdr) + 11 + 63) // 64) * 64 - len(hdr) - 11) + "\n"
with open(".gpu/x.npy", "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + x.tobytes())
PY
$SNNC run scripts/lif64.snn --input .gpu/x.npy -o .gpu/ref > /dev/null
python3 - <<'PY'
import hashlib, json, struct, re
def data(p):
    b = open(p, "rb").read()
    hl = struct.unpack("<H", b[8:10])[0]
    return b[10 + hl:]
src = open(".gpu/lif.cu").read()
sym = re.search(r'extern "C" __global__ void (snn_k\d+_s)\(', src).group(1)
json.dump({"symbol": sym, "params": [2.0, 1.0, 0.0],
           "spikes_sha256": hashlib.sha256(data(".gpu/ref/s.spikes.npy")).hexdigest(),
           "counts_sha256": hashlib.sha256(data(".gpu/ref/s.counts.npy")).hexdigest()},
          open(".gpu/ref.json", "w"))
PY
rm -f .gpu/x.npy; rm -rf .gpu/ref
ls -la .gpu
