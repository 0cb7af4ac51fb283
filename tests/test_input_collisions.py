"""Two inputs under one output name, and the tool's own outputs beside its inputs (``-o`` = the input folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from betterdepth_cli.core.types import UsageError
from betterdepth_cli.io import inputs as bi
from betterdepth_cli.io.depth_files import make_sidecar, write_sidecar
from refine_cli_helpers import refine, write_png


def _our_sidecar(path: Path, source: str) -> Path:
    write_sidecar(path, make_sidecar(kind="disparity", metric=False, source=source))
    return path


def _rels(sources) -> list[str]:
    return [str(e.relpath) for e in bi.iter_entries(sources)]


# --------------------------------------------------------------------------- what is our output


def test_is_own_output_needs_our_sidecar_an_output_name_and_not_being_its_source(tmp_path):
    jpg, png = write_png(tmp_path / "a.jpg"), write_png(tmp_path / "a.png")
    assert not bi.is_own_output(png) and not bi.is_own_output(jpg)  # no sidecar: the user's files
    (tmp_path / "a.json").write_text('{"mine": true}')
    assert not bi.is_own_output(png)  # a sidecar that is not ours
    _our_sidecar(tmp_path / "a.json", "a.jpg")
    assert bi.is_own_output(png)  # the a.png made from a.jpg
    assert not bi.is_own_output(jpg)  # its source, beside it: an input
    assert bi.is_own_output(write_png(tmp_path / "a_preview.jpg"))
    _our_sidecar(tmp_path / "a.json", "a.png")  # an npy run of a.png into its own folder
    assert not bi.is_own_output(png)


def test_our_outputs_beside_their_inputs_are_no_collision(tmp_path):
    write_png(tmp_path / "rocket.jpg")
    write_png(tmp_path / "rocket.png")
    _our_sidecar(tmp_path / "rocket.json", "rocket.jpg")
    write_png(tmp_path / "shot.1001.tif")
    write_png(tmp_path / "shot.1002.tif")
    for n in (1001, 1002):  # a shot's outputs: shot.1001.png ... grouped into a sequence of their own
        write_png(tmp_path / f"shot.{n}.png")
        _our_sidecar(tmp_path / f"shot.{n}.json", f"shot.{n}.tif")
    assert _rels(bi.discover([tmp_path])) == ["rocket", "rocket", "shot.1001", "shot.1002", "shot.1001", "shot.1002"]


# --------------------------------------------------------------------------- real collisions, one-line advice


def test_same_folder_collision_says_rename_or_leave_one_out(tmp_path):
    write_png(tmp_path / "in" / "a.jpg")
    write_png(tmp_path / "in" / "a.png")  # the user's own, no sidecar of ours
    with pytest.raises(UsageError) as err:
        bi.discover([tmp_path / "in"])
    msg = str(err.value)
    assert "\n" not in msg and "in/a.jpg and " in msg and "in/a.png would both be written as a;" in msg
    assert msg.endswith("they are in the same folder: rename one, or leave one out (e.g. --ext jpg or --ext png)")
    assert "common parent" not in msg


def test_same_folder_collision_of_one_kind_gives_no_ext_hint(tmp_path):
    write_png(tmp_path / "a.jpg")
    write_png(tmp_path / "a.jpeg")  # --ext jpg takes both
    with pytest.raises(UsageError, match=r"same folder: rename one, or leave one out$"):
        bi.discover([tmp_path])


def test_a_foreign_sidecar_does_not_hide_a_collision(tmp_path):
    write_png(tmp_path / "a.jpg")
    write_png(tmp_path / "a.png")
    (tmp_path / "a.json").write_text('{"mine": true}')
    with pytest.raises(UsageError, match="would both be written as a; they are in the same folder"):
        bi.discover([tmp_path])


def test_cross_folder_collision_keeps_the_common_parent_advice(tmp_path):
    write_png(tmp_path / "x" / "img.jpg")
    write_png(tmp_path / "y" / "img.png")
    with pytest.raises(UsageError) as err:
        bi.discover([tmp_path / "x", tmp_path / "y"])
    assert str(err.value).endswith("would both be written as img; give their common parent folder instead")


# --------------------------------------------------------------------------- through the CLI


@pytest.mark.parametrize(("name", "formats", "written"), [
    ("rocket.jpg", "png16", ["rocket.png"]),
    ("rocket.tif", "png16,exr,preview", ["rocket.png", "rocket.exr", "rocket_preview.jpg"]),
    ("rocket.png", "npy", ["rocket.npy"]),  # a png input beside its own sidecar stays an input
])
def test_rerun_next_to_the_inputs_skips_the_existing_outputs(tmp_path, models, name, formats, written):
    src = tmp_path / "V"
    write_png(src / name)
    assert refine([src, "-o", src, *models, "-f", formats, "-q"]).exit_code == 0
    stamps = {n: (src / n).stat().st_mtime_ns for n in [*written, "rocket.json"]}
    res = refine([src, "-o", src, *models, "-f", formats])
    assert res.exit_code == 0, res.stderr
    assert "0 processed, 1 skipped, 0 failed" in res.stderr
    assert {n: (src / n).stat().st_mtime_ns for n in stamps} == stamps
    assert json.loads((src / "rocket.json").read_text())["source"] == name


def test_rerun_of_a_shot_next_to_its_frames_skips_it(tmp_path, models):
    src = tmp_path / "S"
    for n in (1001, 1002):
        write_png(src / f"shot.{n}.jpg", seed=n)
    assert refine([src, "-o", src, *models, "-q"]).exit_code == 0
    res = refine([src, "-o", src, *models])
    assert res.exit_code == 0, res.stderr
    assert "0 processed, 2 skipped, 0 failed" in res.stderr


def test_a_users_own_file_beside_an_input_is_a_collision_on_the_command_line(tmp_path, models):
    src = tmp_path / "V"
    write_png(src / "a.jpg")
    before = write_png(src / "a.png", seed=4).read_bytes()
    res = refine([src, "-o", src, *models, "-q"])
    assert res.exit_code == 64
    (line,) = [ln for ln in res.stderr.splitlines() if "error" in ln]
    assert "would both be written as a; they are in the same folder: rename one" in line
    assert (src / "a.png").read_bytes() == before and not (src / "a.json").exists()
    assert refine([src, "--ext", "jpg", "-o", tmp_path / "out", *models, "-q"]).exit_code == 0  # the advice works
    assert (tmp_path / "out" / "a.png").is_file() and (src / "a.png").read_bytes() == before
