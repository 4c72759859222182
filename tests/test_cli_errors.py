"""The CLI turns only the library's own user errors into one line; anything else keeps its traceback."""

from __future__ import annotations

import pytest

from jukebox_pl import cli
from jukebox_pl.errors import JukeboxError, MissingInputError, UserKeyError, UserValueError


def test_a_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["train", "vqvae", "--level", "top", "--run", str(tmp_path), "data.smaple_rate=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown config key 'data.smaple_rate'" in err[0] and "Traceback" not in err[0]


def test_a_missing_file_the_user_named_is_a_user_error(tmp_path, capsys):
    assert cli.main(["decode", "--codes", str(tmp_path / "none.pt"), "--out", str(tmp_path), "--ckpt", "x.pt"]) == 2
    assert "none.pt" in capsys.readouterr().err


@pytest.mark.parametrize("error", [MemoryError("CUDA out of memory"), RuntimeError("boom"), KeyError("internal")])
def test_other_errors_propagate_with_their_traceback(monkeypatch, error):
    def broken(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "config", (cli.COMMANDS["config"][0], broken))
    with pytest.raises(type(error)):
        cli.main(["config"])


def test_user_error_classes_keep_their_builtin_bases():
    assert issubclass(UserValueError, ValueError) and issubclass(MissingInputError, FileNotFoundError)
    assert str(UserKeyError("level x is not loaded")) == "level x is not loaded"
    assert all(issubclass(c, JukeboxError) for c in (UserValueError, MissingInputError, UserKeyError))
