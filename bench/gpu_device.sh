#!/usr/bin/env bash
# One prepared GPU run, for a Linux machine with an NVIDIA GPU that has CUDA torch, transformers
# and PEFT but neither wgpu nor a Vulkan loader, and no network. From the repository root:
#
#     bench/gpu_device.sh [full|small] [OUT_DIR]      (default: full, $OUT or bench/results)
#
# It installs what it needs from files carried beside the checkout (folders git ignores):
#   .gl/   the Vulkan loader .deb files, unpacked into / with dpkg -x; fetched once with
#            o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#            mkdir -p .gl /tmp/amd64/partial; apt-get $o update
#            (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
#   .whl/  wgpu and what it needs, installed into $SITE (default /tmp/site); fetched once with
#            for v in 3.12 3.11; do python3 -m pip download --no-deps --only-binary=:all: \
#              --python-version $v --implementation cp --platform manylinux_2_28_x86_64 \
#              --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#              wgpu==0.32.0 rendercanvas==2.7.2 cffi==2.1.1 pycparser==3.12; done
#          (cffi is compiled per Python version: pip takes the wheel that fits the interpreter)
#   extension/dist/model   the tab sorter's model as `python build.py build` deploys it (29 MiB):
#          carried, the run also times the tab classifier (else its row says it is missing)
# then runs bench/gpu_device.py: the kernel selfcheck on the native adapter, the MiniLM-shaped
# and TinyLlama-shaped LoRA steps of the GPU backend against torch + PEFT on CUDA, and a
# per-dispatch profile of the engine's steps; gpu_device.json and gpu_device.md land in OUT_DIR.
# "small" runs the same path with small shapes (a few minutes on lavapipe, the CPU Vulkan driver).
# The whole run is held under 8 minutes (RUN_SECONDS: another limit). PYTHON picks the
# interpreter (default python3); PARTS a comma-separated part of the run (bench/gpu_device.py
# --parts: tabs, matmul, attention, decode, minilm, tinyllama, checkpointing, gpt2, phi3;
# default all).
set -euo pipefail

SIZE=${1:-full}
cd "$(dirname "$0")/.."
OUT_DIR=${2:-${OUT:-bench/results}}
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
started=$(date +%s)

# 1. The Vulkan loader.
if compgen -G ".gl/*.deb" >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
elif ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    echo "[gpu_device] no Vulkan loader on this machine and no .gl/*.deb to install one from" >&2
    exit 2
fi

# 2. wgpu, from the carried wheels only.
if ! compgen -G ".whl/wgpu-*.whl" >/dev/null; then
    echo "[gpu_device] no .whl/wgpu-*.whl: carry the wheels (see this script's header)" >&2
    exit 2
fi
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" --find-links .whl wgpu rendercanvas cffi pycparser
export PYTHONPATH="$SITE:$PWD"

# 3. NVIDIA's Vulkan driver, where the loader does not find it by itself.
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nvidia_icd" ]; then
    export VK_DRIVER_FILES="$nvidia_icd"
fi
nvidia_egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
if [ -f "$nvidia_egl" ]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES="$nvidia_egl"
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
echo "[gpu_device] set up in $(( $(date +%s) - started )) s; size $SIZE; results to $OUT_DIR"

# 4. The run, within what is left of 8 minutes (or of RUN_SECONDS), of the PARTS asked for.
left=$(( ${RUN_SECONDS:-480} - ($(date +%s) - started) - 15 ))
PYTHONUNBUFFERED=1 timeout "$left" "$PYTHON" bench/gpu_device.py --size "$SIZE" --out "$OUT_DIR" \
    --site "$SITE" --seconds "$(( left - 45 ))" ${PARTS:+--parts "$PARTS"}
echo "[gpu_device] done in $(( $(date +%s) - started )) s"
