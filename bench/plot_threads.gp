# Scenario 4: msgs/s against threads, latency scale 0.01, flat out. async: --threads 1,2,4;
# blocking: --io-threads 8..1024; horizontal lines: the asyncio and uvloop peers.
# Called by bench/harness.py:
#   gnuplot -e "dir='results/X'; term='pngcairo'; asyncio=1234; uvloop=2345" bench/plot_threads.gp
# Reads dir/threads.dat: two blocks (async, blocking), each "x median min max".
if (!exists("dir")) dir = "."
if (!exists("term")) term = "pngcairo"
if (!exists("asyncio")) asyncio = NaN
if (!exists("uvloop")) uvloop = NaN
if (term eq "pngcairo") {
  set terminal pngcairo size 1000,600 enhanced font "DejaVu Sans,11"
} else {
  set terminal png size 1000,600
}
set output dir."/threads.png"
set title "Which I/O model, how many threads? (latency scale 0.01, flat out; median, min-max bars)"
set xlabel "threads (async: --threads; blocking: --io-threads)"
set ylabel "messages / second"
set logscale x 2
set logscale y
set xrange [0.7:1500]
set xtics (1,2,4,8,16,32,64,128,256,512,1024)
set format y "10^{%L}"
set offsets 0, 0, graph 0.08, graph 0.05
set grid xtics ytics
set key bottom right box opaque
set datafile missing "NaN"
f = dir."/threads.dat"
plot f index 0 using 1:2:3:4 with yerrorlines lw 2 pt 7 lc rgb "#1f77b4" title "mayhem --io-model async", \
     f index 1 using 1:2:3:4 with yerrorlines lw 2 pt 5 lc rgb "#d62728" title "mayhem --io-model blocking", \
     (asyncio == asyncio ? asyncio : 1/0) with lines dt 2 lw 2 lc rgb "#ff7f0e" title "asyncio peer", \
     (uvloop == uvloop ? uvloop : 1/0) with lines dt 3 lw 2 lc rgb "#2ca02c" title "uvloop peer"
