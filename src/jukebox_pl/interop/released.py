"""The reference's published weights by name: where each file lives, how big it is, which `--hps` imports it,
and which files the released sets share (`jukebox-pl download SET`).

Facts from openai/jukebox: `hparams.py` gives every file's URL (`REMOTE_PREFIX + 'jukebox/models/...'`, with
`REMOTE_PREFIX = 'https://openaipublic.azureedge.net/'` since its commit 08efbbc, "Update to CDN for faster
download"; before it, the same paths on the storage account behind that CDN,
`https://openaipublic.blob.core.windows.net/`) and `make_models.py`'s `MODELS` says that 5b, 5b_lyrics
and 1b_lyrics all use 5b's VQ-VAE and 5b's two upsamplers; only the top prior differs. Files are stored under
the same relative paths locally (`DIR/5b/vqvae.pth.tar`), so the three `prior_level_2.pth.tar` never collide.
"""

from __future__ import annotations

from dataclasses import dataclass

from jukebox_pl.errors import UserKeyError

# The storage account itself: Azure has been retiring its azureedge.net CDN fronts, and the reference's earlier
# URLs (before commit 08efbbc) named this origin directly. --base-url / JUKEBOX_PL_DOWNLOAD_URL name any other.
REFERENCE_URL = "https://openaipublic.blob.core.windows.net/jukebox/models/"
REFERENCE_CDN_URL = "https://openaipublic.azureedge.net/jukebox/models/"  # hparams.py's REMOTE_PREFIX today
URL_ENV = "JUKEBOX_PL_DOWNLOAD_URL"  # a mirror holding the same relative paths


@dataclass(frozen=True)
class ReleasedFile:
    """One published file. `size`/`sha256` are None where no published figure was found: the server's
    Content-Length / Content-Range total is then the size checked. `tensor_bytes` (the bytes of its tensors,
    summed from the released key lists in tests/fixtures/openai_jukebox/keys/released) is a floor: no complete
    file is smaller."""

    path: str  # relative to the base URL and to the download folder
    hps: str  # `import-openai --hps` name
    kind: str  # "vqvae" or "prior"
    params: int
    tensor_bytes: int
    size: int | None = None
    sha256: str | None = None

    @property
    def name(self) -> str:
        return self.path


# Sizes: 5b/prior_level_2.pth.tar is 10,288,727,721 bytes (checked with `stat -c %s ... -eq` before use by the
# AgentLODGE scripts, scripts/process_song.sh, which fetch this URL; it is its tensor bytes plus 196,521 bytes of
# pickle). No exact figure was found for the others: None (the server's total and the tensor bytes are checked).
# Digests: none is published by OpenAI; second-hand ones are not pinned (a wrong one would refuse a good file), so
# the sha256 of each file is recorded on its first download (SHA256SUMS) and verified from then on.
FILES: dict[str, ReleasedFile] = {
    f.path: f
    for f in (
        ReleasedFile("5b/vqvae.pth.tar", "vqvae", "vqvae", 1_485_763, 7_515_916),
        ReleasedFile("5b/prior_level_0.pth.tar", "upsampler_level_0", "prior", 981_298_176, 3_940_921_344),
        ReleasedFile("5b/prior_level_1.pth.tar", "upsampler_level_1", "prior", 981_298_176, 3_940_921_344),
        ReleasedFile("5b/prior_level_2.pth.tar", "5b", "prior", 5_060_452_800, 10_288_531_200, size=10_288_727_721),
        ReleasedFile("5b_lyrics/prior_level_2.pth.tar", "5b_lyrics", "prior", 5_640_506_800, 11_451_832_000),
        ReleasedFile("1b_lyrics/prior_level_2.pth.tar", "1b_lyrics", "prior", 942_643_200, 3_787_997_184),
    )
}  # fmt: skip

_SHARED = ("5b/vqvae.pth.tar", "5b/prior_level_0.pth.tar", "5b/prior_level_1.pth.tar")
SETS: dict[str, tuple[str, ...]] = {
    "5b_lyrics": (*_SHARED, "5b_lyrics/prior_level_2.pth.tar"),
    "5b": (*_SHARED, "5b/prior_level_2.pth.tar"),
    "1b_lyrics": (*_SHARED, "1b_lyrics/prior_level_2.pth.tar"),
    "vqvae": ("5b/vqvae.pth.tar",),
    "upsamplers": ("5b/prior_level_0.pth.tar", "5b/prior_level_1.pth.tar"),
}


def files_of(sets: list[str] | tuple[str, ...], table: dict[str, ReleasedFile] | None = None) -> list[ReleasedFile]:
    """The files the named sets need, each once (shared files are fetched once), in the order first named."""
    table = FILES if table is None else table
    paths: dict[str, None] = {}
    for name in sets:
        if name not in SETS:
            raise UserKeyError(f"unknown released set {name!r}: choose from {', '.join(SETS)}")
        paths.update(dict.fromkeys(SETS[name]))
    return [table[p] for p in paths]


def top_priors(files: list[ReleasedFile]) -> list[ReleasedFile]:
    """The top-level priors among `files` (one run folder holds one prior per level)."""
    return [f for f in files if f.path.endswith("prior_level_2.pth.tar")]
