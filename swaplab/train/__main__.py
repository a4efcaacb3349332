"""``python -m swaplab.train key=value ...``: train or resume a per-pair model (works under torchrun).

Example: ``torchrun --nproc_per_node 2 -m swaplab.train model=liae-cpu data.src=A data.dst=B
run_dir=runs/ab``. Only parses arguments; the work is ``swaplab.train.trainer.main_from_overrides``.
"""

from __future__ import annotations

import sys

from swaplab.train.trainer import main_from_overrides

if __name__ == "__main__":
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    main_from_overrides(sys.argv[1:])
