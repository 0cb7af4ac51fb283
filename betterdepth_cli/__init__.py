"""betterdepth: batch monocular depth refinement with BetterDepth.

The package is importable without torch being loaded: heavy imports happen
inside the functions and commands that need them.
"""

__version__ = "0.1.0"
