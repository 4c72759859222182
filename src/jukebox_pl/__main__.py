"""`python -m jukebox_pl ...` runs the `jukebox-pl` command."""

import sys

from jukebox_pl.cli import main

if __name__ == "__main__":
    sys.exit(main())
