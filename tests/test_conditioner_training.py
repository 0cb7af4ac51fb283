"""The builtin conditioner's trainer: its loss by hand, and a saved model loads as a conditioner."""

import pytest
import torch

from training.conditioner import build_model, build_processor, disparity_target, ssi_loss


def test_ssi_loss_ignores_positive_scale_and_shift_but_not_inversion():
    target = torch.arange(16.0).reshape(1, 1, 4, 4)
    w = torch.ones_like(target, dtype=torch.bool)
    assert ssi_loss(2 * target + 3, target, w).item() < 1e-6
    # inverted: the scale is clamped to ~0, the shift becomes the mean: loss = mean |t - 7.5| = 4
    assert abs(ssi_loss(-target, target, w).item() - 4.0) < 0.05
    # masked pixels do not count, whatever they hold
    pred = (2 * target + 3).clone()
    pred[..., 0, 0] = 1e6
    w2 = w.clone()
    w2[..., 0, 0] = False
    assert ssi_loss(pred, target, w2).item() < 1e-6


def test_disparity_target_scales_by_the_98th_percentile_and_zeroes_sky():
    depth = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]]])
    valid = depth > 0
    t = disparity_target(depth, valid)
    q98 = torch.quantile(torch.tensor([1.0, 0.5, 0.25]), 0.98)
    torch.testing.assert_close(t[0, 0, 0], torch.tensor([1.0, 0.5]) / q98)
    assert t[0, 0, 1, 1].item() == 0.0


def test_trained_model_folder_loads_as_a_conditioner(tmp_path):
    from betterdepth_cli.conditioner_registry import get_conditioner

    cfg = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64,
           "neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16, "head_hidden_size": 8, "input_size": 56}
    build_model(cfg).save_pretrained(tmp_path / "c")
    build_processor(56).save_pretrained(tmp_path / "c")
    cond = get_conditioner(f"hf:{tmp_path / 'c'}")
    pred = cond.predict(torch.rand(1, 3, 30, 40))
    assert pred.values.shape == (1, 1, 30, 40) and pred.kind == "disparity"
    assert cond.preprocess(torch.rand(1, 3, 30, 40)).shape[-2:] == (42, 56)  # keep_aspect_ratio scales as little as possible


def test_patch_size_sets_the_token_grid_and_the_processor_multiple(tmp_path):
    from betterdepth_cli.conditioner_registry import get_conditioner

    cfg = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64,
           "neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16, "head_hidden_size": 8, "input_size": 56,
           "patch_size": 7}
    model = build_model(cfg)
    assert model.config.patch_size == 7 and model.config.backbone_config.patch_size == 7
    model.save_pretrained(tmp_path / "c")
    build_processor(56, 7).save_pretrained(tmp_path / "c")
    cond = get_conditioner(f"hf:{tmp_path / 'c'}")
    # 30 x 40 scaled to 56 on the long side keeps 42 x 56: both multiples of 7 (and of 14)
    assert cond.preprocess(torch.rand(1, 3, 30, 40)).shape[-2:] == (42, 56)
    # 25 x 40 -> 35 x 56: a multiple of 7, not of 14
    assert cond.preprocess(torch.rand(1, 3, 25, 40)).shape[-2:] == (35, 56)
    pred = cond.predict(torch.rand(1, 3, 25, 40))
    assert pred.values.shape == (1, 1, 25, 40)


def test_training_device_names():
    import pytest

    from training.conditioner import training_device

    assert training_device("cpu") == torch.device("cpu")
    assert training_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            training_device("cuda")


TINY_DA = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64,
           "neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16, "head_hidden_size": 8,
           "input_size": 28, "patch_size": 7}


def _tiny_recipe(root, steps, minutes, model=None):
    model = model or TINY_DA
    return {
        "data": {"train": str(root), "val": "", "crop": model["input_size"]},  # crops at the model's input size
        "model": model,
        "train": {"steps": steps, "batch_size": 2, "checkpoint_every": 100, "log_every": 1, "threads": 1,
                  "device": "cpu", "max_minutes": minutes, "warmup": 1},
    }


def _random_scenes(root):
    import cv2
    import numpy as np

    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(root / "rgb" / f"{i}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        np.save(root / "depth" / f"{i}.npy", rng.uniform(1, 5, (32, 32)).astype(np.float32))
    return root


def test_max_minutes_stops_at_a_checkpoint_and_resume_finishes(tmp_path):
    import json

    from training.conditioner import train

    root = _random_scenes(tmp_path / "scenes")
    out = tmp_path / "run"
    # a deadline already passed: one step, then a checkpoint and no final model
    assert train(_tiny_recipe(root, 3, 1e-9), out, log=lambda m: None) == out
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1
    assert not (out / "final").exists()
    # resumed without a deadline: steps 2 and 3, then the final model
    final = train(_tiny_recipe(root, 3, 0), out, resume=True, log=lambda m: None)
    assert final == out / "final" and (final / "model.safetensors").exists()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3


class _Planted:
    """A pickle that writes a file when unpickled (what an attacker would plant as checkpoint.pt)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_refuses_a_planted_pickle_without_running_it(tmp_path):
    from betterdepth_cli.core.types import UsageError
    from training.conditioner import train

    root = _random_scenes(tmp_path / "scenes")
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"model": _Planted(marker), "step": 1}, out / "checkpoint.pt")
    with pytest.raises(UsageError, match="checkpoint.pt: not a checkpoint this trainer wrote"):
        train(_tiny_recipe(root, 3, 0), out, resume=True, log=lambda m: None)
    assert not marker.exists()


HYBRID = {"arch": "dpt-hybrid", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
          "intermediate_size": 64, "bit_hidden_sizes": [8, 16, 32], "neck_hidden_sizes": [8, 16, 32, 32],
          "fusion_hidden_size": 16, "head_hidden_size": 8, "input_size": 32}


def test_dpt_hybrid_trains_and_its_folder_loads_as_a_conditioner(tmp_path):
    import pytest
    from transformers import DPTForDepthEstimation

    from betterdepth_cli.conditioner_registry import get_conditioner
    from training.conditioner import final_conv, train

    model = build_model(HYBRID)
    assert isinstance(model, DPTForDepthEstimation) and model.config.is_hybrid
    # the head's last convolution, before its final ReLU, starts in the ReLU's linear range
    assert isinstance(model.head.head[-1], torch.nn.ReLU)
    assert torch.all(final_conv(model).bias == 1.0)
    final = train(_tiny_recipe(_random_scenes(tmp_path / "scenes"), 2, 0, HYBRID), tmp_path / "run", log=lambda m: None)
    assert (final / "model.safetensors").exists()
    cond = get_conditioner(f"hf:{final}")
    # transformers' hybrid embeddings take only the configured size: every image goes in square
    assert cond.preprocess(torch.rand(1, 3, 30, 40)).shape[-2:] == (32, 32)
    pred = cond.predict(torch.rand(1, 3, 30, 40))
    assert pred.values.shape == (1, 1, 30, 40) and pred.kind == "disparity"
    with pytest.raises(ValueError, match="arch"):
        build_model({**HYBRID, "arch": "resnet"})
    with pytest.raises(ValueError, match="multiple of 16"):
        build_model({**HYBRID, "input_size": 40})


def test_load_split_threads_give_the_same_tensors_and_report_the_odd_scene(tmp_path):
    import cv2
    import numpy as np
    import pytest

    from training.conditioner import load_split

    root = tmp_path / "scenes"
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rng = np.random.default_rng(1)
    for i in range(7):
        cv2.imwrite(str(root / "rgb" / f"{i}.png"), rng.integers(0, 255, (16, 24, 3), dtype=np.uint8))
        depth = rng.uniform(1, 5, (16, 24)).astype(np.float32)
        depth[0, i] = 0.0  # one invalid pixel per scene, at a known column
        np.save(root / "depth" / f"{i}.npy", depth)
    one = load_split(str(root), workers=1)
    three = load_split(str(root), workers=3)
    assert [x.shape for x in one] == [(7, 3, 16, 24), (7, 1, 16, 24), (7, 1, 16, 24)]
    assert all(torch.equal(a, b) for a, b in zip(one, three))
    # scenes stay in id order: scene i's invalid pixel is at column i
    assert [int(torch.nonzero(~one[2][i, 0, 0])[0]) for i in range(7)] == list(range(7))
    # the RGB round trip is exact (uint8 in, uint8 out, channels as RGB)
    bgr = cv2.imread(str(root / "rgb" / "4.png"))
    assert torch.equal(one[0][4], torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1))

    cv2.imwrite(str(root / "rgb" / "5.png"), rng.integers(0, 255, (8, 24, 3), dtype=np.uint8))
    np.save(root / "depth" / "5.npy", rng.uniform(1, 5, (8, 24)).astype(np.float32))
    with pytest.raises(ValueError, match=r"scene 5 is \(8, 24\), the first is \(16, 24\)"):
        load_split(str(root), workers=3)


PLAIN_DPT = {"arch": "dpt", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
             "intermediate_size": 64, "neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16,
             "patch_size": 8, "input_size": 32}


def test_plain_dpt_trains_and_its_folder_loads_as_a_conditioner(tmp_path):
    import json

    from transformers import DPTForDepthEstimation

    from betterdepth_cli.conditioner_registry import get_conditioner
    from training.conditioner import final_conv, train

    model = build_model(PLAIN_DPT)
    assert isinstance(model, DPTForDepthEstimation) and not model.config.is_hybrid
    cfg = model.config
    assert (cfg.image_size, cfg.patch_size, cfg.backbone_out_indices) == (32, 8, [0, 1, 2, 3])
    assert torch.all(final_conv(model).bias == 1.0)
    final = train(_tiny_recipe(_random_scenes(tmp_path / "scenes"), 2, 0, PLAIN_DPT), tmp_path / "run",
                  log=lambda m: None)
    assert final == tmp_path / "run" / "final" and (final / "model.safetensors").exists()
    # Intel/dpt-large's processor: a square resize with no multiple
    proc = json.loads((final / "preprocessor_config.json").read_text())
    assert (proc["keep_aspect_ratio"], proc["ensure_multiple_of"]) == (False, 1)
    assert proc["size"] == {"height": 32, "width": 32}
    cond = get_conditioner(f"hf:{final}")
    assert cond.preprocess(torch.rand(1, 3, 30, 40)).shape[-2:] == (32, 32)
    pred = cond.predict(torch.rand(1, 3, 30, 40))
    assert pred.values.shape == (1, 1, 30, 40) and pred.kind == "disparity"
    # the loaded weights are the trained ones
    trained = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    loaded = DPTForDepthEstimation.from_pretrained(final).state_dict()
    assert all(torch.equal(trained[k], loaded[k]) for k in trained)


def test_photometric_jitter_by_hand_and_off_at_zero():
    from training.conditioner import photometric_jitter

    rgb = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(7)
    state = g.get_state()
    assert photometric_jitter(rgb, 0.0, g) is rgb
    assert torch.equal(g.get_state(), state)  # strength 0 draws nothing: old runs resume bit-identical
    # a uniform grey image: saturation and contrast leave it alone, brightness scales it, gamma bends it
    grey = torch.full((2, 3, 4, 4), 0.5)
    u = torch.rand(4, 2, generator=torch.Generator().manual_seed(3))
    f = 1 + 0.3 * (2 * u - 1)
    out = photometric_jitter(grey, 0.3, torch.Generator().manual_seed(3))
    for i in range(2):
        want = (0.5 * f[2, i]).clamp(0, 1) ** (2 ** (f[3, i] - 1))
        torch.testing.assert_close(out[i], torch.full((3, 4, 4), want.item()))
    # a coloured image stays in [0, 1]
    out = photometric_jitter(rgb, 0.5, torch.Generator().manual_seed(4))
    assert out.shape == rgb.shape and out.min() >= 0 and out.max() <= 1
