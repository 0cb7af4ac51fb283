"""How much of the ground truth's depth edges the local patch mask lets a refiner train on.

The patch mask (paper eq. 4-5) keeps a w x w patch only where the pre-aligned
conditioning is within eta of the ground truth. With a conditioner that blurs
edges (Depth Anything) most edge patches survive at the paper's eta = 0.1; with
one that draws no edges at all, the mask can hide nearly every edge, and the
refiner never sees one. This measures, for a conditioner on a folder dataset,
the share of pixels kept and the share of the ground truth's Canny edge pixels
(the DBE metrics' edges) that fall in kept patches, at several eta:

    python -m training.mask_coverage data/synth-val --conditioner builtin --limit 40 --eta 0.1,0.2,0.3,0.5

The last line is the edge share at the last eta.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def edge_coverage(keep: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """(share of all pixels kept, share of edge pixels kept) for bool masks of equal shape.

    The edge share is NaN when there are no edge pixels.
    """
    keep, edges = np.asarray(keep, bool), np.asarray(edges, bool)
    if keep.shape != edges.shape:
        raise ValueError(f"keep {keep.shape} and edges {edges.shape} differ in shape")
    n_edges = int(edges.sum())
    return float(keep.mean()), (float((keep & edges).sum()) / n_edges if n_edges else float("nan"))


def measure(root: str, conditioner: str, limit: int, etas, patch_size: int = 8, batch: int = 8) -> list[dict]:
    """Kept-pixel and kept-edge shares over the first ``limit`` scenes of ``root``, one dict per eta."""
    import torch

    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.core.mask import patch_mask
    from betterdepth_cli.evaluation.edges import depth_edges
    from training.conditioner import load_split
    from training.objective import gt_to_space, prepare_maps

    rgb, depth, valid = load_split(root)
    rgb, depth, valid = rgb[:limit], depth[:limit], valid[:limit]
    cond = get_conditioner(conditioner)
    kept = {eta: [0, 0, 0, 0] for eta in etas}  # kept pixels, pixels, kept edge pixels, edge pixels
    for i in range(0, len(rgb), batch):
        with torch.no_grad():
            pred = cond.predict(rgb[i : i + batch].float() / 255)
        gt, gt_valid = gt_to_space(depth[i : i + batch], valid[i : i + batch], pred.kind)
        maps = prepare_maps(pred.values, pred.valid, gt, gt_valid)
        edges = np.stack([depth_edges(d[0].numpy(), v[0].numpy()) for d, v in zip(depth[i : i + batch], gt_valid)])
        for eta in etas:
            keep = patch_mask(maps.cond, maps.gt, maps.valid, patch_size, eta)[:, 0].numpy()
            acc = kept[eta]
            acc[0] += int(keep.sum())
            acc[1] += keep.size
            acc[2] += int((keep & edges).sum())
            acc[3] += int(edges.sum())
    return [{"eta": eta, "pixels": a[0] / a[1], "edges": (a[2] / a[3]) if a[3] else float("nan")}
            for eta, a in kept.items()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="a generic RGB-D folder (e.g. data/synth-val)")
    ap.add_argument("--conditioner", default="builtin")
    ap.add_argument("--limit", type=int, default=40, help="first N scenes")
    ap.add_argument("--eta", default="0.1,0.2,0.3,0.5", help="comma-separated tolerances")
    ap.add_argument("--patch-size", type=int, default=8)
    args = ap.parse_args(argv)
    etas = [float(x) for x in args.eta.split(",")]
    for r in measure(args.root, args.conditioner, args.limit, etas, args.patch_size):
        print(f"eta {r['eta']}: pixels kept {r['pixels']:.3f}, ground-truth Canny edge pixels kept {r['edges']:.3f}",
              file=sys.stdout)


if __name__ == "__main__":
    main()
