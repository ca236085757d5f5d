"""A cohort's patient references kept small enough for 100,000 patients in one run.

A :class:`~echo_batch.domain.PatientRef` of a CAMUS folder holds about fifteen ``pathlib.Path``
objects; as Python objects that is about 7.5 KB per patient (measured: 78 MB for 10,000), 750 MB
for a cohort of 100,000, most of it the parts lists of the paths. :class:`PatientRefs` keeps them
as zlib-compressed pickles of blocks of consecutive patients, about 80 bytes per patient, with
the patient ids beside in plain text. A block is decoded when its patients are needed: when a
slice of it is iterated or indexed. Slices share the blocks they cover without decoding them,
so a chunk sent to a Dask worker carries its compressed blocks and the worker decodes them.

Only objects this process made are pickled here, in memory; nothing is ever read from a file.
"""

from __future__ import annotations

import bisect
import itertools
import pickle
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from echo_batch.domain import PatientRef

BLOCK = 64
"""Patients per block (one chunk of the run at most: a chunk spans one or two blocks)."""
_LEVEL = 6  # zlib level: 80 bytes per CAMUS patient at 0.8 s per 10,000 (level 1: 108 bytes)


class _Block:
    """Consecutive patients: their ids and their pickled, compressed references."""

    __slots__ = ("data", "ids")

    def __init__(self, refs: Sequence[PatientRef]) -> None:
        self.ids: tuple[str, ...] = tuple(r.patient_id for r in refs)
        self.data = zlib.compress(pickle.dumps(list(refs), protocol=5), _LEVEL)

    def refs(self) -> list[PatientRef]:
        return pickle.loads(zlib.decompress(self.data))

    def __getstate__(self) -> tuple[bytes, tuple[str, ...]]:
        return self.data, self.ids

    def __setstate__(self, state: tuple[bytes, tuple[str, ...]]) -> None:
        self.data, self.ids = state


class PatientRefs(Sequence[PatientRef]):
    """An immutable sequence of patient references, compressed by blocks (see the module).

    Build it with :meth:`from_refs` (from any iterable, consumed block by block).

    Args:
        blocks: the blocks that hold the patients, in order.
        start: index of the first patient in the first block.
        length: number of patients (None: to the end of the last block).
    """

    __slots__ = ("_blocks", "_cache", "_length", "_offsets", "_start")

    def __init__(self, blocks: Sequence[_Block] = (), start: int = 0, length: int | None = None):
        self._blocks = tuple(blocks)
        self._offsets: list[int] = []  # index of each block's first patient, counted from 0
        total = 0
        for block in self._blocks:
            self._offsets.append(total)
            total += len(block.ids)
        self._start = start
        self._length = total - start if length is None else length
        if not 0 <= self._start <= total or not 0 <= self._length <= total - self._start:
            raise ValueError(f"bad slice {start}+{length} of {total} patients")
        self._cache: tuple[int, list[PatientRef]] | None = None  # the last block decoded

    @classmethod
    def from_refs(cls, refs: Iterable[PatientRef], block: int = BLOCK) -> PatientRefs:
        """Compress ``refs`` (consumed ``block`` at a time; a PatientRefs is returned as is)."""
        if isinstance(refs, PatientRefs):
            return refs
        builder = PatientRefsBuilder(block)
        for ref in refs:
            builder.append(ref)
        return builder.build()

    @property
    def ids(self) -> list[str]:
        """The patient ids, in order (nothing decoded)."""
        ids = [pid for block in self._blocks for pid in block.ids]
        return ids[self._start : self._start + self._length]

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> PatientRef: ...

    @overload
    def __getitem__(self, index: slice) -> PatientRefs: ...

    def __getitem__(self, index: int | slice) -> PatientRef | PatientRefs:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            if step != 1:
                raise ValueError("PatientRefs slices take every patient (step 1)")
            return self._slice(start, max(start, stop))
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"patient {index} of {self._length}")
        position = self._start + index
        number = bisect.bisect_right(self._offsets, position) - 1
        return self._decoded(number)[position - self._offsets[number]]

    def _slice(self, start: int, stop: int) -> PatientRefs:
        """Patients ``start .. stop - 1`` sharing the blocks that hold them (nothing decoded)."""
        if start == stop:
            return PatientRefs()
        first = bisect.bisect_right(self._offsets, self._start + start) - 1
        last = bisect.bisect_right(self._offsets, self._start + stop - 1) - 1
        begin = self._start + start - self._offsets[first]
        return PatientRefs(self._blocks[first : last + 1], begin, stop - start)

    def _decoded(self, number: int) -> list[PatientRef]:
        if self._cache is None or self._cache[0] != number:
            self._cache = (number, self._blocks[number].refs())
        return self._cache[1]

    def __iter__(self) -> Iterator[PatientRef]:
        remaining, skip = self._length, self._start
        for number, block in enumerate(self._blocks):
            if remaining <= 0:
                return
            if skip >= len(block.ids):
                skip -= len(block.ids)
                continue
            refs = self._decoded(number)[skip : skip + remaining]
            skip = 0
            remaining -= len(refs)
            yield from refs

    def without(self, excluded: set[str]) -> PatientRefs:
        """The patients whose id is not in ``excluded``, in order.

        Blocks without an excluded patient are kept as they are, blocks of excluded patients only
        are dropped; only the others are decoded.
        """
        if self._start or self._length != sum(len(b.ids) for b in self._blocks):
            return PatientRefs.from_refs(r for r in self if r.patient_id not in excluded)
        blocks = []
        for number, block in enumerate(self._blocks):
            if excluded.isdisjoint(block.ids):
                blocks.append(block)
                continue
            if excluded.issuperset(block.ids):
                continue
            kept = [r for r in self._decoded(number) if r.patient_id not in excluded]
            if kept:
                blocks.append(_Block(kept))
        return PatientRefs(blocks)

    def __getstate__(self) -> tuple[tuple[_Block, ...], int, int]:
        return self._blocks, self._start, self._length

    def __setstate__(self, state: tuple[tuple[_Block, ...], int, int]) -> None:
        blocks, start, length = state
        self.__init__(blocks, start, length)

    def __repr__(self) -> str:
        return f"PatientRefs({self._length} patients in {len(self._blocks)} blocks)"


class PatientRefsBuilder:
    """Collects patient references one by one into :class:`PatientRefs`, a block at a time."""

    def __init__(self, block: int = BLOCK) -> None:
        self._block = block
        self._blocks: list[_Block] = []
        self._pending: list[PatientRef] = []

    def append(self, ref: PatientRef) -> None:
        self._pending.append(ref)
        if len(self._pending) == self._block:
            self._blocks.append(_Block(self._pending))
            self._pending = []

    def build(self) -> PatientRefs:
        """The references collected, in the order they came."""
        if self._pending:
            self._blocks.append(_Block(self._pending))
            self._pending = []
        return PatientRefs(self._blocks)

    def sorted(self) -> PatientRefs:
        """The references collected, sorted by patient id.

        Folders listed in id order (one folder of patients) are not decoded; others (the split
        folders of CAMUS 2019, a few hundred patients) are sorted in memory.
        """
        refs = self.build()
        ids = refs.ids
        if all(a < b for a, b in itertools.pairwise(ids)):
            return refs
        return PatientRefs.from_refs(sorted(refs, key=lambda r: r.patient_id), self._block)
