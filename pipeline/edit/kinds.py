"""The edit kinds, one class each, registered by name: what a kind needs in the ``edit`` section, which
records it makes rows for, what rows a record gets (variant name, partner record, value), what a row
records, and the edit itself. Everything else in the edit job asks the kind (``edit_kind``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from operators.edits import apply_direction, direction_layers, interpolate, mix_styles

Output = tuple[str, "str | None", Any]  # (variant name, partner key, value) of one output row


class EditKind:
    name: str
    fields: frozenset[str]  # the edit section's fields that belong to this kind
    takes_layers = False
    pastes_images = False  # the model inverts pasted images instead of editing codes (face swap)

    def default_layers(self, num_ws: int) -> range:
        return range(0)

    def missing(self, section) -> str | None:
        """What the section lacks for this kind, or None."""
        return None

    def records(self, section) -> frozenset[str] | None:
        """Keys of the records this kind makes rows for; None: every record."""
        return None

    def outputs(self, section, key: str) -> list[Output]:
        raise NotImplementedError

    def params(self, section, partner: str | None, value: Any) -> dict[str, Any]:
        raise NotImplementedError

    def partners(self, section, present: set[str]) -> list[str]:
        """Keys of the partner records the rows of the ``present`` records need."""
        return []

    def apply(self, code: torch.Tensor, partner: torch.Tensor | None, value: Any, edit: "EditParameters") -> torch.Tensor:
        """One edited W+ code [1, num_ws, style_dim] from ``code`` [1, num_ws, style_dim]."""
        raise NotImplementedError


@dataclass(frozen=True)
class EditParameters:
    """What the edit needs beyond its codes: the resolved layers, the loaded direction, the steps."""

    layers: tuple[int, ...]
    direction: np.ndarray | None
    steps: int


class Direction(EditKind):
    name = "direction"
    fields = frozenset({"direction", "direction_storage_options", "strengths", "layers"})
    takes_layers = True

    def default_layers(self, num_ws: int) -> range:
        return direction_layers(num_ws)

    def missing(self, section) -> str | None:
        return None if section.direction is not None else "kind direction needs direction (a .npy or .pt file)"

    def outputs(self, section, key: str) -> list[Output]:
        return [(f"s{s:+g}", None, s) for s in section.strengths]

    def params(self, section, partner, value) -> dict[str, Any]:
        return {"strength": value}

    def apply(self, code, partner, value, edit):
        return apply_direction(code, torch.as_tensor(edit.direction), value, edit.layers)


class Mixing(EditKind):
    name = "mixing"
    fields = frozenset({"styles", "layers"})
    takes_layers = True

    def default_layers(self, num_ws: int) -> range:
        return range(10, num_ws)  # the official default: the fine layers come from the style

    def missing(self, section) -> str | None:
        return None if section.styles else "kind mixing needs styles (keys of the style records)"

    def outputs(self, section, key: str) -> list[Output]:
        return [(f"mix-{style}", style, None) for style in section.styles]

    def params(self, section, partner, value) -> dict[str, Any]:
        return {"style": partner}

    def partners(self, section, present: set[str]) -> list[str]:
        return list(section.styles) if present else []

    def apply(self, code, partner, value, edit):
        return mix_styles(code, partner[None], edit.layers)


class Interpolation(EditKind):
    name = "interpolation"
    fields = frozenset({"pairs", "steps"})

    def missing(self, section) -> str | None:
        return None if section.pairs else "kind interpolation needs pairs"

    def records(self, section) -> frozenset[str]:
        return frozenset(start for start, _ in section.pairs)

    def outputs(self, section, key: str) -> list[Output]:
        return [(f"to-{end}-{k}", end, k) for start, end in section.pairs if start == key for k in range(section.steps + 2)]

    def params(self, section, partner, value) -> dict[str, Any]:
        return {"end": partner, "step": value, "t": value / (section.steps + 1)}

    def partners(self, section, present: set[str]) -> list[str]:
        return sorted({end for start, end in section.pairs if start in present})

    def apply(self, code, partner, value, edit):
        return interpolate(code[0], partner, edit.steps)[value][None]


class FaceSwap(EditKind):
    name = "face_swap"
    fields = frozenset({"pairs", "paste_fraction"})
    pastes_images = True

    def missing(self, section) -> str | None:
        return None if section.pairs else "kind face_swap needs pairs"

    def records(self, section) -> frozenset[str]:
        return frozenset(target for _, target in section.pairs)

    def outputs(self, section, key: str) -> list[Output]:
        return [(f"from-{source}", source, None) for source, target in section.pairs if target == key]

    def params(self, section, partner, value) -> dict[str, Any]:
        return {"source": partner, "paste_fraction": section.paste_fraction}

    def partners(self, section, present: set[str]) -> list[str]:
        return sorted({source for source, target in section.pairs if target in present})


EDIT_KINDS: dict[str, EditKind] = {kind.name: kind for kind in (Direction(), Mixing(), Interpolation(), FaceSwap())}
FIELDS = frozenset().union(*(kind.fields for kind in EDIT_KINDS.values()))


def edit_kind(name: str) -> EditKind:
    try:
        return EDIT_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown edit kind {name!r}; known: {', '.join(EDIT_KINDS)}") from None
