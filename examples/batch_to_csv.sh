#!/usr/bin/env bash
# Landmarks for every video in a folder, one OpenFace-style CSV each, and a summary table.
#   examples/batch_to_csv.sh FOOTAGE_DIR OUT_DIR
set -euo pipefail
in=${1:?usage: batch_to_csv.sh FOOTAGE_DIR OUT_DIR}
out=${2:?usage: batch_to_csv.sh FOOTAGE_DIR OUT_DIR}
mkdir -p "$out"

# One CSV per source; a source that fails is listed by stableface and the others still complete.
status=0
stableface track "$in" --out-dir "$out" --format csv --overwrite -q || status=$?

# Summary: frames, frames with a face, mean confidence, from the CSVs with standard tools.
echo "file,rows,faces_found,mean_confidence" > "$out/summary.csv"
for f in "$out"/*.csv; do
  [ "$(basename "$f")" = summary.csv ] && continue
  awk -F, -v name="$(basename "$f")" 'NR > 1 { rows++; if ($5 == 1) { found++; conf += $4 } }
    END { printf "%s,%d,%d,%.3f\n", name, rows, found, (found ? conf / found : 0) }' "$f" >> "$out/summary.csv"
done
column -s, -t "$out/summary.csv"
exit $status
