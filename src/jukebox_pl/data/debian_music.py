"""A real-music set anyone can rebuild: freely licensed game soundtracks from Debian packages, with composers.

Each source is one Debian package whose music folder ships the composers in its own files: Extreme Tux Racer's
`music/readme` ("NAME <mail> composed:" then its files), Hedgewars' `Music/credits.txt` ("File.ogg=NAME"),
LinCity-NG's file names ("NN - NAME - Title.ogg"). FreedroidRPG names no composer per song, so its songs join
only when asked (`uncredited=True`, artist "unknown"). Whole songs are held out by name (`HELD_OUT`: one song
of each composer with two or more), so validation measures songs the model never heard, by composers it did.

Nothing here downloads anything: the packages are installed by `data_prep/real_music.py` (apt-get), and this
module reads what they put on disk. The audio is copied into a folder of the user's; it is never committed.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf


@dataclass(frozen=True)
class Source:
    package: str
    game: str
    music_dir: str  # where the package installs its music
    credits: str  # how composers are read: "etr-readme", "hedgewars-credits", "lincity-names" or "none"


SOURCES = (
    Source("extremetuxracer-data", "Extreme Tux Racer", "/usr/share/games/etr/music", "etr-readme"),
    Source("hedgewars-data", "Hedgewars", "/usr/share/games/hedgewars/Data/Music", "hedgewars-credits"),
    Source("lincity-ng-data", "LinCity-NG", "/usr/share/games/lincity-ng/music/default", "lincity-names"),
    Source("freedroidrpg-data", "FreedroidRPG", "/usr/share/freedroidrpg/data/sound/music", "none"),
)

HELD_OUT = frozenset(
    {
        "race1-jt.ogg",  # Joseph Toscano
        "spunkyrace-ks.ogg",  # K. Schroeder
        "snow.ogg",  # Jonatan Nilsson
        "Jungle.ogg",  # Valentin Kraevskiy
        "03 - Robert van Herk - Architectural Contemplations.ogg",
    }
)
"""Validation songs: one whole song of each composer with two or more credited songs (about 11 minutes)."""

GENRE_WORDS = {"blues": "blues"}
"""Title words that tell a genre ("City Blues"); other songs are genre "unknown" (game soundtracks name none)."""

_AUDIO = (".ogg", ".flac", ".wav", ".mp3")


@dataclass
class Song:
    source: Source
    path: Path  # the installed file
    artist: str  # "unknown" when the package names no composer
    genre: str
    seconds: float

    @property
    def rel(self) -> str:
        """Where the song sits in the set's audio folder: one folder per package."""
        return f"{self.source.package}/{self.path.name}"

    @property
    def split(self) -> str:
        return "val" if self.path.name in HELD_OUT else "train"


def _name(text: str) -> str:
    """A composer's name without the contact that follows it ("Name <mail>" -> "Name")."""
    return re.sub(r"\s*<[^>]*>\s*$", "", text).strip()


def etr_credits(music_dir: Path) -> dict[str, str]:
    """Extreme Tux Racer's `readme`: 'NAME <mail> composed:' followed by one indented file name a line."""
    readme, credits, composer = music_dir / "readme", {}, None
    if not readme.is_file():
        return credits
    for line in readme.read_text(errors="replace").splitlines():
        head = re.match(r"^(\S.*?)\s+composed:\s*$", line)
        if head:
            composer = _name(head.group(1))
        elif composer and line.strip().lower().endswith(_AUDIO) and line[:1].isspace():
            credits[line.strip().lower()] = composer
    return credits


def hedgewars_credits(music_dir: Path) -> dict[str, str]:
    """Hedgewars' `credits.txt`: 'File.ogg=NAME <url>' a line (file names matched without case)."""
    path, credits = music_dir / "credits.txt", {}
    if not path.is_file():
        return credits
    for line in path.read_text(errors="replace").splitlines():
        file, sep, who = line.partition("=")
        if sep and file.strip().lower().endswith(_AUDIO) and _name(who):
            credits[file.strip().lower()] = _name(who.split(" - ")[0].split('"')[0])
    return credits


def lincity_credit(file_name: str) -> str | None:
    """LinCity-NG's file names: 'NN - NAME - Title.ogg'."""
    parts = Path(file_name).stem.split(" - ")
    return parts[1].strip() if len(parts) == 3 and parts[0].strip().isdigit() else None


def composer(source: Source, file_name: str, credits: dict[str, str]) -> str | None:
    if source.credits == "lincity-names":
        return lincity_credit(file_name)
    return credits.get(file_name.lower())


def genre_of(file_name: str) -> str:
    words = re.findall(r"[a-z]+", Path(file_name).stem.lower())
    return next((GENRE_WORDS[w] for w in words if w in GENRE_WORDS), "unknown")


def find_songs(sources=SOURCES, uncredited: bool = False, root: Path = Path("/")) -> list[Song]:
    """Every installed song of `sources` with its composer (songs without one only with `uncredited`)."""
    songs = []
    for source in sources:
        music = root / source.music_dir.lstrip("/")
        if not music.is_dir():
            continue
        readers = {"etr-readme": etr_credits, "hedgewars-credits": hedgewars_credits}
        credits = readers[source.credits](music) if source.credits in readers else {}
        for path in sorted(p for p in music.iterdir() if p.suffix.lower() in _AUDIO and p.is_file()):
            artist = composer(source, path.name, credits)
            if artist is None and not uncredited:
                continue
            seconds = sf.info(str(path)).duration
            songs.append(Song(source, path, artist or "unknown", genre_of(path.name), seconds))
    return songs


def missing_packages(sources=SOURCES) -> list[str]:
    """Packages whose music folder is not on disk."""
    return [s.package for s in sources if not Path(s.music_dir).is_dir()]


def package_licence(package: str, root: Path = Path("/")) -> str:
    """The licence of a package's files (its copyright file's `Files: *` stanza), as Debian records it."""
    path = root / "usr/share/doc" / package / "copyright"
    if not path.is_file():
        return "unknown (no copyright file)"
    stanza_is_all = False
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("Files:"):
            stanza_is_all = line.split(":", 1)[1].strip() == "*"
        elif stanza_is_all and line.startswith("License:"):
            return line.split(":", 1)[1].strip()
    return f"see {path}"


def package_version(package: str) -> str:
    """The installed version (dpkg), or '' where dpkg does not know the package."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def write_set(songs: list[Song], out: Path) -> Path:
    """Copy the songs into `out/audio/<package>/` and write `out/metadata.csv` (one row per song, with its
    split, game and licence) and `out/LICENCES.txt`; returns the metadata path. Files already copied with
    the same size are kept (a rerun copies nothing)."""
    audio = out / "audio"
    licences = {s.source.package: package_licence(s.source.package) for s in songs}
    for song in songs:
        target = audio / song.rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.stat().st_size != song.path.stat().st_size:
            shutil.copyfile(song.path, target)
    meta = out / "metadata.csv"
    with meta.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "artist", "genre", "split", "album", "licence", "seconds"])
        for s in songs:
            writer.writerow(
                [s.rel, s.artist, s.genre, s.split, s.source.game, licences[s.source.package], f"{s.seconds:.1f}"]
            )
    lines = [f"{p} {package_version(p)}: {lic} (/usr/share/doc/{p}/copyright)" for p, lic in licences.items()]
    (out / "LICENCES.txt").write_text(
        "The audio under audio/ is copied from these Debian packages, under their licences:\n" + "\n".join(lines) + "\n"
    )
    return meta


def summary(songs: list[Song]) -> list[str]:
    """Lines saying what the set holds: minutes per split, composers and their song counts."""
    by_split = {sp: sum(s.seconds for s in songs if s.split == sp) / 60 for sp in ("train", "val")}
    artists: dict[str, list[Song]] = {}
    for s in songs:
        artists.setdefault(s.artist, []).append(s)
    lines = [
        f"{len(songs)} songs, {sum(by_split.values()):.1f} min: train {by_split['train']:.1f} min, "
        f"held out {by_split['val']:.1f} min ({sum(s.split == 'val' for s in songs)} whole songs); "
        f"{len(artists)} artists"
    ]
    for artist, mine in sorted(artists.items(), key=lambda kv: -sum(s.seconds for s in kv[1])):
        held = sum(s.split == "val" for s in mine)
        lines.append(
            f"  {artist}: {len(mine)} songs, {sum(s.seconds for s in mine) / 60:.1f} min"
            + (f" ({held} held out)" if held else "")
        )
    return lines
