"""How a refiner given by name is found and recorded, without loading it (no torch): the embedded
``default``, the classical ``guided``, a local folder, or a hub id (``owner/name``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from betterdepth_cli.core.types import ModelNotFoundError, UsageError


def looks_like_hub_id(text: str) -> bool:
    """``owner/name``: one slash, not a path (``./m``, ``/abs/m``, ``~/m``, ``m``, ``a/b/c`` are paths)."""
    return text.count("/") == 1 and not text.startswith((".", "/", "~"))


def local_model_folder(path_or_id: str | Path, what: str = "model") -> Path | None:
    """A local folder as is; ``None`` for a hub id (``owner/name`` with no such local folder); a path
    that looks local (``./m``, ``/abs/m``, ``~/m``, ``m``, ``a/b/c``) and does not exist raises
    :class:`ModelNotFoundError` (exit 69), a file that is not a folder :class:`UsageError`."""
    folder = Path(path_or_id).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise UsageError(f"{folder}: a {what} must be a folder")
        return folder
    text = str(path_or_id)
    if not looks_like_hub_id(text):
        raise ModelNotFoundError(f"{text}: {what} folder not found")
    return None


def model_record_name(model: Any) -> str:
    """How sidecars and run records name a refiner: ``default`` (the embedded model), ``guided``, a
    local folder as its absolute path (one spelling whatever the working folder it was given from:
    ``m``, ``./m`` and ``/abs/m`` are one model), else a hub id as given."""
    text = "default" if model is None or str(model) == "" else str(model)
    if text in ("default", "guided"):
        return text
    folder = Path(text).expanduser()
    return str(folder.resolve()) if folder.is_dir() else text


def read_card(model: str | None) -> dict | None:
    """The model card (``betterdepth.json``) of a refiner, read without loading weights.

    ``None``/``"default"``: the embedded model; a folder: its card; a hub id: the
    card in the local Hugging Face cache if there. Returns None when not found.
    """
    from betterdepth_cli.core.guided import GUIDED_MODEL_NAME, guided_card
    from betterdepth_cli.core.refiner import CARD_FILE, DEFAULT_MODEL_NAMES, default_model_path

    if model == GUIDED_MODEL_NAME:
        return guided_card()
    if model in DEFAULT_MODEL_NAMES:
        path = default_model_path() / CARD_FILE
    else:
        path = Path(str(model)).expanduser() / CARD_FILE
        if not path.is_file() and looks_like_hub_id(str(model)):
            try:
                from huggingface_hub import try_to_load_from_cache

                cached = try_to_load_from_cache(str(model), CARD_FILE)
                path = Path(cached) if isinstance(cached, str) else path
            except Exception:  # noqa: BLE001 - the cache is optional
                pass
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def model_record(model: Any) -> dict[str, Any]:
    """How ``refine``'s sidecars name a refiner given by ``model``: its :func:`model_record_name` and
    the digest of its card as saved (:func:`~betterdepth_cli.core.settings.card_digest` of
    :func:`read_card`), for the library's and ``eval``'s sidecars to say the same."""
    from betterdepth_cli.core.settings import card_digest

    return {"model": model_record_name(model), "model_card": card_digest(read_card(model))}
