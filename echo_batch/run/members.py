"""The uncertainty columns of a patient: its measurements repeated on each ensemble member's masks.

Used by the chunk when the engine returns members (``--uncertainty``,
:class:`echo_batch.model.ensemble.VariantEngine`): each member's four masks are measured alone,
the same way as the result's own masks, and the SD between the members' EFs is written beside
the EF (``ef_pct_sd``, ``ef_camus_pct_sd``), with the members' agreement per image
(``lv_dice_members``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from echo_batch.domain import ImageKey
from echo_batch.measure.landmarks import ViewGeometry, measure_lv
from echo_batch.measure.patient import patient_volumes
from echo_batch.measure.uncertainty import mean_pairwise_lv_dice, member_sd

CamusEf = Callable[[dict[ImageKey, np.ndarray], dict[ImageKey, tuple[float, float]]], float | None]


@dataclass(frozen=True)
class MemberSpread:
    """The uncertainty columns of one patient.

    Attributes:
        ef_pct_sd: SD of the members' biplane EF (guideline method), EF points.
        ef_camus_pct_sd: SD of the members' CAMUS-compatible EF, EF points.
        n_members: members measured.
        lv_dice: per image, mean pairwise LV Dice of the members' masks.
    """

    ef_pct_sd: float | None = None
    ef_camus_pct_sd: float | None = None
    n_members: int | None = None
    lv_dice: dict[ImageKey, float | None] = field(default_factory=dict)


def member_spread(
    members: Mapping[ImageKey, Sequence[np.ndarray]],
    spacings: Mapping[ImageKey, tuple[float, float]],
    camus_ef: CamusEf,
) -> MemberSpread:
    """Measure the patient on every member's masks and return the spread.

    Args:
        members: per image, one ``(H, W)`` label map per member (the same count for every
            image); images without members are absent.
        spacings: per image, ``(row, col)`` pixel size in mm.
        camus_ef: CAMUS-compatible biplane EF of four masks (None when it fails).

    Returns:
        The SDs (None where fewer than two members could be measured) and the per-image Dice.
    """
    if not members:
        return MemberSpread()
    counts = {len(m) for m in members.values()}
    if len(counts) != 1:
        raise ValueError(f"images have different member counts: {sorted(counts)}")
    n = counts.pop()
    efs: list[float | None] = []
    camus: list[float | None] = []
    for m in range(n):
        masks = {key: maps[m] for key, maps in members.items()}
        geometries = {}
        for key, mask in masks.items():
            geometry = measure_lv(mask, spacings[key])
            if isinstance(geometry, ViewGeometry):
                geometries[key] = geometry
        efs.append(patient_volumes(geometries).ef_pct)
        camus.append(camus_ef(masks, {k: spacings[k] for k in masks}))
    return MemberSpread(
        ef_pct_sd=member_sd(efs),
        ef_camus_pct_sd=member_sd(camus),
        n_members=n,
        lv_dice={key: mean_pairwise_lv_dice(maps) for key, maps in members.items()},
    )
