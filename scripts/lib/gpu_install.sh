#!/usr/bin/env bash
# Install a bundle of scripts/prepare_gpu_bundle.sh into SITE (a --target folder for
# PYTHONPATH): check every file's sha256, pip-install the wheels offline, unpack the
# package stubs and join their big files from the parts, checking each joined file's
# sha256 before it is used. Idempotent: a stamp per manifest skips a second install.
#
#   scripts/lib/gpu_install.sh BUNDLE SITE [--cross]
#
# BUNDLE holds batch1/ ... batchK/ (carried by one or several device calls; files carried
# earlier stay on a warm machine). --cross installs the cp312 manylinux wheels from another
# Python (a CPU dry run: checks the set installs, does not make it importable here).
set -euo pipefail
BUNDLE=$1 SITE=$2 CROSS=${3:-}
PY=${PYTHON:-python3}

manifest=$(ls "$BUNDLE"/batch*/MANIFEST.sha256 2>/dev/null | head -1 || true)
[[ -n $manifest ]] || { echo "error: no $BUNDLE/batch*/MANIFEST.sha256 (carry the bundle's batches; see scripts/prepare_gpu_bundle.sh)" >&2; exit 1; }
joins=$(dirname "$manifest")/JOINS.tsv
cd "$BUNDLE"
missing=$(cut -d' ' -f3- "$(basename "$(dirname "$manifest")")/MANIFEST.sha256" | while read -r f; do [[ -e $f ]] || echo "$f"; done)
if [[ -n $missing ]]; then
  echo "error: bundle files missing (carry their batch in this or an earlier call on the same warm machine):" >&2
  echo "$missing" | sed 's/^/  /' | head -20 >&2
  exit 1
fi
sha256sum -c --quiet "${manifest#"$BUNDLE"/}"
echo "bundle: $(wc -l < "${manifest#"$BUNDLE"/}") files, sha256 ok"
stamp="$SITE/.installed-$(sha256sum "${manifest#"$BUNDLE"/}" | cut -c1-16)"
if [[ -e $stamp ]]; then
  echo "already installed in $SITE"
  exit 0
fi
mkdir -p "$SITE"
flags=(-q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE")
if [[ $CROSS == --cross ]]; then
  flags+=(--only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
          --platform manylinux_2_26_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
fi
"$PY" -m pip install "${flags[@]}" batch*/wheels/*.whl
echo "wheels: $(ls batch*/wheels/*.whl | wc -l) installed into $SITE"
while IFS=$'\t' read -r target sha stub parts; do
  stub_path=$(ls batch*/files/"$stub")
  tar -xf "$stub_path" -C "$SITE"
  part_paths=()
  for p in $parts; do part_paths+=("$(ls batch*/files/"$p")"); done
  cat "${part_paths[@]}" > "$SITE/$target.tmp"
  got=$(sha256sum "$SITE/$target.tmp" | cut -d' ' -f1)
  if [[ $got != "$sha" ]]; then
    rm -f "$SITE/$target.tmp"
    echo "error: joined $target has sha256 $got, expected $sha" >&2
    exit 1
  fi
  mv "$SITE/$target.tmp" "$SITE/$target"
  echo "joined $target from ${#part_paths[@]} parts (sha256 ok)"
done < "${joins#"$BUNDLE"/}"
touch "$stamp"
