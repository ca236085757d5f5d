"""``Info_*.cfg`` parsing: both CAMUS key sets, reversed ED/ES, unknown keys, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures import CFG_2019, CFG_2023, write_cfg

from echo_batch.domain import CfgInfo
from echo_batch.errors import CfgError, EchoBatchError, InputError
from echo_batch.io.cfg import parse_cfg


def _cfg(tmp_path: Path, text: str | bytes, name: str = "Info_2CH.cfg") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_2023_keys(tmp_path: Path) -> None:
    info = parse_cfg(write_cfg(tmp_path / "Info_2CH.cfg", CFG_2023))
    assert info == CfgInfo(
        ed_frame=1,
        es_frame=3,
        n_frames=4,
        sex="F",
        age=61.0,
        image_quality="Good",
        ef_pct=55.0,
        frame_rate_hz=50.0,
    )
    assert info.edv_ml is None and info.esv_ml is None and info.extra == {}


def test_2019_keys(tmp_path: Path) -> None:
    info = parse_cfg(write_cfg(tmp_path / "Info_4CH.cfg", CFG_2019))
    assert info == CfgInfo(
        ed_frame=1,
        es_frame=3,
        n_frames=4,
        sex="M",
        age=79.0,
        image_quality="Medium",
        ef_pct=39.6,
        edv_ml=97.5,
        esv_ml=58.9,
    )
    assert info.frame_rate_hz is None and info.extra == {}


@pytest.mark.parametrize("release", ["2023", "2019"])
def test_ed_after_es_is_accepted(tmp_path: Path, release: str) -> None:
    values = dict(CFG_2023 if release == "2023" else CFG_2019, ED="11", ES="1", NbFrame="11")
    info = parse_cfg(write_cfg(tmp_path / "Info_2CH.cfg", values))
    assert (info.ed_frame, info.es_frame, info.n_frames) == (11, 1, 11)
    assert info.ef_pct == (55.0 if release == "2023" else 39.6)


def test_unknown_keys_are_kept_verbatim_in_extra(tmp_path: Path) -> None:
    text = "ED: 2\nES: 9\nNbFrame: 10\nProbe: GE M5S\nAcquired: 2014-03-01 12:30\nEF: 60\n"
    info = parse_cfg(_cfg(tmp_path, text))
    assert info.extra == {"Probe": "GE M5S", "Acquired": "2014-03-01 12:30"}
    assert (info.ed_frame, info.es_frame, info.ef_pct) == (2, 9, 60.0)


def test_whitespace_blank_lines_and_crlf(tmp_path: Path) -> None:
    text = "\r\n  ED :  3 \r\n\r\nES:7\r\nNbFrame:\t8\r\nSex: F\r\n"
    info = parse_cfg(_cfg(tmp_path, text))
    assert (info.ed_frame, info.es_frame, info.n_frames, info.sex) == (3, 7, 8, "F")


def test_partial_file_leaves_missing_fields_none(tmp_path: Path) -> None:
    info = parse_cfg(_cfg(tmp_path, "EF: 47.5\n"))
    assert info == CfgInfo(ef_pct=47.5)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("ED: eleven\n", "key ED has a bad value 'eleven'", id="ed-word"),
        pytest.param("ES: 3.0\n", "key ES has a bad value '3.0'", id="es-float"),
        pytest.param("NbFrame: \n", "key NbFrame has a bad value ''", id="nbframe-empty"),
        pytest.param("Age: sixty\n", "key Age has a bad value", id="age-word"),
        pytest.param("EF: nan\n", "key EF has a bad value 'nan'", id="ef-nan"),
        pytest.param("LVef: inf\n", "key LVef has a bad value 'inf'", id="lvef-inf"),
        pytest.param("LVedv: 97,5\n", "key LVedv has a bad value '97,5'", id="lvedv-comma"),
        pytest.param("FrameRate: fast\n", "key FrameRate has a bad value", id="framerate-word"),
        pytest.param("ED: 12\nES: 1\nNbFrame: 11\n", "ED frame 12 is outside 1..11", id="ed-high"),
        pytest.param("ED: 1\nES: 0\nNbFrame: 11\n", "ES frame 0 is outside 1..11", id="es-zero"),
        pytest.param("ED: -2\n", "ED frame -2 is outside", id="ed-negative"),
        pytest.param("ED: 1\nthis is not a cfg\n", "line 2 is not 'Key: value'", id="no-colon"),
        pytest.param(": 5\n", "line 1 is not 'Key: value'", id="empty-key"),
    ],
)
def test_bad_values_raise_cfg_error_naming_the_key(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = _cfg(tmp_path, text)
    with pytest.raises(CfgError) as info:
        parse_cfg(path)
    assert fragment in str(info.value)
    assert "Info_2CH.cfg" in str(info.value)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        pytest.param(lambda t: t / "Info_2CH.cfg", "cannot read", id="missing"),
        pytest.param(lambda t: _cfg(t, b"ED: 1\n\xff\xfe\x00\x01"), "not a text file", id="binary"),
        pytest.param(lambda t: _cfg(t, "Note: x\n" * 10_000), "too large", id="too-large"),
        pytest.param(lambda t: (t / "Info_2CH.cfg").mkdir() or t / "Info_2CH.cfg", "cannot read",
                     id="folder"),
    ],
)  # fmt: skip
def test_unusable_files_raise_cfg_error(tmp_path: Path, make, fragment: str) -> None:
    path = make(tmp_path)
    with pytest.raises(CfgError) as info:
        parse_cfg(path)
    assert fragment in str(info.value)
    assert "Info_2CH.cfg" in str(info.value)


def test_cfg_error_is_an_input_error() -> None:
    assert issubclass(CfgError, InputError) and issubclass(CfgError, EchoBatchError)


@pytest.mark.shared
def test_real_reversed_patient0185(camus224: Path) -> None:
    info = parse_cfg(camus224 / "database_nifti/patient0185/Info_2CH.cfg")
    assert info == CfgInfo(
        ed_frame=11,
        es_frame=1,
        n_frames=11,
        sex="M",
        age=65.0,
        image_quality="Medium",
        ef_pct=9.0,
        frame_rate_hz=56.5,
    )


@pytest.mark.shared
def test_every_real_cfg_parses_and_two_store_es_before_ed(camus224: Path) -> None:
    paths = sorted((camus224 / "database_nifti").glob("patient*/Info_2CH.cfg"))
    assert len(paths) == 500
    reversed_ids = []
    for path in paths:
        info = parse_cfg(path)
        assert None not in (info.ed_frame, info.es_frame, info.n_frames, info.ef_pct), path
        assert info.frame_rate_hz is not None and info.frame_rate_hz > 0, path
        assert info.sex in ("M", "F"), path
        assert info.image_quality in ("Good", "Medium", "Poor"), path
        assert info.edv_ml is None and info.extra == {}, path
        if info.ed_frame > info.es_frame:
            reversed_ids.append(path.parent.name)
    assert reversed_ids == ["patient0185", "patient0217"]
