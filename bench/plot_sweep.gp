# Scenario 3: open-loop rate sweep. Median p99 latency divided by the "sustained" p99 bound
# (1.15 x the no-queueing model's p99 + 20 ms at that latency scale) against the offered rate, one
# line per implementation and latency scale. Filled points: the rate was sustained (all checks,
# see bench/README.md); hollow: it was not. Above the dashed line = latency grew past the bound.
# Called by bench/harness.py:  gnuplot -e "dir='results/X'; term='pngcairo'" bench/plot_sweep.gp
# Reads dir/sweep.dat: one block per series, first line the title, then "rate p99/bound sustained".
if (!exists("dir")) dir = "."
if (!exists("term")) term = "pngcairo"
if (term eq "pngcairo") {
  set terminal pngcairo size 1000,600 enhanced font "DejaVu Sans,11"
} else {
  set terminal png size 1000,600
}
set output dir."/sweep.png"
set title "Open loop: p99 latency / sustained bound against offered rate (filled = sustained)"
set xlabel "offered rate, messages / second"
set ylabel "p99 / bound (bound = 1.15 x model p99 + 20 ms)"
set logscale x
set logscale y
set xrange [500:2e7]
set format x "10^{%L}"
set grid xtics ytics
set key top left box opaque
set datafile missing "NaN"
f = dir."/sweep.dat"
stats f nooutput
nblocks = STATS_blocks
plot for [i=0:nblocks-1] f index i using 1:2 with lines lw 2 lc i+1 title columnheader(1), \
     for [i=0:nblocks-1] f index i using 1:($3 > 0 ? $2 : 1/0) with points pt 7 ps 1.5 lc i+1 notitle, \
     for [i=0:nblocks-1] f index i using 1:($3 > 0 ? 1/0 : $2) with points pt 6 ps 1.5 lc i+1 notitle, \
     1 with lines dt 2 lw 1.5 lc rgb "black" title "bound"
