"""`jukebox-pl prep` against a hostile --src and metadata: one bad path never stops the run, and nothing is
read from outside --src and the metadata file's folder. Every problem is reported by path (or by metadata
file, line, row and column) and the good tracks still land in the shards."""

from __future__ import annotations

import errno
import json
import os
import tarfile
from pathlib import Path

import pytest
import soundfile as sf
from audio_fixtures import tone

from jukebox_pl.cli import main
from jukebox_pl.data.metadata import MAX_LYRICS_BYTES, MAX_NAME_CHARS, MAX_ROW_CHARS, load_metadata
from jukebox_pl.data.prep import PrepOptions, discover, prepare_shards
from jukebox_pl.errors import UserValueError

SR = 8000
SECRET = "TOP SECRET outside the allowed folders"


def make_src(root: Path, names: list[str]) -> Path:
    """A source folder of tiny generated tracks (1.2 s at 8 kHz) at the given relative paths."""
    root.mkdir(parents=True, exist_ok=True)
    for i, rel in enumerate(names):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, tone(1.2, SR, 220 + 40 * i, seed=i), SR)
    return root


def run_prep(src: Path, out: Path, metadata: Path | None = None) -> dict:
    opts = PrepOptions(src=str(src), out=str(out), metadata=metadata and str(metadata), sr=SR, val_fraction=0.0)
    return prepare_shards(opts, progress=False)


def shard_infos(out: Path) -> dict[str, dict]:
    """source path -> the JSON stored with each track in the shards."""
    infos = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    info = json.load(tar.extractfile(member))
                    infos[info["source"]] = info
    return infos


def skipped(manifest: dict) -> dict[str, str]:
    return {item["path"]: item["reason"] for item in manifest["skipped"]}


def one_problem(problems: list[str], *parts: str) -> str:
    """The single problem line that mentions every part (fails naming all problems otherwise)."""
    hits = [p for p in problems if all(part in p for part in parts)]
    assert len(hits) == 1, (parts, problems)
    return hits[0]


# --- discovery ---------------------------------------------------------------------------------------------


def test_dangling_symlink_is_skipped_and_reported(tmp_path):
    src = make_src(tmp_path / "src", ["a.wav", "b/c.flac"])
    (src / "gone.wav").symlink_to(src / "deleted.wav")
    out = src / "shards"  # --out inside --src, not there yet: never walked
    manifest = run_prep(src, out)
    assert "broken symlink" in skipped(manifest)["gone.wav"]
    assert manifest["counts"]["skipped"] == 1
    assert set(shard_infos(out)) == {"a.wav", "b/c.flac"}
    assert run_prep(src, out)["tracks"] == manifest["tracks"], "a second run finds the same files (a resume)"


def test_file_symlink_loop_is_skipped_and_reported(tmp_path):
    src = make_src(tmp_path / "src", ["a.wav"])
    (src / "x.wav").symlink_to("y.wav")
    (src / "y.wav").symlink_to("x.wav")
    manifest = run_prep(src, tmp_path / "out")
    reasons = skipped(manifest)
    assert "symlink loop" in reasons["x.wav"] and "symlink loop" in reasons["y.wav"]
    assert set(shard_infos(tmp_path / "out")) == {"a.wav"}


def test_folder_symlink_loops_are_reported_and_never_walked(tmp_path):
    src = make_src(tmp_path / "src", ["a.wav", "sub/b.wav"])
    (src / "sub" / "up").symlink_to("..")  # a folder link to its own parent
    (src / "p").symlink_to("q")  # two links pointing at each other
    (src / "q").symlink_to("p")
    manifest = run_prep(src, tmp_path / "out")
    reasons = skipped(manifest)
    assert "symlink loop" in reasons["sub/up"] and "contains it" in reasons["sub/up"]
    assert "symlink loop" in reasons["p"] and "symlink loop" in reasons["q"]
    assert manifest["counts"]["audio_files_found"] == 2
    assert set(shard_infos(tmp_path / "out")) == {"a.wav", "sub/b.wav"}


def test_folder_links_inside_src_are_followed_once_and_links_out_are_not(tmp_path):
    src = make_src(tmp_path / "src", ["real/a.wav", ".hidden/b.wav"])
    make_src(tmp_path / "elsewhere", ["c.wav"])
    (src / "alias").symlink_to("real")  # reaches a folder walked anyway
    (src / "shown").symlink_to(".hidden")  # reaches a folder the walk skips: followed once, under its name
    (src / "again.wav").symlink_to("real/a.wav")  # a second name for a track
    (src / "out").symlink_to(tmp_path / "elsewhere")
    (src / "out.wav").symlink_to(tmp_path / "elsewhere" / "c.wav")
    manifest = run_prep(src, tmp_path / "shards")
    reasons = skipped(manifest)
    assert "already included" in reasons["alias"] and "already included" in reasons["again.wav"]
    assert "outside --src" in reasons["out"] and "outside --src" in reasons["out.wav"]
    assert set(shard_infos(tmp_path / "shards")) == {"real/a.wav", "shown/b.wav"}


def _chmod_blocks_reads(folder: Path) -> bool:
    """Whether chmod 000 stops this process reading (not for root, nor for a process allowed to override it)."""
    probe = folder / "chmod-probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        probe.read_text()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o644)
        probe.unlink()
    return False


def _deny(monkeypatch, name: str, path: Path) -> None:
    """Make os.<name>(path) fail as chmod 000 would for an ordinary user (root reads through chmod)."""
    real = getattr(os, name)

    def denied(target, *args, **kwargs):
        if os.fspath(target) == os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(target))
        return real(target, *args, **kwargs)

    monkeypatch.setattr(os, name, denied)


def test_unreadable_folder_is_reported_and_the_rest_prepped(tmp_path, monkeypatch):
    src = make_src(tmp_path / "src", ["a.wav", "locked/b.wav", "z/c.wav"])
    locked = src / "locked"
    if _chmod_blocks_reads(tmp_path):
        locked.chmod(0)
    else:  # run as root: make the listing fail the way chmod 000 makes it fail for a user
        _deny(monkeypatch, "scandir", locked)
    try:
        manifest = run_prep(src, tmp_path / "out")
    finally:
        locked.chmod(0o755)
    reason = skipped(manifest)["locked/"]
    assert "folder cannot be read" in reason and "Permission denied" in reason
    assert set(shard_infos(tmp_path / "out")) == {"a.wav", "z/c.wav"}


def test_unreadable_file_is_reported_and_the_rest_prepped(tmp_path, monkeypatch):
    src = make_src(tmp_path / "src", ["a.wav", "b.wav"])
    if _chmod_blocks_reads(tmp_path):
        (src / "b.wav").chmod(0)
    else:  # run as root: make opening fail the way chmod 000 makes it fail for a user
        _deny(monkeypatch, "open", src / "b.wav")
    manifest = run_prep(src, tmp_path / "out")
    assert skipped(manifest)["b.wav"] == "cannot be read (Permission denied)"
    assert set(shard_infos(tmp_path / "out")) == {"a.wav"}


def test_unreadable_src_or_metadata_file_stops_with_a_user_error(tmp_path, monkeypatch):
    """Without --src or the metadata the user asked for there is nothing sensible to prep: one clear error."""
    src = make_src(tmp_path / "src", ["a.wav"])
    meta = tmp_path / "meta.csv"
    meta.write_text("path,artist\na.wav,Ann\n")
    if _chmod_blocks_reads(tmp_path):
        meta.chmod(0)
    else:  # run as root: make opening the metadata fail the way chmod 000 makes it fail for a user
        real_open = Path.open
        monkeypatch.setattr(Path, "open", lambda p, *a, **k: _raise_denied(p) if p == meta else real_open(p, *a, **k))
    with pytest.raises(UserValueError, match=r"metadata file .*meta.csv cannot be read \(Permission denied\)"):
        load_metadata(meta, src)
    meta.chmod(0o644)
    _deny(monkeypatch, "scandir", src)
    with pytest.raises(UserValueError, match=r"--src .*src cannot be read \(Permission denied\)"):
        run_prep(src, tmp_path / "out")


def _raise_denied(path: Path):
    raise PermissionError(errno.EACCES, "Permission denied", str(path))


def test_fifo_named_like_audio_is_never_opened(tmp_path):
    src = make_src(tmp_path / "src", ["a.wav"])
    os.mkfifo(src / "pipe.wav")  # opening it for reading would block the run forever
    listing = discover(src)
    assert listing.audio == ["a.wav"] and "not a regular file" in listing.skipped["pipe.wav"]


def test_file_name_that_is_not_utf8_is_reported_not_fatal(tmp_path):
    src = make_src(tmp_path / "src", ["a.wav", "b.wav"])
    os.rename(src / "b.wav", os.fsencode(src) + b"/b\xffd.wav")
    manifest = run_prep(src, tmp_path / "out")
    assert "not valid UTF-8" in skipped(manifest)["b\\xffd.wav"]
    assert set(shard_infos(tmp_path / "out")) == {"a.wav"}


# --- metadata cells and rows ----------------------------------------------------------------------------------


def test_one_megabyte_lyrics_cell_is_dropped_and_the_track_keeps_its_labels(tmp_path):
    src = make_src(tmp_path / "src", ["a.wav", "b.wav"])
    meta = tmp_path / "meta.csv"
    huge = "la la la la la la la la la\n" * (1_000_000 // 27)
    meta.write_text(f'path,artist,genre,lyrics\na.wav,Ann,rock,"{huge}"\nb.wav,Bob,jazz,short words\n')
    manifest = run_prep(src, tmp_path / "out", meta)
    problem = one_problem(manifest["metadata"]["problems"], "meta.csv:2 (row 2)", "column 'lyrics'")
    assert f"over the {MAX_LYRICS_BYTES}-byte limit; value ignored" in problem
    infos = shard_infos(tmp_path / "out")
    assert infos["a.wav"]["artist"] == "Ann" and infos["a.wav"]["genres"] == ["rock"] and infos["a.wav"]["lyrics"] == ""
    assert infos["b.wav"]["lyrics"] == "short words"


def test_malformed_csv_rows_and_cells_are_reported_by_row_and_column(tmp_path):
    big_cell = "x" * 200_000  # over Python's own csv limit (131072), under ours: only this cell is dropped
    giant_row = ("la la la la la la la la\n" * (MAX_ROW_CHARS // 24 + 10)).replace('"', "")  # a row over ours
    rows = [
        b"path,artist,genre,lyrics,mood",
        b"a.wav,Ann,rock,hello,happy",
        b"b.wav,Bob,jazz,hi,calm,EXTRA",  # one cell too many
        b"c.wav,Cid",  # cells missing
        b"d.wav,D\xff\xfeve,pop,la,x",  # bytes that are not UTF-8
        b"e.wav,Eve\x00,funk,la,x",  # NUL byte
        b"f.wav,Fay,soul," + big_cell.encode() + b",x",
        b'g.wav,Gus,metal,"' + giant_row.encode() + b'",x',  # spans many lines; dropped whole
        b"h.wav," + b"H" * (MAX_NAME_CHARS + 1) + b",blues,ok,x",  # a name too long, just after the giant row
        b"i.wav,Ivy," + b"a;" * 5000 + b",ok,x",  # a genre cell that would flood the vocabulary
    ]
    meta = tmp_path / "meta.csv"
    meta.write_bytes(b"\n".join(rows) + b"\n")
    names = [f"{c}.wav" for c in "abcdefghi"]
    m = load_metadata(meta, tmp_path)
    problems = m.problems
    one_problem(problems, "meta.csv:3 (row 3)", "6 cells but the header has 5 columns", "extra cells are ignored")
    one_problem(problems, "meta.csv:4 (row 4)", "2 cells but the header has 5 columns", "left empty")
    one_problem(problems, "meta.csv:5 (row 5)", "column 'artist'", "not valid UTF-8", "value ignored")
    one_problem(problems, "meta.csv:6 (row 6)", "column 'artist'", "NUL", "value ignored")
    one_problem(problems, "meta.csv:7 (row 7)", "column 'lyrics'", "200000 bytes", "value ignored")
    one_problem(problems, "meta.csv:8 (row 8)", f"longer than {MAX_ROW_CHARS} characters", "row ignored")
    after = 9 + giant_row.count("\n")  # the line on which row 9 starts
    one_problem(problems, f"meta.csv:{after} (row 9)", "column 'artist'", f"{MAX_NAME_CHARS}-character limit")
    one_problem(problems, f"meta.csv:{after + 1} (row 10)", "column 'genre'", "value ignored")
    assert len(problems) == 8, problems
    assert sorted(m.rows) == [n for n in names if n != "g.wav"]
    assert (m.get("b.wav").artist, m.get("c.wav").artist, m.get("c.wav").genres) == ("Bob", "Cid", ["unknown"])
    assert (m.get("d.wav").artist, m.get("d.wav").genres) == ("unknown", ["pop"])
    assert m.get("e.wav").artist == "unknown" and m.get("f.wav").lyrics == "" and m.get("f.wav").artist == "Fay"
    assert (m.get("h.wav").artist, m.get("h.wav").genres) == ("unknown", ["blues"])
    assert m.get("i.wav").genres == ["unknown"]

    src = make_src(tmp_path / "src", names)
    run_prep(src, tmp_path / "out", meta)
    infos = shard_infos(tmp_path / "out")
    assert set(infos) == set(names), "every track is prepped, with or without labels"
    assert infos["g.wav"]["has_metadata"] is False and infos["a.wav"]["artist"] == "Ann"


def test_malformed_jsonl_lines_are_reported(tmp_path):
    meta = tmp_path / "meta.jsonl"
    lines = [
        json.dumps({"path": "a.wav", "artist": "Ann", "lyrics": "x" * (MAX_LYRICS_BYTES + 1)}),
        '{"path": "b.wav", "artist": "B\\u0000b", "genre": "pop"}',
        '{"path": "c.wav", "artist": "C\\ud800", "genre": "pop"}',
        "[" * 100_000,  # too deep for Python's JSON parser
        json.dumps({"path": "d.wav", "artist": "Dee"}),
    ]
    meta.write_text("\n".join(lines) + "\n")
    m = load_metadata(meta)
    one_problem(m.problems, "meta.jsonl:1", "column 'lyrics'", "value ignored")
    one_problem(m.problems, "meta.jsonl:2", "column 'artist'", "NUL")
    one_problem(m.problems, "meta.jsonl:3", "column 'artist'", "not valid UTF-8")
    one_problem(m.problems, "meta.jsonl:4", "row ignored")
    assert m.get("a.wav").artist == "Ann" and m.get("a.wav").lyrics == ""
    assert m.get("b.wav").artist == "unknown" and m.get("d.wav").artist == "Dee"


# --- lyric files named by the metadata ------------------------------------------------------------------


@pytest.fixture
def lyric_layout(tmp_path) -> dict:
    """tmp/outside.txt (a secret), tmp/data/meta.csv, tmp/data/lyrics/ok.txt and tmp/data/src with 5 tracks."""
    (tmp_path / "outside.txt").write_text(SECRET)
    data = tmp_path / "data"
    src = make_src(data / "src", [f"s{i}.wav" for i in range(5)])
    (data / "lyrics").mkdir()
    (data / "lyrics" / "ok.txt").write_text("words that may be read\n")
    return {"root": tmp_path, "data": data, "src": src}


def _lyrics_csv(folder: Path, lyrics: list[str]) -> Path:
    meta = folder / "meta.csv"
    rows = [f"s{i}.wav,Singer {i},pop,{value}" for i, value in enumerate(lyrics)]
    meta.write_text("path,artist,genre,lyrics\n" + "\n".join(rows) + "\n")
    return meta


def _assert_secret_not_in_shards(out: Path) -> None:
    for shard in out.glob("*.tar"):
        assert SECRET.encode() not in shard.read_bytes(), shard


def test_dotdot_lyrics_path_is_ignored(lyric_layout):
    meta = _lyrics_csv(lyric_layout["data"], ["../outside.txt", "lyrics/ok.txt"])
    out = lyric_layout["root"] / "out"
    manifest = run_prep(lyric_layout["src"], out, meta)
    one_problem(manifest["metadata"]["problems"], "meta.csv:2 (row 2)", "lyrics path '../outside.txt' escapes")
    infos = shard_infos(out)
    assert infos["s0.wav"]["lyrics"] == "" and infos["s0.wav"]["artist"] == "Singer 0"
    assert infos["s1.wav"]["lyrics"] == "words that may be read\n"
    assert len(infos) == 5
    _assert_secret_not_in_shards(out)


def test_absolute_lyrics_path_outside_is_ignored(lyric_layout):
    outside = lyric_layout["root"] / "outside.txt"
    inside = lyric_layout["data"] / "lyrics" / "ok.txt"
    meta = _lyrics_csv(lyric_layout["data"], [str(outside), str(inside)])
    m = load_metadata(meta, lyric_layout["src"])
    one_problem(m.problems, "meta.csv:2 (row 2)", f"lyrics path '{outside}' escapes")
    assert m.get("s0.wav").lyrics == "" and m.get("s1.wav").lyrics == "words that may be read\n"
    assert len(m.problems) == 1


def test_symlinked_lyrics_file_leading_out_is_ignored(lyric_layout):
    src = lyric_layout["src"]
    (src / "link.txt").symlink_to(lyric_layout["root"] / "outside.txt")
    (src / "relative.txt").symlink_to("../../outside.txt")
    (src / "fine.txt").symlink_to("../lyrics/ok.txt")  # leads into the metadata folder: allowed
    meta = _lyrics_csv(lyric_layout["data"], ["link.txt", "relative.txt", "fine.txt"])
    out = lyric_layout["root"] / "out"
    manifest = run_prep(src, out, meta)
    problems = manifest["metadata"]["problems"]
    one_problem(problems, "meta.csv:2 (row 2)", "lyrics path 'link.txt' escapes")
    one_problem(problems, "meta.csv:3 (row 3)", "lyrics path 'relative.txt' escapes")
    infos = shard_infos(out)
    assert infos["s0.wav"]["lyrics"] == infos["s1.wav"]["lyrics"] == ""
    assert infos["s2.wav"]["lyrics"] == "words that may be read\n"
    _assert_secret_not_in_shards(out)


def _bytes_read_by_this_process() -> int | None:
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return None
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("rchar:")))


def test_oversize_lyrics_file_is_ignored_without_reading_it(lyric_layout):
    data = lyric_layout["data"]
    (data / "long.txt").write_text("x" * (MAX_LYRICS_BYTES + 1))
    with open(data / "huge.txt", "wb") as fh:  # 64 MiB, sparse: reading it whole would show in rchar
        fh.truncate(64 << 20)
    (data / "limit.txt").write_text("y" * MAX_LYRICS_BYTES)
    meta = _lyrics_csv(data, ["long.txt", "huge.txt", "limit.txt"])
    before = _bytes_read_by_this_process()
    m = load_metadata(meta, lyric_layout["src"])
    after = _bytes_read_by_this_process()
    one_problem(m.problems, "meta.csv:2 (row 2)", "'long.txt'", f"over the {MAX_LYRICS_BYTES}-byte limit; ignored")
    one_problem(m.problems, "meta.csv:3 (row 3)", "'huge.txt'", f"is {64 << 20} bytes")
    assert m.get("s0.wav").lyrics == m.get("s1.wav").lyrics == ""
    assert m.get("s2.wav").lyrics == "y" * MAX_LYRICS_BYTES
    if before is not None:
        assert after - before < 4 * MAX_LYRICS_BYTES + 1_000_000, "an over-size lyrics file was read"


# --- through the command line ----------------------------------------------------------------------------


def test_cli_prep_survives_bad_paths_and_prints_each_problem(lyric_layout, capsys):
    src = lyric_layout["src"]
    (src / "gone.wav").symlink_to("nowhere.wav")
    (src / "loop").symlink_to(".")
    meta = _lyrics_csv(lyric_layout["data"], ["../outside.txt"])
    out = lyric_layout["root"] / "cli"
    argv = ["prep", "--src", str(src), "--out", str(out), "--metadata", str(meta), "--sr", str(SR)]
    assert main([*argv, "--val-fraction", "0", "--workers", "1", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  skipped gone.wav: broken symlink (its target does not exist); not followed" in lines
    assert any(line.startswith("  skipped loop: symlink loop") for line in lines), lines
    escape = "  metadata: meta.csv:2 (row 2): lyrics path '../outside.txt' escapes --src and the metadata file's folder"
    assert any(line.startswith(escape) for line in lines), lines
    assert set(shard_infos(out)) == {f"s{i}.wav" for i in range(5)}
    _assert_secret_not_in_shards(out)
