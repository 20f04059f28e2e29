# Headline bar chart: median msgs/s of mayhem, the floor and the asyncio peer (asyncio, uvloop)
# in scenario 1 (logging off) and scenario 2 (INFO logging to a file), log scale.
# Called by bench/harness.py:  gnuplot -e "dir='results/X'; term='pngcairo'" bench/plot_headline.gp
# Reads dir/headline.dat (group label, then one column per implementation; NaN = not run).
if (!exists("dir")) dir = "."
if (!exists("term")) term = "pngcairo"
if (term eq "pngcairo") {
  set terminal pngcairo size 1000,600 enhanced font "DejaVu Sans,11"
} else {
  set terminal png size 1000,600
}
set output dir."/headline.png"
set title "Throughput, flat out, zero I/O latency (median of runs; log scale)"
set ylabel "messages / second"
set logscale y
set yrange [100:*]
set format y "10^{%L}"
set grid ytics
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top right
set bmargin 4
lbl(x) = (x != x) ? "" : (x >= 1e6 ? sprintf("%.2fM", x/1e6) : (x >= 1e3 ? sprintf("%.1fk", x/1e3) : sprintf("%.0f", x)))
set datafile missing "NaN"
f = dir."/headline.dat"
plot f using 2:xtic(1) title "mayhem" lc rgb "#1f77b4", \
     f using 3 title "floor (hand-written loop)" lc rgb "#7f7f7f", \
     f using 4 title "asyncio peer" lc rgb "#ff7f0e", \
     f using 5 title "uvloop peer" lc rgb "#2ca02c", \
     for [i=2:5] f using ($0 + (i - 3.5) / 5.0):(column(i)):(lbl(column(i))) with labels offset 0,0.7 font ",9" notitle
