"""Former home of the output store, kept until every caller imports the new modules.

The store was split into :mod:`echo_batch.store.atomic` (durable atomic writes),
:mod:`echo_batch.store.lock` (the run lock), :mod:`echo_batch.store.files` (the files of ``OUT``,
:func:`write_results`, :func:`write_run_record`) and :mod:`echo_batch.store.parts` (parts, resume,
compaction). Import from those; this module only re-exports them.
"""

from __future__ import annotations

from echo_batch.store.files import (
    IMAGES_FILE,
    LOCK_FILE,
    PARTS_DIR,
    PATIENTS_FILE,
    RUN_FILE,
    write_results,
    write_run_record,
)
from echo_batch.store.lock import OutputLockedError
from echo_batch.store.parts import ConfigMismatchError, OutputStore, measure_config

__all__ = [
    "IMAGES_FILE",
    "LOCK_FILE",
    "PARTS_DIR",
    "PATIENTS_FILE",
    "RUN_FILE",
    "ConfigMismatchError",
    "OutputLockedError",
    "OutputStore",
    "measure_config",
    "write_results",
    "write_run_record",
]
