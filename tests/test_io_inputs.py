"""Input discovery, sequences, streaming video and sharding (betterdepth_cli.io.inputs)."""

from __future__ import annotations

import io
import types
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from betterdepth_cli.core.types import InputDataError, NoInputError, UsageError
from betterdepth_cli.io import inputs as bi
from betterdepth_cli.io import sources as src


def _img(path: Path, value: int = 128, size=(6, 4)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


def _rels(sources) -> list[str]:
    return [str(e.relpath) for e in bi.iter_entries(sources)]


@pytest.fixture()
def tree(tmp_path):
    """photos/{a.jpg, b.png, sub/c.jpg, sub/deeper/d.png} plus things to skip."""
    root = tmp_path / "photos"
    for rel in ("a.jpg", "b.png", "sub/c.jpg", "sub/deeper/d.png"):
        _img(root / rel)
    _img(root / ".hidden.jpg")
    _img(root / ".cache" / "e.jpg")
    (root / "notes.txt").write_text("not an image")
    return root


def _mp4(path: Path, n: int = 5, size=(32, 24)) -> Path:
    import imageio_ffmpeg

    w, h = size
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=10, macro_block_size=1, quality=10)
    writer.send(None)
    for i in range(n):
        writer.send(np.full((h, w, 3), 40 * i + 20, np.uint8).tobytes())
    writer.close()
    return path


# --------------------------------------------------------------------------- folders, globs, lists, stdin


def test_folder_not_recursive(tree):
    sources = bi.discover([str(tree)])
    assert _rels(sources) == ["a", "b"]
    assert all(s.kind == "image" and not s.is_shot for s in sources)
    entry = sources[0].entries()[0]
    assert entry == src.Entry(str(tree / "a.jpg"), None, PurePosixPath("a")) and entry.key == "a"


def test_folder_recursive_mirrors_tree(tree):
    sources = bi.discover([tree], recursive=True)
    assert _rels(sources) == ["a", "b", "sub/c", "sub/deeper/d"]
    assert [e.key for e in bi.iter_entries(sources)] == ["a", "b", "sub/c", "sub/deeper/d"]


def test_extension_filter(tree):
    assert _rels(bi.discover([tree], recursive=True, extensions=("PNG",))) == ["b", "sub/deeper/d"]
    assert _rels(bi.discover([tree], recursive=True, extensions=".jpeg")) == ["a", "sub/c"]  # jpeg implies jpg
    with pytest.raises(UsageError, match="`extensions`: 'gif' is not supported"):
        bi.discover([tree], extensions=("gif",))


def test_glob(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    assert _rels(bi.discover(["photos/*.jpg"])) == ["a"]
    assert _rels(bi.discover(["photos/**/*.jpg"])) == ["a", "sub/c"]  # relative to the glob's root
    with pytest.raises(NoInputError, match=r"photos/\*.gif: no images or videos match"):
        bi.discover(["photos/*.gif"])


def test_at_list(tree, tmp_path):
    lst = tmp_path / "inputs.txt"
    lst.write_text("# my shots\n\nphotos/a.jpg\n  photos/sub  \n")
    sources = bi.discover([f"@{lst}"])
    assert _rels(sources) == ["photos/a", "photos/sub/c"]  # relative to the list's folder
    assert sources[0].entries()[0].source == str(tree / "a.jpg")


def test_stdin_list(tree, monkeypatch):
    monkeypatch.chdir(tree)
    stream = io.StringIO("b.png\n\n# skipped\nsub/c.jpg\n")
    assert _rels(bi.discover(["-"], stdin=stream)) == ["b", "sub/c"]
    with pytest.raises(UsageError, match="no stdin stream"):
        bi.discover(["-"])


def test_explicit_file_is_its_stem_and_duplicates_collapse(tree):
    sources = bi.discover([tree / "sub" / "c.jpg", str(tree / "sub" / "c.jpg")])
    assert _rels(sources) == ["c"]


def test_collision_is_a_usage_error(tmp_path):
    _img(tmp_path / "x" / "img.jpg")
    _img(tmp_path / "y" / "img.jpg")
    with pytest.raises(UsageError, match="would both be written as img"):
        bi.discover([tmp_path / "x", tmp_path / "y"])


def test_source_read_gives_float_rgb(tree):
    (source,) = bi.discover([tree / "a.jpg"])
    ((entry, image),) = list(source.read())
    assert entry.key == "a" and image.shape == (4, 6, 3) and image.dtype == np.float32
    assert abs(float(image.mean()) - 128 / 255) < 2 / 255


# --------------------------------------------------------------------------- errors


def test_missing_path(tmp_path):
    with pytest.raises(NoInputError, match="nothere.jpg: no such file or folder"):
        bi.discover([tmp_path / "nothere.jpg"])


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    _img(tmp_path / "empty" / "sub" / "x.png")
    with pytest.raises(NoInputError, match=r"empty: no images found \(extensions: jpg, jpeg, png.*subfolders were not searched"):
        bi.discover([tmp_path / "empty"])


def test_unsupported_explicit_extension(tree):
    with pytest.raises(InputDataError, match=r"notes.txt: unsupported extension '.txt'"):
        bi.discover([tree / "notes.txt"])


def test_missing_list_and_empty_list(tmp_path):
    with pytest.raises(NoInputError, match="nolist.txt: no such list file"):
        bi.discover(["@" + str(tmp_path / "nolist.txt")])
    (tmp_path / "l.txt").write_text("# nothing\n")
    with pytest.raises(NoInputError, match="the list is empty"):
        bi.discover(["@" + str(tmp_path / "l.txt")])


def test_no_specs():
    with pytest.raises(NoInputError, match="no input given"):
        bi.discover([])


# --------------------------------------------------------------------------- frames and sequences


def test_parse_frames():
    assert src.parse_frames("1001-1005") == [1001, 1002, 1003, 1004, 1005]
    assert src.parse_frames("1001-1007x3, 1, 1002") == [1, 1001, 1002, 1004, 1007]
    assert src.format_frames([1, 2, 3, 7, 9, 10]) == "1-3,7,9-10"
    for bad, why in (("", "empty"), ("10-5", "ends before it starts"), ("1-5x0", "at least 1"), ("a-b", "must be like")):
        with pytest.raises(UsageError, match=f"`frames`.*{why}"):
            src.parse_frames(bad)


@pytest.fixture()
def shot(tmp_path):
    """renders/shot.{1001,1002,1004,1005}.png (1003 missing), plus decoys."""
    folder = tmp_path / "renders"
    for n in (1001, 1002, 1004, 1005):
        _img(folder / f"shot.{n:04d}.png", value=n - 1000)
    _img(folder / "shot.001.png")  # wrong padding for %04d / ####
    _img(folder / "other.1001.png")
    return folder


@pytest.mark.parametrize("token", ["%04d", "####", "$F4"])
def test_sequence_all_frames_on_disk(shot, token):
    (source,) = bi.discover([str(shot / f"shot.{token}.png")])
    assert source.kind == "sequence" and source.is_shot
    assert [e.frame for e in source.entries()] == [1001, 1002, 1004, 1005]
    assert [str(e.relpath) for e in source.entries()] == ["shot.1001", "shot.1002", "shot.1004", "shot.1005"]
    assert source.missing == []


def test_sequence_with_gaps_and_frames(shot):
    (source,) = bi.discover([str(shot / "shot.%04d.png")], frames="1002-1004")
    assert [e.frame for e in source.entries()] == [1002, 1004]
    assert source.missing == [1003]
    values = [float(img[0, 0, 0]) for _, img in source.read()]
    assert values == pytest.approx([2 / 255, 4 / 255], abs=1e-6)
    with pytest.raises(NoInputError, match=r"none of frames 2000-2001 exist \(on disk: 1001-1002,1004-1005\)"):
        bi.discover([str(shot / "shot.%04d.png")], frames="2000-2001")


def test_sequence_unpadded_and_missing(shot, tmp_path):
    _img(shot / "plain.9.png")
    _img(shot / "plain.10.png")
    (source,) = bi.discover([str(shot / "plain.%d.png")])
    assert [e.frame for e in source.entries()] == [9, 10]
    (houdini,) = bi.discover([str(shot / "plain.$F.png")])  # Houdini's unpadded token
    assert [e.frame for e in houdini.entries()] == [9, 10]
    with pytest.raises(NoInputError, match="nope.%04d.png: no frames found"):
        bi.discover([str(shot / "nope.%04d.png")])


def test_folder_groups_numbered_files_into_sequences(shot):
    _img(shot / "IMG_0001.jpg")
    sources = bi.discover([shot])
    kinds = {s.group: s.kind for s in sources}
    assert kinds == {"IMG_0001": "image", "other.1001": "image", "shot.#.png": "sequence"}
    seq = next(s for s in sources if s.kind == "sequence")
    assert [e.frame for e in seq.entries()] == [1, 1001, 1002, 1004, 1005]  # padding is not part of the group
    assert [str(e.relpath) for e in seq.entries()][:2] == ["shot.001", "shot.1001"]


def test_same_frame_number_twice_stays_two_inputs(tmp_path):
    for name in ("s.1.png", "s.01.png", "s.2.png"):
        _img(tmp_path / "f" / name)
    sources = bi.discover([tmp_path / "f"])
    assert sorted(_rels(sources)) == ["s.01", "s.1", "s.2"]


# --------------------------------------------------------------------------- video


def test_video_streams_frames(tmp_path):
    clip = _mp4(tmp_path / "clip.mp4")
    (source,) = bi.discover([clip])
    assert source.kind == "video" and source.nframes == 5 and source.group == "clip/"
    entries = source.entries()
    assert [str(e.relpath) for e in entries] == [f"clip/clip.000{i}" for i in range(5)]
    assert [e.frame for e in entries] == [0, 1, 2, 3, 4] and entries[2].key == "clip/clip.0002"
    stream = source.read()
    assert isinstance(stream, types.GeneratorType)
    frames = list(stream)
    assert [e.frame for e, _ in frames] == [0, 1, 2, 3, 4]
    assert all(img.shape == (24, 32, 3) and img.dtype == np.float32 for _, img in frames)
    means = [float(img.mean()) * 255 for _, img in frames]
    assert means == pytest.approx([20, 60, 100, 140, 180], abs=6)


def test_video_reads_only_requested_frames(tmp_path):
    clip = _mp4(tmp_path / "clip.mp4")
    (source,) = bi.discover([clip], frames="1,3,7")
    assert [e.frame for e in source.entries()] == [1, 3] and source.missing == [7]
    got = [(e.frame, round(float(img.mean()) * 255)) for e, img in source.read()]
    assert [f for f, _ in got] == [1, 3]
    assert got[0][1] == pytest.approx(60, abs=6) and got[1][1] == pytest.approx(140, abs=6)
    with pytest.raises(NoInputError, match=r"clip.mp4: none of frames 8-9 exist \(the video has frames 0-4\)"):
        bi.discover([clip], frames="8-9")


def test_video_in_folder_only_when_extensions_name_it(tmp_path):
    _img(tmp_path / "media" / "still.png")
    _mp4(tmp_path / "media" / "take.mp4", n=2)
    assert _rels(bi.discover([tmp_path / "media"])) == ["still"]
    assert _rels(bi.discover([tmp_path / "media"], extensions=("mp4", "png"))) == ["still", "take/take.0000", "take/take.0001"]


def test_video_without_frames_is_input_data_error(tmp_path):
    import subprocess

    import imageio_ffmpeg

    audio = tmp_path / "silence.mp4"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=8000", "-t", "0.2", str(audio)]
    subprocess.run(cmd, check=True, capture_output=True)
    with pytest.raises(InputDataError, match="silence.mp4: video has no frames"):
        bi.discover([audio])
    (tmp_path / "junk.mp4").write_bytes(b"junk" * 20)
    with pytest.raises(InputDataError, match="junk.mp4: not a readable video"):
        bi.discover([tmp_path / "junk.mp4"])


# --------------------------------------------------------------------------- sharding


def test_parse_shard():
    assert src.parse_shard("2/4") == (2, 4)
    assert src.parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("0/4", "5/4", "1/0", "a/b", "3"):
        with pytest.raises(UsageError, match="`shard`"):
            src.parse_shard(bad)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_cover_everything_once_and_keep_shots_whole(shot, tmp_path, n):
    for i in range(6):
        _img(shot / f"still_{i}.jpg")
    _mp4(shot / "clip.mp4", n=3)
    sources = bi.discover([shot], extensions=("png", "jpg", "mp4"))
    assert sum(s.is_shot for s in sources) == 2  # the shot.#.png sequence and the video
    all_entries = Counter(bi.iter_entries(sources))
    seen: Counter = Counter()
    shot_home: dict[str, int] = {}
    for i in range(1, n + 1):
        part = src.shard(sources, i, n)
        assert src.shard(list(reversed(sources)), i, n) == part  # independent of input order
        for source in part:
            seen.update(source.entries())
            if source.is_shot:
                assert source.group not in shot_home
                shot_home[source.group] = i
    assert seen == all_entries and set(seen.values()) == {1}
    assert len(shot_home) == 2
    with pytest.raises(UsageError, match="`shard` must be i/n with 1 <= i <= n, got 4/3"):
        src.shard(sources, 4, 3)


def test_a_bad_line_of_a_list_is_reported_and_skipped_with_on_error(tree, tmp_path):
    lst = tmp_path / "deep" / "inputs.txt"
    lst.parent.mkdir()
    lst.write_text(f"{tree / 'a.jpg'}\n../../../../../../etc/nothing-here.png\n")
    with pytest.raises(NoInputError, match="nothing-here.png: no such file"):
        bi.discover([f"@{lst}"])
    errors = []
    sources = bi.discover([f"@{lst}"], on_error=errors.append)
    assert _rels(sources) == ["a"] and len(errors) == 1 and "nothing-here.png" in str(errors[0])
