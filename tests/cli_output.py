"""What the CLI prints for a user's mistake: exactly one line on stderr, naming what it must name."""

from __future__ import annotations


def one_line_error(capsys, *names: str) -> str:
    """The CLI's stderr: exactly one line, no traceback, naming each of `names`, never inviting an unsafe load."""
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err and "weights_only=False" not in err, err
    for name in names:
        assert name in err, (name, err)
    return err
