#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench-report.sh - turns build/bench/results.tsv (scenario, metric,
# median, min, max, unit) into results.json, results.md and, when gnuplot
# is there, memory.png (Pss against workers) and shutdown.png (shutdown
# time against workers).
#   scripts/bench-report.sh OUT_DIR
set -euo pipefail

OUT=$1
TSV="$OUT/results.tsv"

awk -F'\t' 'BEGIN { print "[" }
	{ printf "%s  {\"scenario\": \"%s\", \"metric\": \"%s\", \"median\": \"%s\", \"min\": \"%s\", \"max\": \"%s\", \"unit\": \"%s\"}",
	  (NR > 1 ? ",\n" : ""), $1, $2, $3, $4, $5, $6 }
	END { print "\n]" }' "$TSV" >"$OUT/results.json"

{
	echo "| scenario | metric | median | min | max | unit |"
	echo "|---|---|---:|---:|---:|---|"
	awk -F'\t' 'function fmt(x) {
			if (x !~ /^[0-9.]+$/) return x
			return x >= 1000 ? sprintf("%.0f", x) : sprintf("%.4g", x) }
		{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, fmt($3),
			 fmt($4), fmt($5), $6 }' "$TSV"
} >"$OUT/results.md"

awk -F'\t' '$1 ~ /^memory N=/ && $2 ~ /Pss sum/ {
	split($1, a, "="); n = a[2]; kind = $2; sub(/ Pss sum/, "", kind)
	v[n, kind] = $3 / 1024; ns[n] = 1 }
	END { for (n in ns) print n, v[n, "mbroker"], v[n, "private"], v[n, "mmap"] }' \
	"$TSV" | sort -n >"$OUT/memory.dat"
awk -F'\t' '$1 ~ /^shutdown N=/ {
	split($1, a, "="); n = a[2]
	if ($2 ~ /wall/) w[n] = $3; if ($2 == "in the broker") b[n] = $3
	if ($2 ~ /overhead/) o[n] = $3; ns[n] = 1 }
	END { for (n in ns) print n, w[n], b[n], o[n] }' "$TSV" | sort -n >"$OUT/shutdown.dat"

if command -v gnuplot >/dev/null && [ -s "$OUT/memory.dat" ]; then
	gnuplot <<PLOT
set terminal png size 800,500
set grid
set key left top
set output "$OUT/memory.png"
set title "Sum of Pss against the number of workers"
set xlabel "workers"
set ylabel "MiB"
plot "$OUT/memory.dat" using 1:3 with linespoints title "private copies", \
     "$OUT/memory.dat" using 1:4 with linespoints dashtype 2 title "mmap of the file (page cache)", \
     "$OUT/memory.dat" using 1:2 with linespoints linewidth 3 title "mbroker (shared segment)"
set output "$OUT/shutdown.png"
set title "Shutdown time against the number of acking workers"
set ylabel "ms"
plot "$OUT/shutdown.dat" using 1:2 with linespoints title "request to exit (wall)", \
     "$OUT/shutdown.dat" using 1:3 with linespoints title "in the broker", \
     "$OUT/shutdown.dat" using 1:4 with linespoints title "broker overhead"
PLOT
	echo "plots: $OUT/memory.png $OUT/shutdown.png" >&2
else
	echo "SKIPPED plots: gnuplot not installed (make bench installs it as root)" >&2
fi
echo "results: $OUT/results.md $OUT/results.json" >&2
