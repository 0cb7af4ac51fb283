"""Procedural RGB-D scenes rendered by open3d ray casting.

Each scene is built from a seed alone (``numpy.random.default_rng(seed)``, no
global state) and rendered on the CPU with ``o3d.t.geometry.RaycastingScene``:
one primary ray per pixel gives planar z-depth (``t_hit`` with the rays of
``create_rays_pinhole``), the hit geometry gives normals and a world position
for procedural 3D textures, and one secondary ray per lit pixel toward the
light gives cast shadows.

Scenes:

- ``indoor``: a box room (floor, walls, ceiling with their own textures), a
  point light under the ceiling, tables and chairs with thin legs, shelves,
  boxes, spheres, cylinders, tori, lamps on rods, plants (stems and many small
  leaves), grilles and wire meshes, hanging wires.
- ``outdoor``: a ground plane, sky (no hit: invalid depth), a far backdrop of
  hills (beyond ``max_depth``: invalid), buildings with window grids, poles
  with catenary wires, fences with thin pickets, trees with recursive branches
  and leaf clutter, cars, rocks; directional sun with shadows, haze.
- ``mixed``: indoor or outdoor, drawn from the seed (60 % indoor).

Conventions: world frame is z-up, metres. Cameras use the OpenCV convention
(x right, y down, z forward); ``extrinsic`` is the 4x4 world-to-camera matrix;
``K`` is the 3x3 pixel intrinsic matrix in open3d's convention, where the ray
of pixel (u, v) (column, row) goes through the pixel centre
``((u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1)``.

Outputs (:class:`SyntheticSample`): ``rgb`` (H,W,3) float32 in [0,1] (sRGB-ish
gamma 1/2.2 of the linear shading), ``depth`` (H,W) float32 planar z in metres
with 0 where invalid, ``valid`` (H,W) bool (finite hit, ``min_depth < z <=
max_depth``), ``K`` (3,3) float64, ``meta`` dict (kind, seed, extrinsic, fov,
light, counts).

Modules: :mod:`~training.synthetic.scene` (data types, camera), :mod:`~training.synthetic.meshes`
(mesh builders), :mod:`~training.synthetic.textures` (procedural textures),
:mod:`~training.synthetic.renderer` (ray casting and shading), the scene recipes
(:mod:`~training.synthetic.builder`, :mod:`~training.synthetic.indoor`,
:mod:`~training.synthetic.outdoor`, :mod:`~training.synthetic.scenes`),
:mod:`~training.synthetic.writer` (the folder format) and :mod:`~training.synthetic.benchmark`.
Every public name is importable from ``training.synthetic`` itself.
"""

from training.synthetic.benchmark import benchmark
from training.synthetic.indoor import indoor_scene
from training.synthetic.meshes import (boxes, branches, catenary, grid_bars, leaves, merge, polyline_tube, quad, torus,
                                       tubes, uv_sphere)
from training.synthetic.outdoor import outdoor_scene
from training.synthetic.renderer import render
from training.synthetic.scene import (INDOOR_MAX_DEPTH, MIN_DEPTH, OUTDOOR_MAX_DEPTH, PATTERNS, SCENE_KINDS, Light,
                                      Material, Mesh, SyntheticSample, intrinsics_from_fov, look_at)
from training.synthetic.scenes import SceneSetup, render_scene, scene_setup
from training.synthetic.textures import fbm, noise_texture, sample_noise, shade_albedo, value_noise
from training.synthetic.writer import DEPTH_FORMATS, dataset_toml, write_dataset

__all__ = [
    "DEPTH_FORMATS", "INDOOR_MAX_DEPTH", "MIN_DEPTH", "OUTDOOR_MAX_DEPTH", "PATTERNS", "SCENE_KINDS", "Light",
    "Material", "Mesh", "SyntheticSample", "benchmark", "boxes", "branches", "catenary", "dataset_toml", "fbm",
    "grid_bars", "indoor_scene", "intrinsics_from_fov", "leaves", "look_at", "merge", "noise_texture",
    "outdoor_scene", "polyline_tube", "quad", "render", "render_scene", "sample_noise", "scene_setup", "SceneSetup", "shade_albedo", "torus",
    "tubes", "uv_sphere", "value_noise", "write_dataset",
]
