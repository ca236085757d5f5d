"""The project's exceptions survive ``pickle`` (Dask ships them between processes)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from echo_batch.errors import CfgError, EchoBatchError, InputError, OutputError
from echo_batch.model.bundle import BundleError
from echo_batch.store.lock import OutputLockedError

PATH = Path("/data/patient0001/patient0001_2CH_ED.nii.gz")


def _round_trip(exc: BaseException) -> BaseException:
    return pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))


@pytest.mark.parametrize(
    "exc",
    [
        InputError(PATH, "NDims/DimSize are not integers"),
        CfgError(PATH.with_name("Info_2CH.cfg"), "EF is not a number"),
        OutputError(Path("/out/masks/patient0001"), "is a symbolic link"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_path_errors_keep_type_message_and_attributes(exc):
    copy = _round_trip(exc)
    assert type(copy) is type(exc)
    assert str(copy) == str(exc) and copy.args == exc.args
    assert copy.path == exc.path and copy.reason == exc.reason
    assert vars(copy) == vars(exc)


def test_notes_survive_the_round_trip():
    exc = InputError(PATH, "truncated data file")
    exc.add_note("patient0001: image skipped")
    assert _round_trip(exc).__notes__ == ["patient0001: image skipped"]


def test_subclasses_with_their_own_signature_round_trip():
    lock = OutputLockedError(Path("/out"), {"pid": 42, "host": "node1"}, "held by pid 42")
    copy = _round_trip(lock)
    assert type(copy) is OutputLockedError and str(copy) == str(lock)
    assert (copy.out, copy.holder, copy.reason) == (lock.out, lock.holder, lock.reason)
    bundle = _round_trip(BundleError("weights sha256 mismatch"))
    assert type(bundle) is BundleError and str(bundle) == "weights sha256 mismatch"
    assert isinstance(_round_trip(EchoBatchError("x")), EchoBatchError)
