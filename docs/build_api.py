"""Build the API pages of jukebox-pl's public names with pdoc (`make docs`): `python docs/build_api.py [OUT]`.

The public API is what `jukebox_pl` exports (`jukebox_pl._EXPORTS`, imported lazily). Each name gets the page of
the module that defines it (`OUT/jukebox_pl/vqvae/model.html#VQVAELevelModel`), and `OUT/jukebox_pl.html` lists
them all. The pages are built from the docstrings, so a class whose docstring is missing shows up in
`tests/test_api_docs.py`, which runs this in CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pdoc
import pdoc.render

import jukebox_pl

DEFAULT_OUT = Path(__file__).resolve().parent / "api"


def public_modules() -> list[str]:
    """The modules that define the exported names, in a stable order."""
    return sorted(set(jukebox_pl._EXPORTS.values()))


def build(out: Path = DEFAULT_OUT) -> Path:
    """Write the HTML pages into `out` (the package page and one page per module defining a public name)."""
    out = Path(out)
    pdoc.render.configure(docformat="markdown", show_source=False, search=True)
    # the package page only, not every submodule: `!` drops the submodules that walking the package added
    pdoc.pdoc("jukebox_pl", r"!jukebox_pl\.", *public_modules(), output_directory=out)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT))
