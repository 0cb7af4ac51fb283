"""python -m training.synthetic [n] [size]: the generator's cost per scene, on one thread."""

import sys

from training.synthetic.benchmark import benchmark
from training.synthetic.scene import SCENE_KINDS

n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
size = int(sys.argv[2]) if len(sys.argv) > 2 else 256
for k in SCENE_KINDS:
    r = benchmark(n, size, k)
    print(f"{k}: {r.pop('wall_ms'):.1f} ms wall, {r.pop('cpu_ms'):.1f} ms CPU per {size}x{size} scene "
          f"(1 thread); render stages ms: {r}")
