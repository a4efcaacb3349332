"""``python -m swaplab.train key=value ...``: train or resume a model (works under torchrun).

Examples: ``torchrun --nproc_per_node 2 -m swaplab.train model=liae-cpu data.src=A data.dst=B
run_dir=runs/ab`` (per-pair); ``python -m swaplab.train model=simswap-tiny data.train=[LFW_TRAIN]
data.eval=LFW_TEST run_dir=runs/simswap`` (one-shot). Only parses arguments; the work is
``swaplab.train.entry.main_from_overrides``.
"""

from __future__ import annotations

import sys

from swaplab.train.entry import main_from_overrides

if __name__ == "__main__":
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    main_from_overrides(sys.argv[1:])
