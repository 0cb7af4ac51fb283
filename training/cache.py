"""On-disk caches so that frozen models run once per sample, not once per epoch.

- :class:`PredictionCache`: the conditioner's prediction of a full-size sample,
  keyed by a hash of the sample's RGB bytes (and its id for ``file:``
  conditioners, which look maps up by name) plus a conditioner id that changes
  when the conditioner's files change. Random crops and flips are applied to
  the cached full-size prediction afterwards.
- :class:`LatentCache`: the frozen codec's image latent ``z_x``, keyed by the
  hash of the exact RGB tensor that is encoded plus a codec id (a hash of the
  codec's weights). Only useful when no random augmentation changes the image.

Entries are ``.safetensors`` files under ``root/<id hash>/<2 hex>/<key>.safetensors``,
written atomically (temporary file, then rename), so several processes can
share one cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch

KEY_BYTES = 20


def digest(*parts: bytes | str) -> str:
    """blake2b hex digest of the parts (strings are UTF-8 encoded, each length-prefixed)."""
    h = hashlib.blake2b(digest_size=KEY_BYTES)
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def tensor_bytes(x: torch.Tensor) -> bytes:
    """The raw bytes of a tensor with its dtype and shape in front (CPU, contiguous)."""
    x = x.detach().cpu().contiguous()
    head = f"{x.dtype}|{tuple(x.shape)}|".encode()
    return head + x.view(torch.uint8).numpy().tobytes() if x.numel() else head


def folder_fingerprint(path: str | os.PathLike) -> str:
    """Hash of the relative names, sizes and modification times of the files in a folder."""
    root = Path(path)
    rows = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts):
            st = p.stat()
            rows.append(f"{p.relative_to(root).as_posix()}:{st.st_size}:{st.st_mtime_ns}")
    return digest(*rows)


def conditioner_id(conditioner, spec: str) -> str:
    """A string that identifies what a conditioner computes: its name, class, output kind, its
    input padding when it has one (``builtin`` pads by reflection) and, for models loaded from a
    folder, a fingerprint of that folder's files."""
    parts = [spec, type(conditioner).__name__, str(conditioner.kind), str(bool(conditioner.metric))]
    if getattr(conditioner, "reflect_pad", 0.0):
        parts.append(f"reflect_pad={conditioner.reflect_pad!r}")
    model = getattr(conditioner, "model", None)
    path = getattr(model, "name_or_path", None) if model is not None else None
    if path and Path(path).is_dir():
        parts.append(f"files={folder_fingerprint(path)}")
    folder = getattr(conditioner, "folder", None)  # file: conditioners
    if folder is not None and Path(folder).is_dir():
        parts.append(f"files={folder_fingerprint(folder)}")
    return "|".join(parts)


def codec_id(codec) -> str:
    """A string that identifies a codec: its kind, factor and a hash of its weights."""
    parts = [str(codec.kind), str(codec.factor)]
    for name, t in sorted(codec.state_dict().items()):
        parts.append(name)
        parts.append(digest(tensor_bytes(t)))
    return digest(*parts)


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (OSError, SafetensorError, ValueError):
        return None  # truncated by a crash or a concurrent writer: recompute


class PredictionCache:
    """Conditioner predictions of full-size samples, computed once and kept on disk.

    Args:
        conditioner: a :class:`~betterdepth_cli.core.conditioners.Conditioner`.
        root: cache folder (``None`` disables the disk: every call predicts).
        ident: :func:`conditioner_id` of the conditioner.
        batch_size: samples of the same size predicted together.

    ``calls`` counts samples the conditioner ran on, ``hits`` the ones read back.
    """

    def __init__(self, conditioner, root: str | os.PathLike | None, ident: str, batch_size: int = 8):
        self.conditioner = conditioner
        self.ident = ident
        self.batch_size = max(1, int(batch_size))
        self.folder = None if root is None else Path(root) / "predictions" / digest(ident)[:16]
        self.calls = 0
        self.hits = 0
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            info = self.folder / "conditioner.json"
            if not info.exists():
                tmp = info.with_name(f".conditioner.json.{os.getpid()}")
                tmp.write_text(json.dumps({"id": ident}, indent=2) + "\n")
                os.replace(tmp, info)

    @property
    def kind(self) -> str:
        return self.conditioner.kind

    @property
    def metric(self) -> bool:
        return bool(self.conditioner.metric)

    def key(self, sample: dict) -> str:
        """Cache key of a sample: its RGB bytes (and id for conditioners that read files by name)."""
        parts = [tensor_bytes(sample["rgb"])]
        if getattr(self.conditioner, "needs_keys", False):
            parts.append(str(sample.get("id", "")))
        return digest(*parts)

    def path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.safetensors"

    def predict(self, samples: Sequence[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(values (1,H,W) float32, valid (1,H,W) bool) on the CPU for each sample (rgb (3,H,W) in [0,1])."""
        out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(samples)
        keys = [self.key(s) for s in samples]
        todo: list[int] = []
        for i, k in enumerate(keys):
            if self.folder is not None and self.path(k).exists():
                entry = _load(self.path(k))
                if entry is not None and entry["values"].shape[-2:] == samples[i]["rgb"].shape[-2:]:
                    out[i] = (entry["values"].float(), entry["valid"].bool())
                    self.hits += 1
                    continue
            todo.append(i)
        # group same-size samples (one batch per size, up to batch_size)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i in todo:
            by_size.setdefault(tuple(samples[i]["rgb"].shape[-2:]), []).append(i)
        for idx in by_size.values():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                images = torch.stack([samples[i]["rgb"] for i in chunk]).float()  # [b,3,H,W]
                ids = [str(samples[i].get("id", "")) for i in chunk]
                pred = self.conditioner.predict(images, keys=ids if getattr(self.conditioner, "needs_keys", False) else None)
                self.calls += len(chunk)
                values = pred.values.detach().float().cpu()
                valid = pred.valid.detach().bool().cpu()
                for j, i in enumerate(chunk):
                    out[i] = (values[j], valid[j])
                    if self.folder is not None:
                        _save_atomic(
                            {"values": values[j], "valid": valid[j].to(torch.uint8)},
                            self.path(keys[i]),
                            {"kind": pred.kind, "metric": str(bool(pred.metric)), "id": ids[j]},
                        )
        return out  # type: ignore[return-value]


class LatentCache:
    """Image latents of the frozen codec, keyed by the exact RGB tensor that is encoded.

    Args:
        codec: a :class:`~betterdepth_cli.core.autoencoders.LatentCodec`.
        root: cache folder.
        dtype: the codec's compute dtype.
    """

    def __init__(self, codec, root: str | os.PathLike, dtype: torch.dtype = torch.float32):
        self.codec = codec
        self.dtype = dtype
        self.ident = f"{codec_id(codec)}|{dtype}"
        self.folder = Path(root) / "latents" / digest(self.ident)[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.calls = 0
        self.hits = 0

    @torch.no_grad()
    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> z_x (B,Ci,H/f,W/f) float32 on ``rgb``'s device."""
        keys = [digest(tensor_bytes(x)) for x in rgb]
        out: list[torch.Tensor | None] = [None] * len(keys)
        todo = []
        for i, k in enumerate(keys):
            p = self.folder / k[:2] / f"{k}.safetensors"
            entry = _load(p) if p.exists() else None
            if entry is not None:
                out[i] = entry["z"].to(rgb.device)
                self.hits += 1
            else:
                todo.append(i)
        if todo:
            z = self.codec.encode_image((rgb[todo] * 2.0 - 1.0).to(self.dtype)).float()  # [b,Ci,h,w]
            self.calls += len(todo)
            for j, i in enumerate(todo):
                out[i] = z[j]
                _save_atomic({"z": z[j]}, self.folder / keys[i][:2] / f"{keys[i]}.safetensors", {})
        return torch.stack(out)  # type: ignore[arg-type]


__all__ = ["PredictionCache", "LatentCache", "conditioner_id", "codec_id", "folder_fingerprint", "digest", "tensor_bytes"]
