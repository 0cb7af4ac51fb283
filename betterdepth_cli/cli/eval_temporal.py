"""`betterdepth eval --dataset synth-seq|tum`: temporal metrics of sequence datasets (thin over the runner)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def eval_sequences(o: dict, device: str, dtype: str, out_json: Path | None, quiet: bool, dataset_options: dict) -> None:
    """Run :func:`~betterdepth_cli.evaluation.temporal_runner.run_temporal_evaluation` and print its table."""
    from betterdepth_cli.evaluation.runner import jsonable
    from betterdepth_cli.evaluation.temporal_runner import TemporalConfig, format_table, run_temporal_evaluation
    from betterdepth_cli.io.files import atomic_write_bytes

    from betterdepth_cli.core.types import UsageError

    unsupported = [f"--{k.replace('_', '-')}" for k in ("split_file", "save_predictions", "csv") if o.get(k)]
    if unsupported:
        raise UsageError(f"{', '.join(unsupported)}: not available for the sequence dataset {o['dataset']} "
                         "(it scores whole clips; --limit caps the frames per clip)")
    if o.get("limit") is not None:
        dataset_options = {"max_frames": o["limit"], **dataset_options}
    cfg = TemporalConfig(
        dataset=o["dataset"], data_root=str(o["data_root"]), dataset_options=dataset_options,
        conditioner=o.get("conditioner"), model=o.get("model"), refine=not o["no_refine"], steps=o.get("steps"),
        ensemble=o.get("ensemble"), reduction=o.get("reduction"), processing_res=o.get("processing_res"),
        seed=int(o["seed"] or 0), device=device, dtype=dtype, batch_size=int(o["batch_size"]),
    )

    def progress(done: int, total: int, clip: str) -> None:
        if not quiet:
            print(f"eval: {done}/{total} clips ({clip})", file=sys.stderr, flush=True)

    result = run_temporal_evaluation(cfg, progress=progress)
    if out_json is not None:
        from betterdepth_cli.cli.eval import check_outputs

        check_outputs(out_json, None)  # again: a file may have appeared there while the evaluation ran
        text = json.dumps(jsonable(result.to_json()), indent=2)
        atomic_write_bytes(out_json, text.encode())
    # the table is the result (stdout): -q silences only the progress on stderr
    print(f"{cfg.dataset}: {len(result.clips)} clips, clip-level alignment; TAE as Video Depth Anything "
          "(both directions, GT poses)")
    print(format_table(result))
    spf = result.seconds_per_frame
    print(f"seconds per frame: per-frame {spf['per-frame']:.3f}, shot {spf['shot']:.3f}")
