"""What the CLI tests check of a command's output, shared by their modules."""

from __future__ import annotations

from click.testing import Result


def one_line_error(result: Result, code: int, *phrases: str) -> None:
    """The error contract: exit ``code``, one ``error:`` line on stderr (after the store header)
    naming every phrase, no traceback."""
    assert result.exit_code == code, result.output
    errors = [line for line in result.stderr.splitlines() if not line.startswith("store: ")]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    assert "Traceback" not in result.output
