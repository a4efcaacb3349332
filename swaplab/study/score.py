"""A sweep's scoring job when a study names several protocols (``eval.also``): one child process that
scores a run on its main protocol into ``RUN/eval/`` (as ``swaplab eval`` does) and on each further
protocol into ``RUN/eval-<protocol>/``, sharing the face analyses of photos the protocols have in
common. Further protocols skip detectability (the main one measures it)::

    python -m swaplab.study.score RUN_DIR --protocol oneshot_v1 --also oneshot_occluded_v1 --limit 20
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from swaplab.study.sweep_data import also_eval_dir

__all__ = ["main", "score_run"]


def score_run(
    run_dir: str | Path,
    protocol: str,
    also: Sequence[str] = (),
    *,
    limit: int = 0,
    device: str = "cpu",
    detector_pairs: int = 0,
    data_root: str | None = None,
    encoders: Sequence[str] = (),
) -> list[Path]:
    """Score ``run_dir`` on ``protocol`` and every protocol of ``also``; returns the metrics.json paths."""
    from swaplab.evaluate.evaluator import EvalOptions, evaluate
    from swaplab.evaluate.faces import FaceCache

    cache = FaceCache()
    options = EvalOptions(limit=limit, device=device, encoders=tuple(encoders), detector_pairs=detector_pairs)
    written = []
    for name, out, opts in [
        (protocol, Path(run_dir) / "eval", options),
        *((p, also_eval_dir(run_dir, p), dataclasses.replace(options, detector_pairs=-1)) for p in also),
    ]:
        result = evaluate(run_dir, out_dir=out, protocol=name, data_root=data_root, options=opts, cache=cache)
        for warning in result.warnings:
            print(f"warning: {name}: {warning}")
        written.append(out / "metrics.json")
        print(f"scored {run_dir} on {name}: {out / 'metrics.json'}", flush=True)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swaplab.study.score", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--protocol", required=True)
    parser.add_argument("--also", nargs="*", default=[])
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--detector-pairs", type=int, default=0)
    parser.add_argument("--data", default=None)
    parser.add_argument("--encoders", nargs="*", default=[])
    args = parser.parse_args(argv)
    try:
        score_run(
            args.run_dir,
            args.protocol,
            args.also,
            limit=args.limit,
            device=args.device,
            detector_pairs=args.detector_pairs,
            data_root=args.data,
            encoders=args.encoders,
        )
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
