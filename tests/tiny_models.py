"""Tiny models of the real classes, built from configs for tests (no hub access).

Each ``save_*`` function writes a folder with ``save_pretrained`` that the
user-facing loaders read back.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch


def _quiet():
    from transformers.utils import logging

    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*torchvision.*")


def tiny_dpt(image_size: int = 64, hybrid: bool = False, seed: int = 0):
    from transformers import BitConfig, DPTConfig, DPTForDepthEstimation

    _quiet()
    torch.manual_seed(seed)
    kwargs = dict(
        image_size=image_size, patch_size=16, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=128, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[16, 32, 64, 64],
        fusion_hidden_size=32, head_in_index=-1, readout_type="project",
    )
    if hybrid:
        kwargs.update(
            is_hybrid=True,
            backbone_featmap_shape=[1, 64, image_size // 16, image_size // 16],
            backbone_config=BitConfig(
                global_padding="same", layer_type="bottleneck", depths=[1, 1, 1], hidden_sizes=[16, 32, 64],
                embedding_size=16, out_features=["stage1", "stage2", "stage3"],
                embedding_dynamic_padding=True, num_groups=8,
            ),
        )
    return DPTForDepthEstimation(DPTConfig(**kwargs))


def tiny_depth_anything(metric: bool = False, seed: int = 0):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    _quiet()
    torch.manual_seed(seed)
    extra = {"depth_estimation_type": "metric", "max_depth": 20} if metric else {"depth_estimation_type": "relative"}
    return DepthAnythingForDepthEstimation(
        DepthAnythingConfig(
            backbone_config=Dinov2Config(
                image_size=70, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                intermediate_size=64, out_indices=[1, 2, 3, 4], apply_layernorm=True, reshape_hidden_states=False,
            ),
            reassemble_hidden_size=32, patch_size=14, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
            head_hidden_size=8, **extra,
        )
    )


def save_dpt(path: Path, image_size: int = 64, hybrid: bool = False, seed: int = 0) -> Path:
    """A tiny DPT with the processor settings of Intel/dpt-large (square resize)."""
    from transformers import DPTImageProcessor

    _quiet()
    tiny_dpt(image_size, hybrid, seed).save_pretrained(path)
    DPTImageProcessor(size={"height": image_size, "width": image_size}, keep_aspect_ratio=False).save_pretrained(path)
    return Path(path)


def save_depth_anything(path: Path, metric: bool = False, seed: int = 0) -> Path:
    """A tiny Depth Anything with the processor settings of the public checkpoints."""
    from transformers import DPTImageProcessor

    _quiet()
    tiny_depth_anything(metric, seed).save_pretrained(path)
    DPTImageProcessor(
        size={"height": 70, "width": 70}, keep_aspect_ratio=True, ensure_multiple_of=14, do_pad=False,
        resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(path)
    return Path(path)


def save_fake_stable_diffusion(root: Path) -> Path:
    """A tiny Stable Diffusion folder in the diffusers layout (cross-attention UNet, CLIP text)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    _quiet()
    root = Path(root)
    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8,
    ).save_pretrained(root / "unet")
    AutoencoderKL(
        latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 32), layers_per_block=1,
    ).save_pretrained(root / "vae")
    CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                                 vocab_size=1000, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)).save_pretrained(root / "text_encoder")
    tok = root / "tokenizer"
    tok.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3}
    (tok / "vocab.json").write_text(json.dumps(vocab))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tok / "vocab.json"), str(tok / "merges.txt"), model_max_length=77).save_pretrained(tok)
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(root / "scheduler")
    return root


def _jitter(model, seed: int, amount: float = 0.2):
    """Random weights away from the classes' neutral initialisation (ZoeDepth's starts constant)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(amount * torch.randn(p.shape, generator=g))
    return model


def save_zoedepth(path: Path, seed: int = 0, size: tuple[int, int] = (64, 96)) -> Path:
    """A tiny ZoeDepth (BEiT backbone, one NYU bin head) with its processor (reflection padding)."""
    from transformers import BeitConfig, ZoeDepthConfig, ZoeDepthForDepthEstimation
    from transformers.models.zoedepth.image_processing_pil_zoedepth import ZoeDepthImageProcessorPil

    _quiet()
    torch.manual_seed(seed)
    backbone = BeitConfig(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                          intermediate_size=64, out_indices=[1, 2, 3, 4], reshape_hidden_states=False,
                          use_relative_position_bias=True, add_fpn=False)
    model = ZoeDepthForDepthEstimation(ZoeDepthConfig(
        backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, num_relative_features=8,
        bottleneck_features=16, bin_embedding_dim=8, num_attractors=[4, 2, 2, 1],
        bin_configurations=[{"n_bins": 8, "min_depth": 1e-3, "max_depth": 10.0, "name": "nyu"}],
        num_patch_transformer_layers=1, patch_transformer_hidden_size=16, patch_transformer_intermediate_size=32,
        patch_transformer_num_attention_heads=2, hidden_size=32))
    _jitter(model, seed).save_pretrained(path)
    ZoeDepthImageProcessorPil(size={"height": size[0], "width": size[1]}, keep_aspect_ratio=True,
                              ensure_multiple_of=32, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return Path(path)


FOV_DEGREES = 60.0


def save_depth_pro(path: Path, seed: int = 0) -> Path:
    """A tiny Depth Pro whose field-of-view head always says 60 degrees, with the settings of its
    processor (written as JSON: the processor class needs torchvision)."""
    from transformers import DepthProConfig, DepthProForDepthEstimation

    _quiet()
    torch.manual_seed(seed)
    d2 = lambda: dict(model_type="dinov2", image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4,  # noqa: E731
                      num_attention_heads=2, intermediate_size=64)
    model = DepthProForDepthEstimation(DepthProConfig(
        fusion_hidden_size=16, patch_size=32, intermediate_hook_ids=[1, 0], intermediate_feature_dims=[16, 16],
        scaled_images_ratios=[0.5, 1], scaled_images_overlap_ratios=[0.0, 0.5], scaled_images_feature_dims=[32, 16],
        use_fov_model=True, image_model_config=d2(), patch_model_config=d2(), fov_model_config=d2()))
    _jitter(model, seed, 0.05)
    last = [m for m in model.fov_model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(FOV_DEGREES)
    model.save_pretrained(path)
    (Path(path) / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "DepthProImageProcessor", "do_resize": True, "size": {"height": 64, "width": 64},
        "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    return Path(path)


def save_dpt_dinov2(path: Path, seed: int = 0) -> Path:
    """A tiny DPT with a DINOv2 backbone and the processor settings of facebook/dpt-dinov2-*-nyu
    (no resize, no rescale: mean/std in 0..255 units, centre zero padding to a multiple of 14)."""
    from transformers import Dinov2Config, DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    _quiet()
    torch.manual_seed(seed)
    backbone = Dinov2Config(image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=64, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False, apply_layernorm=True)
    model = DPTForDepthEstimation(DPTConfig(backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32],
                                            fusion_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5], head_in_index=-1,
                                            hidden_size=32))
    _jitter(model, seed, 0.1).save_pretrained(path)
    DPTImageProcessor(do_resize=False, do_rescale=False, do_pad=True, size_divisor=14,
                      image_mean=[123.675, 116.28, 103.53], image_std=[58.395, 57.12, 57.375]).save_pretrained(path)
    return Path(path)


def save_glpn(path: Path, seed: int = 0) -> Path:
    """A tiny GLPN (metric depth, NYU-style) with its processor: a family the torch replays do not
    cover, so it runs through the processor and its post_process_depth_estimation as they are."""
    from transformers import GLPNConfig, GLPNForDepthEstimation
    from transformers.models.glpn.image_processing_pil_glpn import GLPNImageProcessorPil

    _quiet()
    torch.manual_seed(seed)
    GLPNForDepthEstimation(GLPNConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=8, max_depth=10,
        head_in_index=-1)).save_pretrained(path)
    GLPNImageProcessorPil(size_divisor=32).save_pretrained(path)
    return Path(path)
