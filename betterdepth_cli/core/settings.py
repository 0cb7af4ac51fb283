"""Inference settings, resolved and checked in one place.

A model card states its defaults (``defaults`` in ``betterdepth.json``); a caller
(the CLI, ``eval``, the library pipeline, training's validation) may override any of
them. :func:`resolve_settings` merges the two over :data:`DEFAULTS` and checks the
result; everything that refines calls it, so ``refine``, ``eval`` and the library
agree on what "default" means for a given model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from betterdepth_cli.core.types import UsageError

#: Inference defaults when a card does not state them (the paper's fast setting).
DEFAULTS: dict[str, Any] = {
    "steps": 2, "ensemble": 1, "reduction": "mean", "processing_res": 768, "conditioner": "builtin",
}
REDUCTIONS = ("mean", "median")
#: The option each setting is set by on the command line (named in errors).
FLAGS = {"steps": "--steps", "ensemble": "--ensemble", "reduction": "--reduction",
         "processing_res": "--processing-res"}


def processing_size(height: int, width: int, processing_res: int | None) -> tuple[int, int]:
    """(h, w) with the longest side equal to ``processing_res`` (native when 0/None)."""
    if not processing_res:
        return height, width
    scale = processing_res / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass(frozen=True)
class InferenceSettings:
    """What one refinement runs with. ``processing_res`` 0 = native resolution,
    capped at ``max_processing_res`` (0 = no cap) on the longest side."""

    steps: int
    ensemble: int
    reduction: str
    processing_res: int
    max_processing_res: int = 0

    def processing_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) the model runs at for an input of ``height`` x ``width``."""
        target = self.processing_res
        if not target and self.max_processing_res and max(height, width) > self.max_processing_res:
            target = self.max_processing_res  # native, capped by the card: bounded memory for plates
        return processing_size(height, width, target)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def card_defaults(card: Mapping | None) -> dict[str, Any]:
    """A card's ``defaults`` over :data:`DEFAULTS` (a card without them, or none, gives :data:`DEFAULTS`)."""
    stated = (card or {}).get("defaults")
    return {**DEFAULTS, **(stated if isinstance(stated, Mapping) else {})}


#: Card keys that record measurements or notes, not what the model does: left out of :func:`card_digest`.
CARD_NOTES = ("metrics", "observations")


def card_digest(card: Mapping | None) -> str | None:
    """A short fingerprint (12 hex digits of SHA-256) of a model card without its measurements, or None.

    Recorded in every sidecar: outputs written by a model whose card differed (other inference
    settings such as the layout low-pass or the edge gate, another training run's record) are stale.
    The weights are not read here (an SD-size UNet is gigabytes): a model saved by this version records
    their SHA-256 in its card (``weights_sha256``, written once when it is saved), so a model retrained
    into the same folder has another digest.
    """
    if not card:
        return None
    import hashlib
    import json

    kept = {k: v for k, v in card.items() if k not in CARD_NOTES}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _check_int(name: str, value: Any, minimum: int, note: str = "") -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or isinstance(value, float) and number != value:
        raise UsageError(f"`{FLAGS[name]}` must be an integer, got {value!r}")
    if number < minimum:
        raise UsageError(f"`{FLAGS[name]}` must be >= {minimum}{note}, got {value!r}")
    return number


#: The seeds a torch generator takes: a signed or an unsigned 64-bit integer.
SEED_RANGE = (-(2**63), 2**64 - 1)


def check_seed(seed: Any) -> int:
    """``--seed`` as an int, or a UsageError (a string, a float with a fraction, ``None``, beyond 64 bits)."""
    import numbers

    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise UsageError(f"`--seed` must be an integer, got {seed!r}")
    if not SEED_RANGE[0] <= int(seed) <= SEED_RANGE[1]:
        raise UsageError(f"`--seed` must be a 64-bit integer (-2**63 to 2**64 - 1), got {int(seed)}")
    return int(seed)


#: The most ensemble members a zero-noise model runs: the photo and its mirror image.
DETERMINISTIC_MEMBERS = 2


def deterministic_ensemble_note(asked: Any, seed: Any = None) -> str | None:
    """What to tell a user who asked a zero-noise model (its card's ``zero_noise``) for ``asked`` members
    and gave ``seed`` (None: not given); None when neither matters (not more members than it runs, no seed)."""
    if asked is None or int(asked) <= DETERMINISTIC_MEMBERS:
        return None if seed is None else "note: this model is deterministic (zero-noise start): --seed has no effect"
    return (f"note: this model is deterministic (zero-noise start): --ensemble {asked} would repeat its "
            f"{DETERMINISTIC_MEMBERS} members (the photo and its mirror image); running {DETERMINISTIC_MEMBERS} "
            "(--seed has no effect either)")


def not_applied_note(reason: str, **asked: Any) -> str | None:
    """``note: <reason>; not applied: --a, --b`` for the options of ``asked`` that were given (option name
    -> value; ``None`` or ``False`` = not given), None when none was."""
    given = [f"--{k.replace('_', '-')}" for k, v in asked.items() if v is not None and v is not False]
    return f"note: {reason}; not applied: {', '.join(given)}" if given else None


def classical_ignores(card: Mapping | None, **asked: Any) -> str | None:
    """The note for a user who gave a classical refiner (the card's ``classical``: the guided filter)
    options it has no use for (``asked``: option name -> value, ``None`` = not given); None when none."""
    if not (card or {}).get("classical"):
        return None
    return not_applied_note("the guided filter (--model guided) runs one classical filter at native resolution, "
                            "without sampling or tiles", **asked)


def unused_option_notes(card: Mapping | None, members: int, seed: Any = None, **asked: Any) -> list[str]:
    """The notes for a user who gave the refiner of ``card`` options it will not apply (``asked``: option
    name -> value, ``None`` = not given; ``members``: the ensemble members it runs; ``seed``: the seed
    given, ``None`` when not): a classical card's sampling options (:func:`classical_ignores`); a
    diffusion refiner's ``--reduction`` over one member (nothing to combine); a zero-noise model's
    members beyond two and its seed (:func:`deterministic_ensemble_note`)."""
    card = card or {}
    if card.get("classical"):
        notes = [classical_ignores(card, **asked)]
    else:
        reduction = asked.get("reduction")
        notes = [not_applied_note("one ensemble member, nothing to combine", reduction=reduction)
                 if reduction is not None and members == 1 else None]
        if card.get("zero_noise"):
            notes.append(deterministic_ensemble_note(asked.get("ensemble"), seed))
    return [n for n in notes if n]


def resolve_settings(
    card: Mapping | None = None,
    *,
    steps: int | None = None,
    ensemble: int | None = None,
    reduction: str | None = None,
    processing_res: int | None = None,
) -> InferenceSettings:
    """The settings a model card gives, with any argument that is not ``None`` overriding it.

    A deterministic model (the card's ``zero_noise``: every member starts from zeros) runs at most
    :data:`DETERMINISTIC_MEMBERS` members, the photo and its mirror image
    (:func:`~betterdepth_cli.core.pipeline.mirrored_members`): more would repeat them. A classical
    card's (the guided filter: one filter, native resolution) are its own whatever is asked
    (:func:`classical_ignores` says what to tell the user). Raises :class:`UsageError` naming the
    option when a value is out of range.
    """
    base = card_defaults(card)
    chosen = {"steps": steps, "ensemble": ensemble, "reduction": reduction, "processing_res": processing_res}
    merged = {k: base[k] if v is None else v for k, v in chosen.items()}
    if merged["reduction"] not in REDUCTIONS:
        raise UsageError(f"`--reduction` must be mean or median, got {merged['reduction']!r}")
    ensemble = _check_int("ensemble", merged["ensemble"], 1)
    run = InferenceSettings(
        steps=_check_int("steps", merged["steps"], 1),
        ensemble=min(ensemble, DETERMINISTIC_MEMBERS) if (card or {}).get("zero_noise") else ensemble,
        reduction=str(merged["reduction"]),
        processing_res=_check_int("processing_res", merged["processing_res"], 0, " (0 = native)"),
        max_processing_res=int(base.get("max_processing_res") or 0),
    )
    if (card or {}).get("classical") and any(v is not None for v in chosen.values()):
        return resolve_settings(card)  # the guided filter runs once at native resolution: what ran is its card's
    return run
