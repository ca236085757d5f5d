"""EchoNet-Dynamic layout: FileList rows, tracings, video decoding, and a synthetic cohort.

Known answers by hand (a rectangle and a house-shaped polygon traced with known areas and pixel
counts, ED by area when the rows list ES first, per-row FileList problems), video round trips
(FFV1 exact, Motion JPEG within its stated tolerance, a colour frame's BT.601 luma), bad videos
(truncated, garbage, empty, zero frames, over the limits, a frame count or size other than the
FileList's), and a synthetic cohort read back against the renderer and the analytic truth. The
dataset's licence forbids redistributing its videos: every video here is generated.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from echo_batch.domain import InputFormat, Label, SpacingSource, Split, View
from echo_batch.errors import InputError
from echo_batch.io.echonet import (
    EchoNetEntry,
    annotated_frames,
    is_echonet_root,
    read_echonet_clip,
    read_entry_clip,
    read_filelist,
    read_tracings,
    tracing_mask,
)
from echo_batch.io.limits import InputLimits
from echo_batch.io.video import VideoCodec, read_video, write_video
from echo_batch.synth.echonet import plan_echonet, synth_echonet
from echo_batch.synth.render import render_phases

SEED = 2
N_VIDEOS = 8  # seed 2: both tracing orders, 1-4 beats, 50 and other frame rates
FILELIST_HEADER = "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split\n"
TRACINGS_HEADER = "FileName,X1,Y1,X2,Y2,Frame\n"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------- tracings, known answers by hand

# A 19 x 40 rectangle: the chords run from x = 10.5 to x = 29.5 at y = 5.5, 25.5 and 45.5, so the
# polygon's area is 19 * 40 = 760 px^2 and exactly the pixel centres x = 11..29, y = 6..45 lie
# inside (19 * 40 = 760 pixels). The long axis runs down the middle.
RECTANGLE = [
    (20.0, 5.5, 20.0, 45.5),
    (10.5, 5.5, 29.5, 5.5),
    (10.5, 25.5, 29.5, 25.5),
    (10.5, 45.5, 29.5, 45.5),
]
# A 10 x 10 square: 100 px^2, pixel centres x = 41..50, y = 41..50.
SQUARE = [
    (45.5, 40.5, 45.5, 50.5),
    (40.5, 40.5, 50.5, 40.5),
    (40.5, 50.5, 50.5, 50.5),
]
# A house: apex chord of zero length at (20, 0), chords from x = 10 to 30 at y = 10 and 20: a
# triangle of 0.5 * 20 * 10 = 100 px^2 on a 20 x 10 rectangle of 200 px^2, 300 px^2 in all.
HOUSE = [
    (20.0, 0.0, 20.0, 20.0),
    (20.0, 0.0, 20.0, 0.0),
    (10.0, 10.0, 30.0, 10.0),
    (10.0, 20.0, 30.0, 20.0),
]


def _tracing_text(name: str, frame: int, rows: list[tuple[float, ...]]) -> str:
    return "".join(f"{name},{x1},{y1},{x2},{y2},{frame}\n" for x1, y1, x2, y2 in rows)


def test_rectangle_and_square_areas_and_masks(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "VolumeTracings.csv",
        TRACINGS_HEADER + _tracing_text("A.avi", 3, RECTANGLE) + _tracing_text("A.avi", 9, SQUARE),
    )
    table = read_tracings(path)
    assert table.problems == () and table.file_problems == {}
    frames = table.of("A")
    assert sorted(frames) == [3, 9]
    assert frames[3].area_px == pytest.approx(760.0, abs=1e-9)
    assert frames[9].area_px == pytest.approx(100.0, abs=1e-9)
    rectangle = tracing_mask(frames[3], (64, 64))
    assert rectangle.dtype == np.uint8 and int(rectangle.sum()) == 760
    expected = np.zeros((64, 64), np.uint8)
    expected[6:46, 11:30] = 1  # rows y = 6..45, columns x = 11..29
    np.testing.assert_array_equal(rectangle, expected)
    square = tracing_mask(frames[9], (64, 64))
    expected = np.zeros((64, 64), np.uint8)
    expected[41:51, 41:51] = 1
    np.testing.assert_array_equal(square, expected)
    # cut by the frame's edge: only the part inside a 30 x 20 frame (rows 6..29, cols 11..19)
    assert int(tracing_mask(frames[3], (30, 20)).sum()) == 24 * 9


def test_house_polygon_area_and_orientation_do_not_depend_on_row_order(tmp_path: Path) -> None:
    """Chords listed out of order and with their ends swapped give the same polygon."""
    swapped = [HOUSE[0], (30.0, 10.0, 10.0, 10.0), HOUSE[1], HOUSE[3]]  # y = 10, 0, 20
    path = _write(
        tmp_path / "VolumeTracings.csv",
        TRACINGS_HEADER + _tracing_text("B", 0, HOUSE) + _tracing_text("B", 1, swapped),
    )
    frames = read_tracings(path).of("B.avi")
    assert frames[0].area_px == pytest.approx(300.0, abs=1e-9)
    assert frames[1].area_px == pytest.approx(300.0, abs=1e-9)
    np.testing.assert_array_equal(
        tracing_mask(frames[0], (32, 40)), tracing_mask(frames[1], (32, 40))
    )


def test_ed_is_the_larger_traced_area_not_the_first_rows(tmp_path: Path) -> None:
    text = (
        TRACINGS_HEADER
        + _tracing_text("ESFIRST.avi", 30, SQUARE)  # ES listed first
        + _tracing_text("ESFIRST.avi", 7, RECTANGLE)
        + _tracing_text("EDFIRST.avi", 4, RECTANGLE)
        + _tracing_text("EDFIRST.avi", 12, SQUARE)
    )
    table = read_tracings(_write(tmp_path / "VolumeTracings.csv", text))
    assert annotated_frames(table.of("ESFIRST")) == (7, 30)
    assert annotated_frames(table.of("EDFIRST")) == (4, 12)
    assert annotated_frames(table.of("ESFIRST"), n_frames=31) == (7, 30)
    with pytest.raises(InputError, match=r"ESFIRST frame 30: traced frame beyond the video's 30"):
        annotated_frames(table.of("ESFIRST"), n_frames=30)


def test_tracing_problems_are_per_video(tmp_path: Path) -> None:
    text = (
        TRACINGS_HEADER
        + _tracing_text("GOOD", 1, RECTANGLE)
        + _tracing_text("GOOD", 2, SQUARE)
        + _tracing_text("BADNUM", 1, RECTANGLE)
        + "BADNUM,1,2,x,4,2\n"  # line 13: frame 2 of BADNUM has a bad number
        + _tracing_text("BADNUM", 2, SQUARE[1:])
        + _tracing_text("THREE", 1, RECTANGLE)
        + _tracing_text("THREE", 2, SQUARE)
        + _tracing_text("THREE", 3, SQUARE)
        + _tracing_text("SHORT", 5, RECTANGLE)
        + _tracing_text("SHORT", 6, SQUARE[:2])  # long axis and one chord only
        + "GOOD,1,2,3,4,1.5\n"  # line 32: not a frame index
        + ",1,2,3,4,1\n"  # line 33: no file name
        + _tracing_text("SAME", 1, SQUARE)
        + _tracing_text("SAME", 2, SQUARE)
    )
    table = read_tracings(_write(tmp_path / "VolumeTracings.csv", text))
    assert table.problems == ("line 33: no FileName",)
    assert sorted(table.of("GOOD")) == [1, 2]
    assert table.problems_of("GOOD") == ("line 32: Frame '1.5' is not a frame index; row left out",)
    assert sorted(table.of("BADNUM")) == [1]
    assert table.problems_of("BADNUM") == (
        "frame 2 left out: non-numeric or non-finite coordinates on line 13",
    )
    assert sorted(table.of("THREE")) == [1, 2, 3]
    assert table.problems_of("THREE") == ("3 traced frame(s), expected 2 (one ED, one ES)",)
    assert sorted(table.of("SHORT")) == [5]
    assert table.problems_of("SHORT")[0].startswith("frame 6 left out: 2 row(s)")
    with pytest.raises(InputError, match=r"VolumeTracings.csv: THREE: 3 traced frame\(s\)"):
        annotated_frames(table.of("THREE"))
    with pytest.raises(InputError, match=r"SHORT: 1 traced frame"):
        annotated_frames(table.of("SHORT"))
    with pytest.raises(InputError, match="the same traced area"):
        annotated_frames(table.of("SAME"))


def test_tracings_without_a_column_or_file_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "VolumeTracings.csv", "FileName,X1,Y1,X2,Frame\nA,1,2,3,4\n")
    with pytest.raises(InputError, match=r"required column.*Y2") as info:
        read_tracings(path)
    assert info.value.path == path
    with pytest.raises(InputError, match="file is missing"):
        read_tracings(tmp_path / "absent.csv")


# --------------------------------------------------------------------- FileList, row by row


def test_filelist_rows_and_their_problems(tmp_path: Path) -> None:
    root = tmp_path / "echonet"
    for name in ("V1", "V2", "BADEF", "HIGHEF", "NOFPS", "HALF", "DEV", "SHORT"):
        _write(root / "Videos" / f"{name}.avi", "x")
    (root / "Videos" / "DIR.avi").mkdir()
    outside = _write(tmp_path / "outside.avi", "x")
    os.symlink(outside, root / "Videos" / "LINK.avi")
    _write(
        root / "FileList.csv",
        FILELIST_HEADER
        + "V1,55.5,20,45,112,112,50,120,TRAIN\n"  # line 2
        + "V2.avi,60,10,25,112,112,50.0,101,val\n"  # line 3: .avi suffix, lower-case split
        + "BADEF,abc,20,45,112,112,50,120,TEST\n"
        + "HIGHEF,120,20,45,112,112,50,120,TEST\n"
        + "NOFPS,50,20,45,112,112,0,120,TEST\n"
        + "HALF,50,20,45,112,112,50,12.5,TEST\n"
        + "DEV,50,20,45,112,112,50,120,DEV\n"
        + "SHORT,50,20,45,112\n"  # line 9
        + "V1.avi,1,1,1,112,112,50,120,TRAIN\n"  # line 10: repeats V1
        + "MISSING,50,20,45,112,112,50,120,TRAIN\n"
        + "../evil,50,20,45,112,112,50,120,TRAIN\n"
        + "DIR,50,20,45,112,112,50,120,TRAIN\n"
        + "LINK,50,20,45,112,112,50,120,TRAIN\n",
    )
    assert is_echonet_root(root)
    entries = {(e.file_name, e.line): e for e in read_filelist(root)}
    v1 = entries["V1", 2]
    assert v1 == EchoNetEntry(
        file_name="V1",
        line=2,
        video=root / "Videos" / "V1.avi",
        ef_ref_pct=55.5,
        edv_ml=45.0,
        esv_ml=20.0,
        fps=50.0,
        n_frames=120,
        height=112,
        width=112,
        split=Split.TRAINING,
    )
    assert v1.frame_time_ms == 20.0
    v2 = entries["V2", 3]
    assert (v2.usable, v2.problems, v2.split, v2.n_frames) == (True, (), Split.VALIDATION, 101)
    assert entries["BADEF", 4].problems == ("EF 'abc' is not a number in [0, 100]",)
    assert entries["BADEF", 4].ef_ref_pct is None and entries["BADEF", 4].usable
    assert entries["HIGHEF", 5].problems == ("EF '120' is not a number in [0, 100]",)
    assert entries["NOFPS", 6].problems == ("FPS '0' is not a number in (0, 1000]",)
    assert entries["NOFPS", 6].fps is None and entries["NOFPS", 6].frame_time_ms is None
    assert entries["HALF", 7].problems == (
        "NumberOfFrames '12.5' is not a whole number in [1, 1e+06]",
    )
    assert entries["DEV", 8].problems == ("Split 'DEV' is not one of TRAIN, VAL, TEST",)
    assert entries["DEV", 8].split == Split.NONE
    short = entries["SHORT", 9]
    assert short.problems[0] == "5 cells, the header has 9" and short.usable
    assert short.height == 112 and short.width is None and short.fps is None
    assert short.problems[1:] == (
        "FrameWidth is empty",
        "FPS is empty",
        "NumberOfFrames is empty",
        "Split is empty",
    )
    repeat = entries["V1", 10]
    assert not repeat.usable and repeat.video == root / "Videos" / "V1.avi"
    assert repeat.problems == ("FileName V1 repeats line 2; row ignored",)
    assert entries["MISSING", 11].problems == ("Videos/MISSING.avi is missing",)
    assert not entries["MISSING", 11].usable
    assert entries["../evil", 12].problems == ("FileName '../evil' is not a plain file name",)
    assert entries["DIR", 13].problems == ("Videos/DIR.avi is not a regular file",)
    assert entries["LINK", 14].problems[0].startswith("Videos/LINK.avi resolves outside")
    assert [e.usable for e in entries.values()].count(True) == 8
    with pytest.raises(InputError, match=r"Videos/MISSING.avi is missing") as info:
        read_entry_clip(entries["MISSING", 11])
    assert info.value.path == root / "Videos" / "MISSING.avi"
    with pytest.raises(InputError, match="repeats line 2") as info:
        read_entry_clip(repeat)
    assert info.value.path == root / "Videos" / "V1.avi"


def test_filelist_missing_columns_and_files(tmp_path: Path) -> None:
    root = tmp_path / "a"
    _write(root / "Videos" / "V1.avi", "x")
    _write(root / "FileList.csv", "FileName,ESV,EDV,FPS,NumberOfFrames\nV1,20,45,50,120\n")
    (entry,) = read_filelist(root)
    assert entry.usable and entry.ef_ref_pct is None and entry.split == Split.NONE
    assert entry.problems == (
        "FileList.csv has no EF column",
        "FileList.csv has no FrameHeight column",
        "FileList.csv has no FrameWidth column",
    )
    _write(root / "FileList.csv", "Name,EF\nV1,50\n")
    with pytest.raises(InputError, match=r"required column.*FileName") as info:
        read_filelist(root)
    assert info.value.path == root / "FileList.csv"
    with pytest.raises(InputError, match=r"FileList.csv: file is missing"):
        read_filelist(tmp_path / "empty")
    _write(root / "FileList.csv", "")
    with pytest.raises(InputError, match="table is empty"):
        read_filelist(root)
    (root / "FileList.csv").write_bytes(b"FileName,EF\n\xff\xfe,1\n")
    with pytest.raises(InputError, match="not a UTF-8 text table"):
        read_filelist(root)
    _write(root / "FileList.csv", FILELIST_HEADER + "V1,50,20,45,112,112,50,120,TRAIN\n" * 2)
    with pytest.raises(InputError, match="larger than the limit of 100 bytes"):
        read_filelist(root, max_bytes=100)


# ---------------------------------------------------------------------------- video files


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """20 rendered 112-pixel frames of a synthetic 4-chamber loop, uint8."""
    video = plan_echonet(1, seed=5)[0]
    _, images = render_phases(video.params, View.A4C, np.linspace(0.0, 1.0, 20))
    return images


def test_ffv1_round_trip_is_exact(tmp_path: Path, frames: np.ndarray) -> None:
    path = write_video(tmp_path / "v.avi", frames, 50.0)
    video = read_video(path)
    assert video.frames.dtype == np.float32 and video.fps == 50.0
    np.testing.assert_array_equal(video.frames, frames.astype(np.float32))


def test_mjpg_round_trip_within_tolerance(tmp_path: Path, frames: np.ndarray) -> None:
    """Motion JPEG: mean absolute error under 3 grey levels, none above 40 (measured 1.9, 23)."""
    path = write_video(tmp_path / "v.avi", frames, 50.0, codec=VideoCodec.MJPG)
    error = np.abs(read_video(path).frames - frames)
    assert error.mean() < 3.0 and error.max() < 40.0
    assert error.mean() > 0.0  # lossy: the test measures the codec, not a copy


def test_colour_frames_become_bt601_luma(tmp_path: Path) -> None:
    bgr = np.zeros((3, 16, 16, 3), np.uint8)
    bgr[..., 2] = 255  # red
    bgr[:, :8, :, 1] = 100  # plus some green in the top half
    path = tmp_path / "colour.avi"
    writer = cv2.VideoWriter(
        os.fspath(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (16, 16), True
    )
    for frame in bgr:
        writer.write(frame)
    writer.release()
    grey = read_video(path).frames
    assert grey[0, 0, 0] == pytest.approx(0.299 * 255 + 0.587 * 100, abs=1e-3)
    assert grey[0, 15, 0] == pytest.approx(0.299 * 255, abs=1e-3)


def test_echonet_clip_and_frame_count_check(tmp_path: Path, frames: np.ndarray) -> None:
    path = write_video(tmp_path / "Videos" / "0XAB.avi", frames, 30.0)
    clip = read_echonet_clip(path, expected_frames=20, expected_size=(112, 112), fps=50.0)
    assert clip.frames.shape == (20, 112, 112) and clip.frames.dtype == np.float32
    assert clip.spacing is None and clip.spacing_source == SpacingSource.NONE
    assert clip.view == View.A4C and clip.input_format == InputFormat.ECHONET
    assert clip.frame_time_ms == 20.0  # from the FileList's rate, not the container's 30
    assert clip.path == path
    assert read_echonet_clip(path).frame_time_ms is None
    with pytest.raises(InputError, match=r"20 frames decoded, FileList.csv says 21") as info:
        read_echonet_clip(path, expected_frames=21)
    assert info.value.path == path
    with pytest.raises(InputError, match=r"112 x 112 pixels, FileList.csv says 112 x 100"):
        read_echonet_clip(path, expected_size=(112, 100))
    with pytest.raises(ValueError, match="frame rate"):
        read_echonet_clip(path, fps=0.0)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncate", "video is truncated or corrupt: .* of the 20 frames"),
        ("garbage", "not a readable video"),
        ("empty", "file is empty"),
        ("missing", "file is missing"),
        ("folder", "not a regular file"),
        ("zero", "video has no frames"),
    ],
)
def test_bad_videos_raise_input_error_naming_the_file(
    tmp_path: Path, frames: np.ndarray, damage: str, reason: str
) -> None:
    path = tmp_path / "bad.avi"
    if damage == "truncate":
        data = write_video(path, frames, 50.0).read_bytes()
        path.write_bytes(data[: int(len(data) * 0.6)])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, np.uint8).tobytes())
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "folder":
        path.mkdir()
    elif damage == "zero":
        writer = cv2.VideoWriter(
            os.fspath(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), 50.0, (112, 112)
        )
        writer.release()
    with pytest.raises(InputError, match=reason) as info:
        read_echonet_clip(path, expected_frames=20)
    assert info.value.path == path


def test_video_limits_apply_before_decoding(tmp_path: Path, frames: np.ndarray) -> None:
    path = write_video(tmp_path / "v.avi", frames, 50.0)
    with pytest.raises(InputError, match="20 frames exceed the limit 10"):
        read_video(path, limits=InputLimits(max_frames=10))
    with pytest.raises(InputError, match="exceeds 64 pixels"):
        read_video(path, limits=InputLimits(max_side_px=64))
    with pytest.raises(InputError, match="decoded size limit"):
        read_video(path, limits=InputLimits(max_decoded_bytes=1_000_000))


# ----------------------------------------------------------------------- synthetic cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_echonet(tmp_path_factory.mktemp("echonet"), N_VIDEOS, seed=SEED)


def test_cohort_filelist_matches_the_truth(cohort: Path) -> None:
    entries = read_filelist(cohort)
    truth = {row["patient_id"]: row for row in _rows(cohort / "truth.csv")}
    per_frame: dict[str, list[dict[str, str]]] = {}
    for row in _rows(cohort / "truth_frames.csv"):
        per_frame.setdefault(row["patient_id"], []).append(row)
    assert len(entries) == N_VIDEOS == len(truth)
    assert all(e.usable and not e.problems for e in entries)
    splits = {Split.TRAINING: "training", Split.VALIDATION: "validation", Split.TESTING: "testing"}
    for entry in entries:
        row, rows = truth[entry.file_name], per_frame[entry.file_name]
        assert splits[entry.split] == row["split"]
        assert entry.ef_ref_pct == float(row["ef_4ch_pct"])
        assert (entry.n_frames, entry.height, entry.width) == (len(rows), 112, 112)
        assert entry.fps == float(row["fps"])
        # EF from the per-frame single-plane volumes at every beat's ED and ES, by hand
        eds = [int(f) for f in row["ed_frames_4ch"].split()]
        ess = [int(f) for f in row["es_frames_4ch"].split()]
        assert [int(r["frame"]) for r in rows if r["is_ed"] == "True"] == eds
        assert [int(r["frame"]) for r in rows if r["is_es"] == "True"] == ess
        for ed, es in zip(eds, ess, strict=True):
            edv, esv = float(rows[ed]["volume_single_ml"]), float(rows[es]["volume_single_ml"])
            assert 100.0 * (edv - esv) / edv == pytest.approx(entry.ef_ref_pct, abs=1e-9)
            assert edv == pytest.approx(entry.edv_ml, rel=1e-12)
            assert esv == pytest.approx(entry.esv_ml, rel=1e-12)
    assert {e.split for e in entries} >= {Split.TRAINING, Split.VALIDATION, Split.TESTING}


def test_cohort_videos_and_tracings_read_back(cohort: Path) -> None:
    entries = read_filelist(cohort)
    table = read_tracings(cohort / "VolumeTracings.csv")
    assert table.problems == () and table.file_problems == {}
    truth = {row["patient_id"]: row for row in _rows(cohort / "truth.csv")}
    plan = {video.file_name: video for video in plan_echonet(N_VIDEOS, SEED)}
    orders = set()
    for entry in entries:
        video, row = plan[entry.file_name], truth[entry.file_name]
        clip = read_entry_clip(entry)
        labels, images = render_phases(video.params, View.A4C, video.loop.phases)
        np.testing.assert_array_equal(clip.frames, images)  # FFV1: lossless
        assert clip.frame_time_ms == pytest.approx(1000.0 / entry.fps)
        tracings = table.of(entry.file_name)
        ed, es = annotated_frames(tracings, n_frames=clip.n_frames)
        assert (ed, es) == (int(row["traced_ed_frame"]), int(row["traced_es_frame"]))
        es_first = tracings[es].line < tracings[ed].line  # the rows' order in the file
        assert es_first == (row["tracings_es_first"] == "True")
        orders.add(es_first)
        for frame, instant in ((ed, "ed"), (es, "es")):
            analytic = float(row[f"area_{instant}_4ch_px"])
            assert tracings[frame].area_px == pytest.approx(analytic, rel=0.01)
            mask = tracing_mask(tracings[frame], clip.frames.shape[1:]).astype(bool)
            lv = labels[frame] == Label.LV
            assert mask.sum() == pytest.approx(lv.sum(), rel=0.03)  # measured at most 1.1 %
            assert 2.0 * (mask & lv).sum() / (mask.sum() + lv.sum()) > 0.97
    assert orders == {True, False}  # both tracing orders occur


def test_cohort_options_suffix_and_mjpg(tmp_path: Path) -> None:
    root = synth_echonet(tmp_path / "c", 2, seed=SEED, codec="mjpg", avi_suffix=True)
    assert _rows(root / "FileList.csv")[0]["FileName"].endswith(".avi")
    entries = read_filelist(root)
    plan = plan_echonet(2, SEED)
    assert [e.file_name for e in entries] == [v.file_name for v in plan]
    clip = read_entry_clip(entries[0])
    _, images = render_phases(plan[0].params, View.A4C, plan[0].loop.phases)
    assert np.abs(clip.frames - images).mean() < 3.0
    # the FileList's frame count disagrees with the video: an error naming the video
    text = (root / "FileList.csv").read_text()
    first = entries[0]
    (root / "FileList.csv").write_text(
        text.replace(f",{first.n_frames},", f",{first.n_frames + 1},", 1)
    )
    bad = read_filelist(root)[0]
    with pytest.raises(InputError, match=f"{first.n_frames} frames decoded") as info:
        read_entry_clip(bad)
    assert info.value.path == first.video
    shutil.rmtree(root)
