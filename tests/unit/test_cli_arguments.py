"""The command line's parsing: where `--config` may stand, what a replay must be told, and an
event file that cannot be read. No servers: nothing here gets as far as a connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3_events_handler.entrypoints.cli import main, parser

CONFIG = Path("from-the-environment.yml")


@pytest.fixture(autouse=True)
def config_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIG_PATH", str(CONFIG))


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "x.yml", "consume"],
        ["consume", "--config", "x.yml"],
        ["dead-letters", "--config", "x.yml", "list"],
        ["dead-letters", "list", "--config", "x.yml"],
        ["--config", "other.yml", "check-config", "--config", "x.yml"],
    ],
)
def test_config_may_stand_before_or_after_the_command(argv: list[str]) -> None:
    assert parser().parse_args(argv).config == Path("x.yml")


def test_without_config_the_environment_says_where_it_is() -> None:
    assert parser().parse_args(["dead-letters", "list"]).config == CONFIG


def test_a_replay_takes_one_way_of_choosing(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["dead-letters", "replay", "--id", "a", "--id", "b", "--dry-run"])
    assert (args.ids, args.dry_run) == (["a", "b"], True)
    for argv in (["--all", "--reason", "x"], [], ["--reason", ""], ["--reason-regex", "("]):
        with pytest.raises(SystemExit) as exited:
            parser().parse_args(["dead-letters", "replay", *argv])
        assert exited.value.code == 2
    assert "not a regular expression" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--id", "a", "--limit", "3"], "--limit goes with --all, --reason or --reason-regex"),
        (["--all", "--limit", "0"], "must be 1 or more"),
        (["--all", "--limit", "ten"], "not a whole number"),
    ],
    ids=["limit with ids", "limit 0", "limit not a number"],
)
def test_a_limit_is_a_positive_number_and_not_for_ids(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["dead-letters", "replay", *argv])
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("name", ["missing.json", "."])
def test_an_event_file_that_cannot_be_read_is_one_line_and_2_before_anything_starts(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["process", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"s3-events-handler: cannot read {name}: ") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
