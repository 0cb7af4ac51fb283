"""The batch-job package (betterdepth_cli.jobs) and the shared CLI options, without the CLI."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from betterdepth_cli import jobs as batch
from betterdepth_cli.jobs import RefineSettings, Summary, exit_code, plan_run
from betterdepth_cli.cli import options as o
from betterdepth_cli.core.types import NoInputError, OutputError, UsageError
from betterdepth_cli.io.inputs import ImageSource, discover
from betterdepth_cli.io.depth_files import load_depth_output


def _png(path: Path, h: int = 24, w: int = 32, seed: int = 0) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    img = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture(scope="module")
def loaded(tiny_dpt_dir, tiny_model_dir):
    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.core.refiner import load_model

    return get_conditioner(f"hf:{tiny_dpt_dir}"), load_model(tiny_model_dir)


def _settings(out: Path, **kw) -> RefineSettings:
    base = dict(out_dir=out, formats=("png16", "npy"), conditioner="tiny", model="tiny", steps=1, processing_res=32)
    return RefineSettings(**{**base, **kw})


def _run(sources, settings, loaded, **kw):
    cond, model = loaded
    return batch.run(plan_run(sources, settings), settings, cond, model, **kw)


# --------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    "counts, cont, code",
    [
        (dict(processed=3), False, 0),
        (dict(processed=0, skipped=3), False, 0),
        (dict(processed=2, failed=1), True, 3),
        (dict(processed=2, failed=1), False, 65),  # the first bad input halted the batch
        (dict(processed=0, failed=2), True, 65),  # every input failed
        (dict(processed=0, skipped=1, failed=1), True, 3),  # done earlier counts as done
        (dict(processed=1, interrupted=True), True, 130),
    ],
)
def test_exit_code_table(counts, cont, code):
    assert exit_code(Summary(**counts), cont) == code


def test_summary_line_rate():
    s = Summary(processed=10, skipped=2, failed=1, seconds=4.0)
    assert s.images_per_second == 2.5
    assert s.line() == "done: 10 processed, 2 skipped, 1 failed in 4.0 s (2.50 images/s)"


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(batch_size=0), "`--batch-size` must be >= 1"),
        (dict(steps=0), "`--steps` must be >= 1"),
        (dict(ensemble=0), "`--ensemble` must be >= 1"),
        (dict(processing_res=-1), "`--processing-res` must be >= 0"),
        (dict(reduction="max"), "`--reduction` must be mean or median"),
        (dict(formats=("png16", "gif")), "`format` must be among"),
        (dict(formats=("uncertainty",)), "--ensemble 2 or more"),
        (dict(formats=("uncertainty",), ensemble=2, refine=False), "no --no-refine"),
    ],
)
def test_settings_are_checked(tmp_path, kw, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        _settings(tmp_path, **kw)


def test_sidecar_fields_without_refinement(tmp_path):
    fields = _settings(tmp_path, refine=False).sidecar_fields()
    assert fields["model"] is None and fields["steps"] is None and fields["refined"] is False


# --------------------------------------------------------------------------- plan


def _done(out, base, settings):
    """What a finished run leaves for ``base``: the map and a sidecar of ours with the run's settings."""
    import json

    from betterdepth_cli.io.depth_files import make_sidecar

    (out / f"{base}.png").parent.mkdir(parents=True, exist_ok=True)
    (out / f"{base}.png").write_bytes(b"x")
    meta = make_sidecar(kind="disparity", metric=False, **settings.sidecar_fields())
    (out / f"{base}.json").write_text(json.dumps(meta))


def test_plan_skips_existing_and_redoes_a_shot_whole(tmp_path):
    src = tmp_path / "in"
    _png(src / "a.png")
    _png(src / "b.png")
    for f in (1, 2, 3):
        _png(src / f"s.{f:04d}.png", seed=f)
    out = tmp_path / "out"
    settings = _settings(out, formats=("png16",))
    plan = plan_run(discover([src]), settings)
    assert (plan.total, plan.todo, plan.skipped) == (5, 5, 0)
    assert [g.is_shot for g in plan.groups] == [False, False, True]
    # a.png done; one frame of the shot done: the shot is redone whole (one range)
    for base in ("a", "s.0002"):
        _done(out, base, settings)
    plan = plan_run(discover([src]), settings)
    assert (plan.total, plan.todo, plan.skipped) == (5, 4, 1)
    assert [it.key for it in plan.groups[2].todo] == ["s.0001", "s.0002", "s.0003"]
    for f in (1, 3):
        _done(out, f"s.{f:04d}", settings)
    plan = plan_run(discover([src]), settings)
    assert plan.groups[2].todo == [] and plan.todo == 1
    assert plan_run(discover([src]), _settings(out, formats=("png16",), overwrite=True)).todo == 5
    lines = list(plan.describe())
    assert len(lines) == 5 and sum(ln.endswith("(exists, skip)") for ln in lines) == 4


def test_plan_never_overwrites_a_file_it_did_not_write(tmp_path):
    src = tmp_path / "in"
    _png(src / "A.png")
    _png(src / "A_preview.jpg")  # a user photo with an output-like name: an input, not a result
    # A's preview would land on that photo: refused, --overwrite or not (inputs are never written)
    for over in (False, True):
        with pytest.raises(UsageError, match="A_preview.jpg would overwrite the input"):
            plan_run(discover([src]), _settings(src, formats=("npy", "preview"), overwrite=over))
    (src / "A.json").write_text('{"my": "notes"}')  # a user file where the sidecar would go
    plan = plan_run(discover([src]), _settings(src, formats=("npy",)))
    items = {it.key: it for g in plan.groups for it in g.items}
    assert set(items) == {"A", "A_preview"} and plan.excluded == 0
    assert "A.json: exists and was not written by betterdepth" in items["A"].blocked
    assert items["A_preview"].blocked is None
    # --overwrite may replace outputs
    over = plan_run(discover([src]), _settings(src, formats=("npy",), overwrite=True))
    assert all(it.blocked is None for g in over.groups for it in g.items)


def test_plan_redoes_nothing_silently_when_settings_changed(tmp_path):
    src = tmp_path / "in"
    _png(src / "a.png")
    out = tmp_path / "out"
    _done(out, "a", _settings(out, formats=("png16",), steps=4))
    same = plan_run(discover([src]), _settings(out, formats=("png16",), steps=4))
    assert same.todo == 0
    other = plan_run(discover([src]), _settings(out, formats=("png16",), steps=1))
    (item,) = other.groups[0].todo
    assert "outputs exist from other settings (steps 4 -> 1)" in item.blocked
    redo = plan_run(discover([src]), _settings(out, formats=("png16",), steps=1, overwrite=True))
    assert redo.todo == 1 and redo.groups[0].todo[0].blocked is None


def test_plan_refuses_output_over_input(tmp_path):
    img = _png(tmp_path / "img.png")
    with pytest.raises(UsageError, match="would overwrite this input"):
        plan_run(discover([img]), _settings(tmp_path, formats=("png16",)))
    # npy output beside a png input is fine
    assert plan_run(discover([img]), _settings(tmp_path, formats=("npy",))).todo == 1


def test_plan_leaves_out_earlier_results_inside_the_output_folder(tmp_path, loaded):
    src = tmp_path / "photos"
    _png(src / "a.png")
    settings = _settings(src / "depth", formats=("png16", "preview"))
    _run(discover([src], recursive=True), settings, loaded)
    assert sorted(p.name for p in (src / "depth").iterdir()) == ["a.json", "a.png", "a_preview.jpg"]
    plan = plan_run(discover([src], recursive=True), settings)  # finds depth/a.png and depth/a_preview.jpg
    assert plan.excluded == 2 and [it.key for g in plan.groups for it in g.items] == ["a"]
    with pytest.raises(NoInputError, match="inside the output folder"):
        plan_run(discover([src / "depth"]), settings)
    # a plain image in the output folder is an input like any other
    assert plan_run(discover([src / "a.png"]), _settings(src, formats=("npy",))).todo == 1


def test_preview_video_path():
    assert batch.preview_video_path(Path("out"), "clip/clip.0000") == Path("out/clip/clip_preview.mp4")
    assert batch.preview_video_path(Path("out"), "sh/sh.1001", [1001, 1003, 1100]) == Path("out/sh/sh_preview.1001-1100.mp4")


def test_check_output_dir(tmp_path):
    batch.check_output_dir(tmp_path / "new" / "deep")
    assert (tmp_path / "new" / "deep").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not writable"):
        batch.check_output_dir(tmp_path / "file" / "out")


def test_read_card(tmp_path, tiny_model_dir):
    card = batch.read_card(str(tiny_model_dir))
    assert card["defaults"]["steps"] >= 1
    assert batch.read_card(str(tmp_path / "nothing")) is None


# --------------------------------------------------------------------------- engine


class _Recording(ImageSource):
    """A real image source that notes which thread decodes it."""

    threads: list[str] = []

    def read(self, entries=None, on_error=None):
        for entry, image in super().read(entries, on_error):
            _Recording.threads.append(threading.current_thread().name)
            yield entry, image


def test_reads_and_writes_run_in_background_threads(tmp_path, loaded):
    from pathlib import PurePosixPath

    sources = [_Recording(_png(tmp_path / f"i{i}.png", seed=i), PurePosixPath(f"i{i}")) for i in range(3)]
    _Recording.threads = []
    writers = []
    summary = _run(sources, _settings(tmp_path / "o"), loaded,
                   on_item=lambda status, item, msg: writers.append((status, threading.current_thread().name)))  # fmt: skip
    assert summary.processed == 3 and summary.failed == 0
    assert _Recording.threads == ["betterdepth-read"] * 3
    assert writers == [("done", "betterdepth-write")] * 3
    assert threading.current_thread().name not in _Recording.threads
    assert set(summary.timings) >= {"conditioner", "sample", "total"}


def test_result_does_not_depend_on_the_images_before_it(tmp_path, loaded):
    a, b = _png(tmp_path / "a.png", seed=1), _png(tmp_path / "b.png", seed=2)
    _run(discover([a, b]), _settings(tmp_path / "both", formats=("npy",)), loaded)
    _run(discover([b]), _settings(tmp_path / "one", formats=("npy",)), loaded)
    np.testing.assert_array_equal(np.load(tmp_path / "both" / "b.npy"), np.load(tmp_path / "one" / "b.npy"))


def test_batches_of_mixed_sizes(tmp_path, loaded):
    src = tmp_path / "in"
    sizes = {"a": (24, 32), "b": (24, 32), "c": (16, 40), "d": (24, 32), "e": (24, 32)}
    for name, (h, w) in sizes.items():
        _png(src / f"{name}.png", h, w, seed=ord(name))
    summary = _run(discover([src]), _settings(tmp_path / "o", batch_size=3), loaded)
    assert summary.processed == 5
    for name, (h, w) in sizes.items():
        assert np.load(tmp_path / "o" / f"{name}.npy").shape == (h, w)


def test_shot_spilled_to_disk_gives_the_same_files(tmp_path, loaded):
    src = tmp_path / "seq"
    for f in range(1, 5):
        _png(src / f"shot.{f:03d}.png", seed=f)
    kw = dict(formats=("png16", "preview"))
    _run(discover([src]), _settings(tmp_path / "mem", **kw), loaded)
    _run(discover([src]), _settings(tmp_path / "disk", spill_bytes=0, **kw), loaded)
    for f in range(1, 5):
        a = (tmp_path / "mem" / f"shot.{f:03d}.png").read_bytes()
        assert a == (tmp_path / "disk" / f"shot.{f:03d}.png").read_bytes()
    assert not [p for p in (tmp_path / "disk").iterdir() if p.name.startswith(".")]  # spill folder removed
    metas = [load_depth_output(tmp_path / "disk" / f"shot.{f:03d}.png")[1] for f in range(1, 5)]
    assert len({(m["encoding"]["min"], m["encoding"]["max"]) for m in metas}) == 1


def test_failures_counted_under_continue_on_error(tmp_path, loaded):
    src = tmp_path / "in"
    _png(src / "a.png")
    (src / "b.png").write_bytes(b"")
    _png(src / "c.png", seed=3)
    failed = []
    summary = _run(discover([src]), _settings(tmp_path / "o", continue_on_error=True), loaded,
                   on_item=lambda status, item, msg: status == "failed" and failed.append(msg))  # fmt: skip
    assert (summary.processed, summary.failed) == (2, 1)
    assert len(failed) == 1 and failed[0].endswith("b.png: empty file (0 bytes)")
    assert summary.failures == [(batch.display_path(src / "b.png"), failed[0])]
    assert exit_code(summary, True) == 3


def test_output_error_stops_the_run(tmp_path, loaded):
    img = _png(tmp_path / "in" / "a.png")
    (tmp_path / "o" / "a.npy").mkdir(parents=True)  # a folder where the file should go
    with pytest.raises(OutputError, match="a.npy"):
        _run(discover([img]), _settings(tmp_path / "o", formats=("npy",)), loaded)
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("text, expected", [(None, "auto"), ("CPU", "cpu"), ("cuda:1", "cuda:1"), ("mps", "mps")])
def test_parse_device(text, expected):
    assert o.parse_device(text) == expected


@pytest.mark.parametrize("text", ["gpu", "cpu:0", "cuda:x", "mps:1", ""])
def test_parse_device_rejects(text):
    with pytest.raises(UsageError, match="`--device` must be auto, cpu, cuda, cuda:N or mps"):
        o.parse_device(text or "bogus")


def test_resolve_device_on_this_machine():
    import torch

    assert o.resolve_device("cpu") == "cpu"
    assert o.resolve_device("auto") in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            o.resolve_device("cuda:0")


def test_dtypes():
    import torch

    assert [o.parse_dtype(t) for t in (None, "FP16", "bfloat16", "half")] == ["fp32", "fp16", "bf16", "fp16"]
    assert o.torch_dtype("bf16") is torch.bfloat16
    with pytest.raises(UsageError, match="fp32, fp16 or bf16"):
        o.parse_dtype("int8")
    with pytest.raises(UsageError, match="needs a GPU"):
        o.check_dtype_for_device("fp16", "cpu")
    o.check_dtype_for_device("fp16", "cuda")


def test_config_round_trip_and_precedence(tmp_path):
    schema = {"steps": int, "format": (list, str), "device": str, "overwrite": bool, "inputs": (list, str)}
    text = o.dump_toml({"steps": 4, "format": ["png16", "exr"], "device": 'a"b', "overwrite": True, "inputs": None},
                       header="made by a test\nline two", section="refine")  # fmt: skip
    assert text.startswith("# made by a test\n# line two\n[refine]\n")
    path = tmp_path / "c.toml"
    path.write_text("steps = 1\ndevice = \"cpu\"\n[eval]\nsteps = 99\n" + text.split("[refine]\n")[0] + "")
    assert o.load_config(path, schema, section="refine") == {"steps": 1, "device": "cpu"}
    path.write_text(text)
    cfg = o.load_config(path, schema, section="refine")
    assert cfg == {"steps": 4, "format": ["png16", "exr"], "device": 'a"b', "overwrite": True}
    merged = o.merge_options({"steps": None, "device": "cuda"}, cfg, {"steps": 2, "seed": 0})
    assert merged == {"steps": 4, "seed": 0, "format": ["png16", "exr"], "device": "cuda", "overwrite": True}


@pytest.mark.parametrize(
    "text, message",
    [
        ("steps = true\n", "`steps` must be int"),
        ("overwrite = 1\n", "`overwrite` must be bool"),
        ("bogus-key = 1\n", "unknown key 'bogus-key'"),
        ("steps = = 2\n", "not valid TOML"),
    ],
)
def test_config_errors(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        o.load_config(path, {"steps": int, "overwrite": bool})
    with pytest.raises(UsageError, match="file not found"):
        o.load_config(tmp_path / "none.toml", {"steps": int})


def test_split_list():
    assert o.split_list("png16, exr,,npy", "format") == ["png16", "exr", "npy"]
    assert o.split_list(["a", " b "], "x") == ["a", "b"] and o.split_list(None, "x") == []
    with pytest.raises(UsageError, match="comma-separated"):
        o.split_list([1, 2], "format")


def test_a_successful_rerun_removes_the_temporaries_of_a_killed_run(tmp_path):
    import os
    import time

    from betterdepth_cli.jobs import remove_stale_temps

    src = tmp_path / "in"
    _png(src / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".a.png.tmp-k9x2ab.png"  # what atomic_write leaves when killed mid-write
    stale.write_bytes(b"partial")
    user = out / ".notes.tmp-keep"  # not a temporary of one of this plan's outputs
    user.write_bytes(b"mine")
    old = time.time() - 120
    os.utime(stale, (old, old))
    os.utime(user, (old, old))
    plan = plan_run(discover([src]), _settings(out, formats=("png16",)))
    assert remove_stale_temps(plan, before=time.time()) == 1
    assert not stale.exists() and user.exists()


def test_a_crash_inside_the_model_is_one_error_with_exit_70(tmp_path, loaded):
    """The engine's error path: whatever torch/transformers raise becomes a ModelError naming the input."""
    from betterdepth_cli.core.types import ModelError

    cond, model = loaded

    class Crashing:  # wraps the real conditioner; its forward fails as a transformers bug would
        kind, metric, device, needs_keys = cond.kind, cond.metric, cond.device, False

        def predict(self, images, keys=None):
            raise RuntimeError("shape '[1, 4, -1]' is invalid for input of size 7\nmore lines")

    src = tmp_path / "in"
    _png(src / "a.png")
    settings = _settings(tmp_path / "out", formats=("npy",))
    with pytest.raises(ModelError, match=r"a.png: the model failed \(RuntimeError: shape .* is invalid") as err:
        batch.run(plan_run(discover([src]), settings), settings, Crashing(), model)
    assert err.value.exit_code == 70 and "more lines" not in str(err.value)


def _three_images(tmp_path):
    """in/a.png, b.png, c.png, the npy settings of out/ and their plan."""
    src = tmp_path / "in"
    for name in ("a", "b", "c"):
        _png(src / f"{name}.png", seed=ord(name))
    out = tmp_path / "out"
    settings = _settings(out, formats=("npy",))
    return src, out, settings, plan_run(discover([src]), settings)


def test_two_runs_on_one_output_folder_share_the_work(tmp_path, loaded):
    """A group claimed by a live run is skipped by a second one; a dead run's claim is taken over."""
    import subprocess
    import sys

    from betterdepth_cli.jobs import CLAIMS_DIR
    from betterdepth_cli.jobs.claims import Claims

    src, out, settings, plan = _three_images(tmp_path)
    cond, model = loaded
    # another live process holds b's claim
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        b_group = next(g for g in plan.groups if g.items[0].key == "b")
        claim = Claims(plan.out_dir).path(b_group.key)
        claim.parent.mkdir(parents=True, exist_ok=True)
        import socket

        claim.write_text(f"{socket.gethostname()} {sleeper.pid}")
        summary = batch.run(plan, settings, cond, model)
        assert (summary.processed, summary.skipped) == (2, 1)
        assert sorted(p.name for p in out.glob("*.npy")) == ["a.npy", "c.npy"]
        assert claim.exists()  # the other run's claim is not ours to remove
    finally:
        sleeper.kill()
        sleeper.wait()
    # its process is gone: a rerun takes the claim over and writes b; every claim of ours is released
    summary = batch.run(plan_run(discover([src]), settings), settings, cond, model)
    assert summary.processed == 1 and (out / "b.npy").exists()
    assert not (out / CLAIMS_DIR).exists()


@pytest.mark.parametrize("holder", ["dead long ago", "dead just now", "alive"])
def test_a_claim_of_another_host_is_taken_over_once_its_heartbeat_stops(tmp_path, loaded, monkeypatch, holder):
    """A farm job killed on another node leaves claims this host cannot ask about: one whose heartbeat
    (its modification time) stopped long ago is taken over at once; a fresh one is watched after the
    other inputs and taken over when it goes stale; one whose run keeps beating is that run's."""
    import os
    import threading
    import time

    from betterdepth_cli.jobs.claims import STALE_ENV, Claims

    monkeypatch.setenv(STALE_ENV, "1.5")
    src, out, settings, plan = _three_images(tmp_path)
    claim = Claims(out).path(next(g for g in plan.groups if g.items[0].key == "b").claim_key)
    claim.parent.mkdir(parents=True)
    claim.write_text("another-node 12345")
    if holder == "dead long ago":
        os.utime(claim, (time.time() - 3600, time.time() - 3600))
    stop = threading.Event()

    def beat():  # the other node's run, alive
        while not stop.wait(0.2):
            os.utime(claim)

    beating = threading.Thread(target=beat) if holder == "alive" else None
    if beating:
        beating.start()
    try:
        summary = batch.run(plan, settings, *loaded)
    finally:
        stop.set()
        if beating:
            beating.join()
    if holder == "alive":
        assert (summary.processed, summary.skipped) == (2, 1) and claim.exists()
        assert not (out / "b.npy").exists()
    else:
        assert (summary.processed, summary.skipped) == (3, 0) and (out / "b.npy").exists()
        assert not claim.exists()


def test_a_run_beats_on_its_claims_until_it_releases_them(tmp_path):
    import time

    from betterdepth_cli.jobs.claims import Claims

    claims = Claims(tmp_path, heartbeat=0.05)
    assert claims.take("g", "g") is None
    path = claims.path("g")
    before = path.stat().st_mtime
    time.sleep(0.3)
    assert path.stat().st_mtime > before  # touched: alive
    claims.release()
    assert not path.exists() and not path.parent.exists()


def test_frame_chunks_of_one_shot_are_claimed_apart(tmp_path, loaded):
    """A render farm's array over `--frames` chunks of one shot, into one folder: a chunk that a live
    run holds is skipped, the other chunks of the same shot are not."""
    import socket
    import subprocess
    import sys

    from betterdepth_cli.jobs.claims import Claims

    src = tmp_path / "in"
    for i in range(4):
        _png(src / f"shot.{1001 + i}.png", seed=i)
    out = tmp_path / "out"
    cond, model = loaded
    plans = {frames: plan_run(discover([src], frames=frames), _settings(out, formats=("npy",)))
             for frames in ("1001-1002", "1003-1004")}
    keys = {frames: plan.groups[0].claim_key for frames, plan in plans.items()}
    assert keys["1001-1002"] != keys["1003-1004"]  # one shot, two chunks, two claims
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # the first chunk's job is running
        claim = Claims(out).path(keys["1001-1002"])
        claim.parent.mkdir(parents=True, exist_ok=True)
        claim.write_text(f"{socket.gethostname()} {sleeper.pid}")
        summary = batch.run(plans["1003-1004"], _settings(out, formats=("npy",)), cond, model)
        assert (summary.processed, summary.skipped) == (2, 0)
        assert sorted(p.name for p in out.glob("*.npy")) == ["shot.1003.npy", "shot.1004.npy"]
        summary = batch.run(plan_run(discover([src], frames="1001-1002"), _settings(out, formats=("npy",))),
                            _settings(out, formats=("npy",)), cond, model)
        assert (summary.processed, summary.skipped) == (0, 2)  # that chunk is the running job's
    finally:
        sleeper.kill()
        sleeper.wait()


def test_outputs_of_a_model_with_another_card_are_stale(tmp_path):
    # the sidecar records the card's digest (measurements left out): a changed card (here the layout
    # low-pass) makes earlier outputs stale; re-measured metrics alone do not
    from betterdepth_cli.core.settings import card_digest

    card = {"format": "betterdepth-model/1", "layout_lowpass": 0.01, "metrics": {"abs_rel": 0.1}}
    assert card_digest(card) == card_digest({**card, "metrics": {"abs_rel": 0.2}, "observations": ["x"]})
    other = card_digest({**card, "layout_lowpass": 0.02})
    assert other != card_digest(card) and len(other) == 12 and card_digest(None) is None
    src = tmp_path / "in"
    _png(src / "a.png")
    out = tmp_path / "out"
    _done(out, "a", _settings(out, formats=("png16",), model_card=card_digest(card)))
    assert plan_run(discover([src]), _settings(out, formats=("png16",), model_card=card_digest(card))).todo == 0
    (item,) = plan_run(discover([src]), _settings(out, formats=("png16",), model_card=other)).groups[0].todo
    assert f"model_card {card_digest(card)!r} -> {other!r}" in item.blocked


@pytest.mark.parametrize("formats", [("npy", "png16"), ("exr", "png16", "preview")])
def test_a_shot_stopped_before_its_end_resumes_with_png16_beside_float_formats(tmp_path, loaded, formats):
    """A shot's png16 waits for its last frame (one range); a run killed before then has written the
    frames' EXR/NPY already. Those carry a sidecar of ours at once, so the rerun redoes the shot
    instead of refusing them as files not ours (exit 65)."""
    import threading

    from betterdepth_cli.jobs.writers import OutputWriter

    src = tmp_path / "in"
    for i in range(3):
        _png(src / f"shot.{1001 + i}.png", seed=i)
    out = tmp_path / "out"
    settings = _settings(out, formats=formats)
    plan = plan_run(discover([src]), settings)
    (group,) = plan.groups
    writer = OutputWriter(plan, settings, threading.Event(), lambda m: None)
    values, valid = np.full((24, 32), 0.5, np.float32), np.ones((24, 32), bool)
    writer.write(group.todo[0], values, valid, None, "disparity", False, {})  # the first frame, then killed
    writer.close()
    again = plan_run(discover([src]), settings)
    assert [it.blocked for it in again.groups[0].todo] == [None] * 3  # ours, partial: the shot is redone
    summary = batch.run(again, settings, *loaded)
    assert (summary.processed, summary.failed) == (3, 0)
    assert all(load_depth_output(out / f"shot.{1001 + i}.png")[1]["range"] == "shot" for i in range(3))


def test_a_claim_just_created_and_not_yet_written_is_held(tmp_path):
    """Between creating its claim (O_EXCL) and writing ``host pid`` into it, another run's claim is
    empty: it is held (fresh), not taken over at once."""
    from betterdepth_cli.jobs.claims import Claims

    claims = Claims(tmp_path)
    path = claims.path("g")
    path.parent.mkdir(parents=True)
    path.touch()  # created, not yet written
    held = claims.take("g", "g")
    assert held is not None and held.remote and path.exists()
