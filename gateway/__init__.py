"""consolegw: the radio and hardware gateway for dispatch consoles."""

import os

# One BLAS thread, set before numpy loads OpenBLAS (it reads this once). Our matrices are
# tiny (a TTY frame's 32 codes by 8 windows, a tone filter bank): OpenBLAS's worker
# threads only spin between calls, which cost 7 % of the TTY decoder's CPU (10 runs of 8
# calls, user time 1.93 s against 1.80 s) and would load a console PC's second core. The
# benches set the same. An operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
