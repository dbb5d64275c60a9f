"""Every argument of every command has help, and the help of one with a default names it."""
from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from xcnn.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # an alias would repeat a parser
                yield from _parsers(sub)


def test_every_argument_has_help_naming_its_default() -> None:
    parsers = list(_parsers(build_parser()))
    assert {p.prog for p in parsers} >= {"xcnn", "xcnn explain", "xcnn data coco", "xcnn data demo", "xcnn run",
                                         "xcnn report"}
    for parser in parsers:
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            where = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            text = parser._get_formatter()._expand_help(action) if action.help else ""  # %(default)s filled in
            assert text.strip(), f"{where} has no help"
            if action.default is not None:
                assert "default" in text, f"{where}: help does not give the default {action.default!r}"
                if not isinstance(action.default, bool):  # a flag's default reads as off/on, not False
                    assert str(action.default) in text, f"{where}: help does not give the default {action.default!r}"


def test_top_level_help_speaks_to_users(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for word in ("saliency maps", "xcnn explain", "xcnn data", "xcnn run", "xcnn report", "Example: xcnn explain"):
        assert word in out
