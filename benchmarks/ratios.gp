# Bar chart of measured / target per case (below the line = target met). Called by summarize.py with
# datafile and outfile set: rows are  "label" normalised "raw value".
set terminal svg size 900,480 dynamic noenhanced font "sans,11" background "white"
set output outfile
set title "creditguard benchmarks: worst run / target (≤ 1 meets the target; labels: the worst run)"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.6
set yrange [0:*]
set grid ytics
set ylabel "measured / target"
set xtics rotate by -25 nomirror
set key off
plot datafile using 2:xtic(1) linecolor rgb "#4a7ab5", \
     '' using 0:2:3 with labels offset 0,0.8 notitle, \
     1.0 with lines dashtype 2 linecolor rgb "#c03030" linewidth 2
