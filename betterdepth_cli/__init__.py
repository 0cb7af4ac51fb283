"""betterdepth: batch monocular depth refinement with BetterDepth.

The library's entry point is :class:`BetterDepthPipeline` (see
:mod:`betterdepth_cli.depth_pipeline`). The package is importable without torch
being loaded: heavy imports happen inside the functions and commands that need them.
"""

__version__ = "0.1.0"

__all__ = ["BetterDepthPipeline", "DepthOutput", "save_shot_png16", "__version__"]


def __getattr__(name: str):
    if name in ("BetterDepthPipeline", "DepthOutput", "save_shot_png16"):
        from betterdepth_cli import depth_pipeline

        return getattr(depth_pipeline, name)
    raise AttributeError(f"module 'betterdepth_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
