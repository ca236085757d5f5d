"""Compressed patient references (issue 18): a 100,000-patient run keeps its cohort in ~8 MB.

Oracle: ``discover(..., compact=True)`` gives the same patients as ``discover(...)``; every
sequence operation of :class:`PatientRefs` gives what the same operation on a tuple gives.
"""

from __future__ import annotations

import pickle

import pytest

from echo_batch.io.discovery import discover
from echo_batch.io.patient_refs import PatientRefs, PatientRefsBuilder
from echo_batch.run.chunking import chunked
from echo_batch.synth import synth_cohort


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """A CAMUS 2023 layout of 11 patients and a 2019 layout (split folders) of 7."""
    root = tmp_path_factory.mktemp("refs")
    return {
        "nifti": synth_cohort(root / "nifti", 11, seed=1, max_side=32),
        "mhd": synth_cohort(root / "mhd", 7, seed=2, max_side=32, fmt="mhd"),
    }


@pytest.mark.parametrize("layout", ["nifti", "mhd"])
def test_compact_discovery_equals_discovery(cohorts, layout):
    plain = discover(cohorts[layout])
    compact = discover(cohorts[layout], compact=True)
    assert isinstance(compact.patients, PatientRefs)
    assert tuple(compact.patients) == tuple(plain.patients)
    assert compact.patients.ids == [p.patient_id for p in plain.patients]
    assert compact.problems == plain.problems and compact.root == plain.root


def test_sequence_operations_equal_those_of_a_tuple(cohorts):
    refs = tuple(discover(cohorts["nifti"]).patients)
    packed = PatientRefs.from_refs(refs, block=3)  # 4 blocks: 3 + 3 + 3 + 2
    assert len(packed) == 11 and list(packed) == list(refs)
    for index in (0, 2, 3, 10, -1, -11):
        assert packed[index] == refs[index]
    with pytest.raises(IndexError):
        packed[11]
    for start, stop in [(0, 11), (2, 7), (3, 6), (5, 5), (9, 30), (-4, -1)]:
        view = packed[start:stop]
        assert isinstance(view, PatientRefs)
        assert tuple(view) == refs[start:stop]
        assert view.ids == [r.patient_id for r in refs[start:stop]]
        assert tuple(view[1:]) == refs[start:stop][1:], "a slice of a slice"
    assert PatientRefs.from_refs(packed) is packed


def test_a_slice_carries_only_its_blocks(cohorts):
    refs = tuple(discover(cohorts["nifti"]).patients)
    packed = PatientRefs.from_refs(refs, block=3)
    view = packed[4:6]  # inside the second block
    sent = pickle.loads(pickle.dumps(view))
    assert tuple(sent) == refs[4:6]
    assert len(pickle.dumps(view)) < len(pickle.dumps(packed)) / 3


def test_without_keeps_untouched_blocks_and_drops_excluded_ones(cohorts, monkeypatch):
    refs = tuple(discover(cohorts["nifti"]).patients)
    packed = PatientRefs.from_refs(refs, block=3)
    ids = [r.patient_id for r in refs]
    decoded = []
    real = type(packed._blocks[0]).refs
    monkeypatch.setattr(
        type(packed._blocks[0]), "refs", lambda self: decoded.append(self.ids) or real(self)
    )
    excluded = {ids[0], ids[1], ids[2], ids[4]}  # the whole first block, one of the second
    left = packed.without(excluded)
    assert decoded == [tuple(ids[3:6])], "only the partly excluded block is decoded"
    assert left.ids == [pid for pid in ids if pid not in excluded]
    assert tuple(left) == tuple(r for r in refs if r.patient_id not in excluded)
    assert tuple(packed.without(set())) == refs
    assert len(packed.without(set(ids))) == 0


def test_builder_sorts_only_when_needed(cohorts):
    refs = tuple(discover(cohorts["nifti"]).patients)
    builder = PatientRefsBuilder(block=4)
    for ref in reversed(refs):
        builder.append(ref)
    assert tuple(builder.sorted()) == refs


def test_chunks_are_taken_lazily_and_equal_list_chunks(cohorts):
    refs = tuple(discover(cohorts["nifti"]).patients)
    packed = PatientRefs.from_refs(refs, block=4)
    chunks = chunked(packed, 3)
    assert len(chunks) == 4
    assert [tuple(c) for c in chunks] == [refs[0:3], refs[3:6], refs[6:9], refs[9:11]]
    assert all(isinstance(c, PatientRefs) for c in chunks)
    assert [list(c) for c in chunked(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError):
        chunked(refs, 0)
