"""The rename race of contract §4.4, on a double of ftplib's session: what one upload does
whatever another writer of the same sidecar does between any two of its commands.

ftplib is not ours and a real server adds nothing to these rules, so the session is an
autospec of `ftplib.FTP` answering from a dict of the folder's files; the interleavings a
real server can only be held into are one line each here. The same rules against a real
server: tests/integration/test_ftp.py.
"""

from __future__ import annotations

import ftplib
import logging
import socket
from collections.abc import Callable
from unittest.mock import MagicMock, call

import pytest
from pytest_mock import MockerFixture

from s3_events_handler.adapters.ftp_upload import RENAME_PAUSES, put_in_place
from s3_events_handler.domain.errors import ServiceUnavailable

TEMPORARY = ".k98z0d4w1q.xml.0123abcd.part"
FINAL = "k98z0d4w1q.xml"
SIDECAR = b"<sidecar/>"  # every writer of one sidecar renders the same bytes

NO_SUCH_FILE = "550 No such file or directory."
FILE_EXISTS = "550 File exists."


class Folder:
    """The sidecar's folder on a transport server, behind an autospec of `ftplib.FTP`.

    `files` is what the folder holds; `meanwhile(command, action)` has another writer do
    `action` just before this upload's next `command` (STOR, RNFR, SIZE or DELE) reaches
    the server; `answer_next(command, reply)` has the server refuse it (an ftplib error) or
    the connection fail (an OSError).
    """

    def __init__(self, mocker: MockerFixture, *, renames_over: bool = True) -> None:
        self.files: dict[str, bytes] = {}
        self.renames_over = renames_over
        self._meanwhile: dict[str, list[Callable[[], object]]] = {}
        self._refusals: dict[str, list[Exception]] = {}
        self._mocker = mocker
        self.session: MagicMock = mocker.create_autospec(ftplib.FTP, instance=True)
        self.session.transfercmd.side_effect = self._store
        self.session.rename.side_effect = self._rename
        self.session.size.side_effect = self._size
        self.session.delete.side_effect = self._delete

    def meanwhile(self, command: str, action: Callable[[], object]) -> None:
        self._meanwhile.setdefault(command, []).append(action)

    def answer_next(self, command: str, reply: Exception, *, times: int = 1) -> None:
        self._refusals.setdefault(command, []).extend([reply] * times)

    def upload(self, sleeps: list[float]) -> None:
        put_in_place(self.session, TEMPORARY, FINAL, SIDECAR, sleep=sleeps.append)

    def _arrives(self, command: str) -> None:
        """What happens on the server before `command` is carried out."""
        actions = self._meanwhile.get(command)
        if actions:
            actions.pop(0)()
        refusals = self._refusals.get(command)
        if refusals:
            raise refusals.pop(0)

    def _store(self, command: str) -> socket.socket:
        name = command.removeprefix("STOR ")
        self._arrives("STOR")
        connection: MagicMock = self._mocker.create_autospec(socket.socket, instance=True)
        connection.__enter__.return_value = connection
        connection.sendall.side_effect = lambda data: self.files.__setitem__(name, data)
        return connection

    def _rename(self, source: str, target: str) -> str:
        self._arrives("RNFR")
        if source not in self.files:
            raise ftplib.error_perm(NO_SUCH_FILE)
        if target in self.files and not self.renames_over:
            raise ftplib.error_perm(FILE_EXISTS)
        self.files[target] = self.files.pop(source)
        return "250 Renaming ok."

    def _size(self, name: str) -> int:
        self._arrives("SIZE")
        if name not in self.files:
            raise ftplib.error_perm(NO_SUCH_FILE)
        return len(self.files[name])

    def _delete(self, name: str) -> str:
        self._arrives("DELE")
        if name not in self.files:
            raise ftplib.error_perm(NO_SUCH_FILE)
        del self.files[name]
        return "250 File removed."


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def folder(mocker: MockerFixture) -> Folder:
    return Folder(mocker)


@pytest.fixture
def refusing_folder(mocker: MockerFixture) -> Folder:
    """A server that refuses to rename over an existing file."""
    return Folder(mocker, renames_over=False)


def another_writer_places_the_sidecar(folder: Folder) -> Callable[[], object]:
    return lambda: folder.files.__setitem__(FINAL, SIDECAR)


def the_temporary_file_is_removed(folder: Folder) -> Callable[[], object]:
    return lambda: folder.files.pop(TEMPORARY)


def test_the_sidecar_is_stored_under_its_temporary_name_then_renamed(
    folder: Folder, sleeps: list[float]
) -> None:
    folder.upload(sleeps)

    assert folder.files == {FINAL: SIDECAR}
    assert folder.session.mock_calls == [
        call.transfercmd(f"STOR {TEMPORARY}"),
        call.voidresp(),
        call.rename(TEMPORARY, FINAL),
    ]
    assert sleeps == []


def test_a_refusal_over_an_existing_sidecar_deletes_it_only_while_this_copy_is_whole(
    refusing_folder: Folder, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    refusing_folder.files[FINAL] = SIDECAR  # left by an earlier attempt

    refusing_folder.upload(sleeps)

    assert refusing_folder.files == {FINAL: SIDECAR}
    assert refusing_folder.session.mock_calls == [
        call.transfercmd(f"STOR {TEMPORARY}"),
        call.voidresp(),
        call.rename(TEMPORARY, FINAL),
        call.size(TEMPORARY),  # this upload's copy is whole: whatever is deleted, it replaces
        call.size(FINAL),
        call.delete(FINAL),
        call.rename(TEMPORARY, FINAL),
    ]
    assert sleeps == [RENAME_PAUSES[0]]
    assert "refused to rename over k98z0d4w1q.xml" in caplog.text


def test_a_refusal_with_no_sidecar_in_the_way_deletes_nothing_and_tries_again(
    folder: Folder, sleeps: list[float]
) -> None:
    folder.answer_next("RNFR", ftplib.error_perm("550 Renaming refused."))

    folder.upload(sleeps)

    assert folder.files == {FINAL: SIDECAR}
    folder.session.delete.assert_not_called()
    assert sleeps == [RENAME_PAUSES[0]]


def test_a_busy_reply_is_tried_again_without_deleting_the_sidecar_in_place(
    folder: Folder, sleeps: list[float]
) -> None:
    folder.files[FINAL] = SIDECAR
    folder.answer_next("RNFR", ftplib.error_temp("450 Renaming busy, try again."))

    folder.upload(sleeps)

    assert folder.files == {FINAL: SIDECAR}
    folder.session.delete.assert_not_called()
    assert sleeps == [RENAME_PAUSES[0]]


def test_a_sidecar_another_writer_deleted_first_leaves_the_gap_to_the_next_try(
    refusing_folder: Folder, sleeps: list[float]
) -> None:
    refusing_folder.files[FINAL] = SIDECAR
    refusing_folder.meanwhile("DELE", lambda: refusing_folder.files.pop(FINAL))

    refusing_folder.upload(sleeps)

    assert refusing_folder.files == {FINAL: SIDECAR}
    assert refusing_folder.session.rename.call_count == 2


def test_a_writer_placing_its_copy_before_every_try_never_sees_the_final_name_left_empty(
    refusing_folder: Folder, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    """Another writer renames its copy into place just before each of this upload's tries,
    on a server that refuses to rename over it. Each delete is followed by a try, and the
    last try deletes nothing: the other's sidecar stays, and this upload counts it as done."""
    for _ in range(len(RENAME_PAUSES) + 1):
        refusing_folder.meanwhile("RNFR", another_writer_places_the_sidecar(refusing_folder))

    refusing_folder.upload(sleeps)

    assert refusing_folder.files == {FINAL: SIDECAR}
    deletes = refusing_folder.session.delete.call_args_list
    assert deletes == [call(FINAL)] * len(RENAME_PAUSES) + [call(TEMPORARY)]
    assert refusing_folder.session.rename.call_count == len(RENAME_PAUSES) + 1
    assert sleeps == list(RENAME_PAUSES)
    assert "put in place by another writer" in caplog.text


def test_a_vanished_temporary_file_with_the_sidecar_in_place_counts_as_done(
    folder: Folder, sleeps: list[float]
) -> None:
    def someone_renamed_it() -> None:  # another upload of the sidecar, with the same bytes
        folder.files[FINAL] = folder.files.pop(TEMPORARY)

    folder.meanwhile("RNFR", someone_renamed_it)

    folder.upload(sleeps)

    assert folder.files == {FINAL: SIDECAR}
    assert sleeps == []


def test_a_vanished_temporary_file_with_no_sidecar_in_place_is_worth_a_retry_later(
    folder: Folder, sleeps: list[float]
) -> None:
    folder.meanwhile("RNFR", the_temporary_file_is_removed(folder))

    with pytest.raises(ServiceUnavailable, match="vanished"):
        folder.upload(sleeps)

    assert folder.files == {}
    assert call(FINAL) not in folder.session.delete.call_args_list


def test_a_refusal_that_lasts_is_raised_after_a_few_short_tries_leaving_nothing(
    folder: Folder, sleeps: list[float]
) -> None:
    refusal = ftplib.error_perm("550 Renaming not allowed here.")
    folder.answer_next("RNFR", refusal, times=100)

    with pytest.raises(ftplib.error_perm) as raised:
        folder.upload(sleeps)

    assert raised.value is refusal
    assert folder.files == {}  # the temporary file removed
    assert folder.session.rename.call_count == len(RENAME_PAUSES) + 1
    assert sleeps == list(RENAME_PAUSES)
    assert sum(sleeps) < 1


@pytest.mark.parametrize(
    "reply",
    [ftplib.error_perm("530 Not logged in."), ftplib.error_temp("421 Closing connection.")],
    ids=["session-forgotten", "server-closing"],
)
def test_a_session_the_server_gave_up_stops_the_tries_for_a_reconnect(
    folder: Folder, sleeps: list[float], reply: ftplib.Error
) -> None:
    folder.answer_next("RNFR", reply)

    with pytest.raises(type(reply)):
        folder.upload(sleeps)

    assert folder.session.rename.call_count == 1
    assert sleeps == []
    assert call(FINAL) not in folder.session.delete.call_args_list


def test_a_refused_store_leaves_no_temporary_file(folder: Folder, sleeps: list[float]) -> None:
    folder.answer_next("STOR", ftplib.error_perm("553 Could not create file."))

    with pytest.raises(ftplib.error_perm, match="553"):
        folder.upload(sleeps)

    folder.session.delete.assert_called_once_with(TEMPORARY)
    folder.session.rename.assert_not_called()


def test_a_connection_lost_mid_store_leaves_the_temporary_file_to_the_reconnect(
    folder: Folder, sleeps: list[float]
) -> None:
    """Nothing can be removed over a dead connection: the reconnect writes under the same
    temporary name, replacing what is left."""
    folder.answer_next("STOR", ConnectionResetError(104, "Connection reset by peer"))

    with pytest.raises(ConnectionResetError):
        folder.upload(sleeps)

    folder.session.delete.assert_not_called()
    folder.session.rename.assert_not_called()


def test_nothing_is_logged_when_the_first_rename_succeeds(
    folder: Folder, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="s3_events_handler.adapters.ftp_upload")

    folder.upload(sleeps)

    assert caplog.records == []
