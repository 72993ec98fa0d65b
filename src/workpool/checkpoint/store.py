"""The checkpoint file itself: an SQLite database of finished chunks, and its side files.

::

    FILE            SQLite, application_id "WPJL", user_version = format version
      meta          key -> value: function, function_digest, accept_next, created, ...
      done          start | count | digest | results | side | checksum
                    one row per run of consecutive finished positions [start, start+count):
                    the digest of their input items, their results pickled as one list
                    or as the (list, []) pair a process worker sent (or the name of the
                    side file holding them; a long list of ints is one int64 block,
                    see ``int_lists``), and a CRC-32 of all of that; rows never overlap
      failed        position | error: items whose last attempt failed (they run again)
    FILE.d/         side files: results larger than SIDE_FILE_BYTES, one file per row
    FILE.lock       the lock of the call using FILE (see ``lock``)
    FILE.creating   a new FILE while ``create_journal`` builds it (then linked into place)

SQLite checks its own structure, not the values it stores: a byte flipped inside a
row's results (a bad disk sector, a stray write) would be unpickled as other results.
So each row carries a CRC-32 of its start, count, input digest and pickled results
(it catches every change confined to 32 consecutive bits, a flipped byte say, and
all but one in 4 billion others, at a fifth of the cost of a 64-bit BLAKE2 digest);
a row whose checksum does not match cannot be read, like one
that does not unpickle, and its positions run again. Format 1 had no checksum: a
format-1 file is read as it is (its rows unchecked) and becomes format 2 when a call
first writes results to it (see ``_add_checksums``).

Nothing here runs a thread or knows about calls: ``writer`` writes through a store,
``journal`` reads through another, each with its own connection.

Crash safety comes from SQLite in WAL mode: a process killed at any instant leaves a
database that opens with every committed row intact (see ``_tune`` for what an
operating-system crash may take back, and why). A side file is written under a
temporary name, flushed to disk and renamed, and its directory flushed, before the row
naming it is committed; files no row names (left by a crash) are removed when a call
next opens the file. A new file is built whole under another name and then given its
own, so a crash never leaves a half-made one (see ``create_journal``). On a network
file system, where SQLite's WAL cannot work (it needs memory shared between the
processes using the file), or wherever SQLite refuses WAL, the file uses a
rollback journal instead, and a warning says so once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import sqlite3
import stat
import struct
import sys
import time
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from workpool.errors import outside_workpool
from workpool.named_files import SQLITE_MAGIC, no_directory, tilde_hint

__all__ = [
    "FORMAT_VERSION",
    "LISTED_BYTES",
    "SIDE_FILE_BYTES",
    "JournalStore",
    "Row",
    "Summary",
    "check_one_name",
    "check_path",
    "check_usable",
    "check_writable",
    "create_journal",
    "network_filesystem",
    "positions",
    "remove_leftovers",
    "sqlite_errors",
    "sqlite_failure",
    "sync_new_journal",
    "this_python",
]

FORMAT_VERSION = 2  # 2: rows have a checksum
APPLICATION_ID = 0x57504A4C  # "WPJL": this SQLite file is a workpool journal
SIDE_FILE_BYTES = 1 << 20  # results pickled larger than this go to a side file
# Results pickled at most this large are read with their row's listing (a query for
# many rows); larger ones are read one row at a time (see JournalStore.load).
LISTED_BYTES = 16 << 10
BUSY_TIMEOUT_SECONDS = 30.0
# Pages of 64 KiB: a chunk's results are one blob, which SQLite stores as a chain of
# overflow pages; big pages make the chains short, so writing costs less CPU and
# reading a finished run back takes half the time it does with SQLite's 4 KiB.
PAGE_SIZE = 1 << 16
WAL_CHECKPOINT_BYTES = 1 << 20  # see _tune (SQLite's default is 1000 pages)

# The SQLite VFS to use; None is the platform's default. Tests name one that refuses
# WAL ("unix-none"), to see the fallback without a network file system at hand.
_VFS: str | None = None

# File systems on which WAL is unsafe (SQLite's shared-memory index cannot be shared
# between machines), by the names Linux gives them in /proc/self/mountinfo.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.rclone",
    }
)

_warned_rollback: set[str] = set()

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE done (
    start INTEGER PRIMARY KEY,
    count INTEGER NOT NULL CHECK (count > 0),
    digest BLOB NOT NULL,
    results BLOB,
    side TEXT,
    checksum INTEGER,
    CHECK ((results IS NULL) <> (side IS NULL))
);
CREATE TABLE failed (position INTEGER PRIMARY KEY, error TEXT NOT NULL);
"""


class Row(NamedTuple):
    """One journaled run of finished positions ``[start, start + size)``.

    ``JournalStore.load`` reads its results: from ``listed``, the pickled results
    when they are small enough to come with the row (``LISTED_BYTES``), else from the
    file (the ``results`` column, or the side file ``side`` names), and checks them
    against ``checksum`` (None: a row of a format-1 file, which has none).
    """

    start: int
    size: int
    digest: bytes
    side: str | None
    listed: bytes | None
    checksum: int | None = None


_ROW_HEAD = struct.Struct("<qq").pack


def positions(start: int, count: int) -> str:
    """Input positions ``[start, start + count)`` in words."""
    return f"position {start}" if count == 1 else f"positions {start}..{start + count - 1}"


def row_checksum(start: int, count: int, digest: bytes) -> int:
    """The CRC-32 of a row so far: its positions and input digest. Its results follow."""
    return zlib.crc32(digest, zlib.crc32(_ROW_HEAD(start, count)))


class Summary(NamedTuple):
    """What ``workpool checkpoint info`` reports."""

    path: str
    format_version: int
    journal_mode: str
    function: str | None
    function_digest: str | None
    accept_next: bool
    items_done: int
    rows: int
    ranges: list[tuple[int, int]]  # the done positions as [first, last] ranges
    failed: int
    side_files: int
    bytes_on_disk: int
    created: str | None
    workpool_version: str | None
    python: str | None


def check_path(path: str) -> None:
    """Refuse, naming the file, a path in a missing directory, or to what is not a file.

    A directory, and any other file that is not a regular one: opening a FIFO to read
    waits for a writer, and SQLite fails on a device only after making files beside it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    # One-argument OSErrors: their message is the whole message, path included.
    if not os.path.isdir(directory):
        error, why = no_directory(directory)
        raise error(f"checkpoint {path}: the directory {directory} {why}{tilde_hint(path)}")
    side_directory = path + ".d"
    if os.path.lexists(side_directory) and not os.path.isdir(side_directory):
        # Found only when the first large result is written (and then every result
        # after it was lost), or, once the file exists, by a bare NotADirectoryError.
        raise NotADirectoryError(
            f"checkpoint {path} keeps results larger than {SIDE_FILE_BYTES >> 20} MiB in "
            f"the directory {side_directory}, but that is not a directory: move it away, "
            "or give the checkpoint another path"
        )
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # no file yet (or one SQLite will say it cannot open)
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"checkpoint {path} is a directory; give the path of a file")
    if not stat.S_ISREG(mode):
        raise OSError(
            f"checkpoint {path} is not a regular file ({_file_kind(mode)}); give the path of a file"
        )


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "of another kind")


def check_usable(path: str) -> None:
    """Refuse, without opening or locking it, a path no checkpoint can be kept at.

    What ``JournalStore.open`` would refuse of the path itself: a missing directory, a
    directory, a file that is not an SQLite database, one this process may not write.
    """
    check_path(path)
    _check_header(path)
    check_writable(path)
    check_one_name(path)


def check_writable(path: str) -> None:
    """Refuse, naming the file, an existing checkpoint this process may not write.

    SQLite opens such a file read-only without a word and fails at the first write,
    which, in a call, comes after its first results: the refusal must come first.
    """
    if not os.path.exists(path) or os.access(path, os.W_OK):
        return
    if _on_read_only_file_system(path):
        code, why = errno.EROFS, "it is on a read-only file system"
    else:
        code, why = errno.EACCES, "it is read-only"
    raise OSError(
        code,
        f"checkpoint {path} cannot be written: {why}; a checkpoint records each result "
        "as it finishes: make it writable, or give another path",
    )


def check_one_name(path: str) -> None:
    """Refuse, naming the file, a checkpoint with more than one name (hard link).

    SQLite keeps a database's WAL beside the name it is opened by (and a checkpoint
    its lock and side files), so calls through two names would each miss what the
    other wrote, or write at once; SQLite calls a file with several links undefined.
    The temporary name ``create_journal`` links the file from is not counted (a call
    making the file removes it next, or the next call, if that one was killed).
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return
    names = status.st_nlink
    if names > 1:
        try:
            if os.path.samestat(status, os.stat(path + ".creating")):
                names -= 1
        except OSError:  # gone: a call making the file may have just removed it
            with contextlib.suppress(OSError):
                names = os.stat(path).st_nlink
    if names > 1:
        raise ValueError(
            f"checkpoint {path} has {names} names (hard links to one file); SQLite keeps "
            "its WAL beside the name a call opens, so calls through other names would miss "
            "or damage what this one wrote. It was left as it is: remove its other names, "
            "or give a copy of it"
        )


def _on_read_only_file_system(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def sqlite_failure(path: str, exc: sqlite3.Error) -> Exception:
    """The error to raise for ``exc``, an error SQLite gave on the checkpoint at ``path``.

    A damaged file (SQLite's "malformed" or "not a database") is a ``ValueError`` that
    says what to do, a file SQLite may not write a ``PermissionError``, anything else
    (a full disk, an I/O error) an ``OSError``; each names the file.
    """
    if type(exc) is sqlite3.DatabaseError:  # SQLITE_CORRUPT or SQLITE_NOTADB
        return damaged_file(path, f"damaged or not a workpool checkpoint ({exc})")
    if "readonly" in str(exc):  # SQLITE_READONLY, by its message on every Python version
        return PermissionError(errno.EACCES, f"checkpoint {path} cannot be written ({exc})")
    return OSError(f"checkpoint {path} cannot be used: {exc}")


def damaged_file(path: str, how: str) -> ValueError:
    """The error for the checkpoint at ``path``, whose structure is damaged as ``how`` says."""
    return ValueError(
        f"checkpoint {path} is {how}; it was left as it is: its results cannot be trusted, "
        f"so remove it (and {path}.d, if there is one) to start over"
    )


@contextlib.contextmanager
def sqlite_errors(path: str) -> Iterator[None]:
    """Raise SQLite's errors on the checkpoint at ``path`` as ``sqlite_failure`` says."""
    try:
        yield
    except sqlite3.Error as exc:
        raise sqlite_failure(path, exc) from exc


def this_python() -> str:
    """The Python running this process, as a journal's ``python`` names the one it is for."""
    return f"{sys.implementation.name} {'.'.join(map(str, sys.version_info[:3]))}"


def _check_header(path: str) -> None:
    """Refuse a file that is not an SQLite database before SQLite touches it."""
    try:
        with open(path, "rb") as file:
            header = file.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return
    if header and header != SQLITE_MAGIC:
        raise ValueError(
            f"checkpoint {path} is not a workpool checkpoint (not an SQLite database); "
            "it was left as it is: give the path of a new file or of a checkpoint"
        )


def _journal_mode_on_disk(path: str) -> str | None:
    """The journal mode "wal" if the file's header says so, else None (ask SQLite).

    A connection opened as immutable (see ``_connect_to_read``) reports every file's
    journal mode as "delete"; the header's read and write versions (bytes 18 and 19)
    are 2 for a WAL file.
    """
    try:
        with open(path, "rb") as file:
            header = file.read(20)
    except OSError:
        return None
    return "wal" if header[18:20] == b"\x02\x02" else None


def network_filesystem(path: str, mountinfo: str | None = None) -> str | None:
    """The type of the network file system holding ``path``, or None if local or unknown.

    Reads the mount table Linux publishes (``/proc/self/mountinfo``, or ``mountinfo``
    when given); the mount point that is the longest prefix of the path's directory is
    the one it lives on.
    """
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as file:
                mountinfo = file.read()
        except OSError:
            return None
    directory = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    best, best_type = "", None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 10 or "-" not in fields:
            continue
        mount_point = fields[4].replace("\\040", " ").replace("\\011", "\t")
        fs_type = fields[fields.index("-") + 1]
        inside = directory == mount_point or directory.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fs_type
    return best_type if best_type in NETWORK_FILESYSTEMS else None


def _connect_to_read(path: str) -> sqlite3.Connection:
    """A connection that only reads the file at ``path`` and leaves nothing beside it.

    SQLite removes a WAL file's ``-wal`` and ``-shm`` when its last connection closes,
    but only a connection that may write does: a read-only one leaves them behind. So a
    file this process may change is opened read-write (and only read). Another is
    opened as immutable (nothing is made beside it) while nothing says a call is
    writing it: no ``-wal`` (a call's connection keeps one while it is open) and no
    ``-journal``; else read-only, which reads what that call committed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    wal = os.path.isfile(path + "-wal")
    immutable = "mode=ro&immutable=1"
    if os.access(path, os.W_OK) and os.access(directory, os.W_OK):
        queries = ["mode=rw", "mode=ro"]
    elif wal or os.path.exists(path + "-journal"):
        queries = ["mode=ro"]  # a call is writing it: read what it has committed
    else:
        queries = [immutable, "mode=ro"]
    if not wal and immutable not in queries:
        queries.append(immutable)  # a directory where SQLite can make nothing
    for query in queries:
        connection = _connect(path, query)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException as exc:  # a damaged file too: let it go at once
            connection.close()
            if isinstance(exc, sqlite3.OperationalError) and query != queries[-1]:
                continue  # cannot open it so: try the next way
            raise
        return connection
    raise AssertionError("unreachable: the last query raises")


def _connect(path: str, query: str = "mode=rwc") -> sqlite3.Connection:
    if _VFS is not None:
        query += f"&vfs={_VFS}"
    # In a URI, "?" starts the query, "#" a fragment and "%" an escape: escape those.
    escaped = os.path.abspath(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    uri = "file:" + escaped + "?" + query
    # Autocommit (isolation_level=None): transactions are begun and committed here, by
    # name. One store is used by one thread at a time, not always the one that opened it.
    connection = sqlite3.connect(
        uri,
        uri=True,
        isolation_level=None,
        check_same_thread=False,
        timeout=BUSY_TIMEOUT_SECONDS,
    )
    return connection


def create_journal(path: str, meta: Mapping[str, str]) -> bool:
    """Make a new checkpoint at ``path``, with ``meta``; False if a file appeared there.

    The file is built under a temporary name (``FILE.creating``; the caller holds the
    lock, so the name is its own) and linked to ``path`` once whole, so a process
    killed at any moment leaves no file or a complete one, and a file someone else put
    at ``path`` meanwhile is never replaced. Nothing waits for the disk here (that
    would cost tens of milliseconds in flushes): ``sync_new_journal`` does it, before
    the first results are committed to the file; until then it holds nothing that a
    power cut could lose. Side files left by an earlier journal of that name go.
    """
    temporary = path + ".creating"
    remove_leftovers(path)
    _remove_side_directory(path + ".d")
    try:
        connection = _connect(temporary)
    except sqlite3.Error as exc:
        raise OSError(f"checkpoint {path} cannot be created: {exc}") from exc
    try:
        try:
            connection.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            connection.execute("PRAGMA synchronous = OFF")  # a file no one sees yet
            _choose_journal_mode(connection, path)
            _create(connection, meta)
        finally:
            connection.close()  # with WAL, the last connection folds the WAL into the file
    except sqlite3.Error as exc:  # the disk is full, say: SQLite only says "disk I/O error"
        remove_leftovers(path)
        raise OSError(f"checkpoint {path} cannot be created: {exc}") from exc
    try:
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if os.path.exists(path):
                return False
            os.rename(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return True


def remove_leftovers(path: str) -> None:
    """Remove what a process killed while making the journal at ``path`` left."""
    temporary = path + ".creating"
    for name in (temporary, temporary + "-wal", temporary + "-shm", temporary + "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def sync_new_journal(path: str) -> None:
    """Flush a file ``create_journal`` made, and its name, to disk.

    Call it before SQLite opens the file in this process: closing any descriptor of a
    file drops every POSIX lock the process holds on it, SQLite's included.
    """
    for name, flags in (
        (path, os.O_RDONLY),
        (os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY),
    ):
        fd = os.open(name, flags | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_side_directory(directory: str) -> None:
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
    with contextlib.suppress(OSError):
        os.rmdir(directory)


class JournalStore:
    """One connection to a checkpoint file, with the reads and writes the journal needs.

    Not thread-safe: one thread at a time. Opening validates the file and never
    changes a file that is not a journal of a format this version reads.
    """

    def __init__(
        self, path: str, connection: sqlite3.Connection, journal_mode: str, version: int
    ) -> None:
        self.path = path
        self.side_directory = path + ".d"
        self.journal_mode = journal_mode
        self._db = connection
        # Rows may lack a checksum only in a file that was format 1 once; in another
        # a missing one is damage (SQLite reads a NULL where a flipped byte of the
        # row's header says so).
        self._has_checksums = version >= 2
        self._unchecked_rows = version < 2 or self.meta("unchecked_rows") == "1"
        self._side_files_unsynced = False  # renamed into place, directory not yet flushed
        # Whether the failed table may hold rows (None: not looked yet); while it holds
        # none, journaling a chunk need not clear its positions there.
        self._failures: bool | None = None

    @classmethod
    def _opened(cls, path: str, connection: sqlite3.Connection, journal_mode: str) -> JournalStore:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        try:
            return cls(path, connection, journal_mode, version)
        except sqlite3.Error as exc:
            raise sqlite_failure(path, exc) from exc

    @classmethod
    def open(
        cls, path: str, *, readonly: bool = False, again: bool = False, upgrade: bool = False
    ) -> JournalStore:
        """Open (creating it unless ``readonly``) the checkpoint at ``path``.

        Raises ``FileNotFoundError`` / ``IsADirectoryError`` for a bad path, and
        ``ValueError`` for a file that is not a checkpoint or is of a newer format.
        ``again``: this process opened the file already, and it passed; its first bytes
        are not read again (see ``sync_new_journal`` for why a descriptor of our own
        must not be closed while SQLite holds the file). ``upgrade``: results will be
        written: a file of an older format is brought to this one first.
        """
        check_path(path)
        if readonly and not os.path.exists(path):
            raise FileNotFoundError(f"no checkpoint at {path}: the file does not exist")
        if not again:
            _check_header(path)
            if not readonly:
                check_writable(path)
                check_one_name(path)
        try:
            connection = _connect_to_read(path) if readonly else _connect(path)
        except sqlite3.Error as exc:
            raise sqlite_failure(path, exc) from exc
        try:
            new = _check_format(connection, path)
            if new and not readonly:  # an empty file: SQLite has not written a page yet
                connection.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            if readonly:
                if new:
                    raise ValueError(
                        f"checkpoint {path} is empty: not a checkpoint yet (or a call is "
                        "creating it right now)"
                    )
                mode = (
                    _journal_mode_on_disk(path)
                    or str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower()
                )
            else:
                mode = _choose_journal_mode(connection, path)
                _tune(connection, mode)
                if new:
                    _create(connection, {})
                elif upgrade:
                    _add_checksums(connection)
            return cls._opened(path, connection, mode)
        except BaseException:
            connection.close()
            raise

    def close(self) -> None:
        self._db.close()

    # --- meta ---------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, values: dict[str, str | None]) -> None:
        """Set (or, for None, remove) meta keys, in one transaction."""
        with self.transaction():
            for key, value in values.items():
                if value is None:
                    self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
                else:
                    self._db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
                    )

    # --- reading ------------------------------------------------------------------------

    def items_done(self) -> int:
        """How many positions the rows hold; ``ValueError`` if a row reads back broken.

        SQLite reads a page the file was cut inside of (a copy that ran out of room)
        as zeros, which make rows whose count and digest are NULL, where the schema
        allows none; it does not check that when it reads them (an integrity check
        would, reading the whole file). Such a row cannot be placed or checked: the
        file is refused as damaged, as SQLite refuses a file it finds broken. (``IS
        NULL`` would not do: SQLite takes it to be false on a column declared NOT NULL.
        Other types a damaged byte can make, ``rows_from`` refuses.)
        """
        total, broken = self._db.execute(
            "SELECT coalesce(sum(count), 0), "
            "coalesce(sum(typeof(count) = 'null' OR typeof(digest) = 'null'), 0) FROM done"
        ).fetchone()
        if broken:
            raise _broken_rows(self.path, broken)
        return int(total)

    def rows_from(self, start: int, limit: int) -> list[Row]:
        """Up to ``limit`` rows with a start at or after ``start``, in position order.

        ``ValueError`` if the table lists them out of order (a damaged b-tree, which
        SQLite reads without a word): a caller listing pages from the last start it
        saw would otherwise go back, and round, forever; or if a row's count or digest
        reads back as another type (a damaged byte saying which), as ``items_done``.
        """
        # length() of a value stored across overflow pages reads none of them.
        checksum = "checksum" if self._has_checksums else "NULL"
        cursor = self._db.execute(
            "SELECT start, count, digest, side, "
            f"CASE WHEN length(results) <= ? THEN results END, {checksum} "
            "FROM done WHERE start >= ? ORDER BY start LIMIT ?",
            (LISTED_BYTES, start, limit),
        )
        rows = [Row(*values) for values in cursor.fetchall()]
        previous = start - 1
        for row in rows:
            if row.start <= previous:
                raise _out_of_order(self.path)
            if type(row.size) is not int or type(row.digest) is not bytes:
                raise _broken_rows(self.path, 1)
            previous = row.start
        return rows

    def load(self, row: Row) -> list[Any]:
        """The results journaled in ``row``. ``ValueError`` names what cannot be read.

        The checksum is compared before anything is unpickled when the row's results
        came with it; results read from the file are checked as pickle reads them, and
        their values dropped if the sum then differs.
        """
        where = positions(row.start, row.size)
        damaged = ValueError(
            f"checkpoint {self.path}: the results of {where} are damaged (they do not "
            "match the checksum stored with them)"
        )
        if row.checksum is None and not self._unchecked_rows:
            raise damaged
        expected = row.checksum
        reader = _CheckedReader(None if expected is None else self._sum(row))
        try:
            if row.listed is not None:
                values = reader.loads(row.listed)  # summed before it is unpickled
            elif row.side is not None:
                with open(os.path.join(self.side_directory, row.side), "rb") as file:
                    values = reader.load(file.read)
            else:
                values = self._load_inline(row.start, reader)
            if type(values) is tuple:  # (values, errors) as a process worker pickled them
                values = values[0]
        except Exception as exc:
            if reader.complete and reader.checksum != expected:
                raise damaged from exc
            raise ValueError(
                f"checkpoint {self.path}: the results of {where} cannot be read "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if reader.complete and reader.checksum != expected:
            raise damaged
        if not isinstance(values, list) or len(values) != row.size:
            raise ValueError(f"checkpoint {self.path}: the results of {where} are damaged")
        return values

    @staticmethod
    def _sum(row: Row, payload: bytes | memoryview = b"") -> int:
        return zlib.crc32(payload, row_checksum(row.start, row.size, row.digest))

    def _load_inline(self, start: int, reader: _CheckedReader) -> Any:
        """Unpickle the ``results`` of the row at ``start``, too large to be listed.

        Read through a blob handle (Python 3.11+), pickle takes the data a frame (64
        KiB) at a time: no copy of the whole value is made, in SQLite or in Python.
        Those copies would cost more than the reading itself: each is memory the
        process has not touched yet, a page fault per 4 KiB, and the chunks a run
        journals grow larger as it goes, so the allocator rarely has the pages at hand.
        """
        if sys.version_info >= (3, 11) and _BLOB_HANDLES:
            with self._db.blobopen("done", "results", start, readonly=True) as blob:
                return reader.load(blob.read)
        found = self._db.execute("SELECT results FROM done WHERE start = ?", (start,))
        (payload,) = found.fetchone() or (None,)
        if payload is None:
            raise LookupError("the row is gone")
        return reader.loads(payload)

    def summary(self) -> Summary:
        self.items_done()  # refuses rows read back broken
        ranges: list[tuple[int, int]] = []
        rows = 0
        previous = -1
        for start, count in self._db.execute("SELECT start, count FROM done ORDER BY start"):
            if start <= previous:
                raise _out_of_order(self.path)
            previous = start
            rows += 1
            if ranges and ranges[-1][1] + 1 == start:
                ranges[-1] = (ranges[-1][0], start + count - 1)
            else:
                ranges.append((start, start + count - 1))
        failed = int(self._db.execute("SELECT count(*) FROM failed").fetchone()[0])
        side_files = int(
            self._db.execute("SELECT count(*) FROM done WHERE side IS NOT NULL").fetchone()[0]
        )
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        return Summary(
            path=self.path,
            format_version=version,
            journal_mode=self.journal_mode,
            function=self.meta("function"),
            function_digest=self.meta("function_digest"),
            accept_next=self.meta("accept_next") == "1",
            items_done=sum(last - first + 1 for first, last in ranges),
            rows=rows,
            ranges=ranges,
            failed=failed,
            side_files=side_files,
            bytes_on_disk=self.bytes_on_disk(),
            created=self.meta("created"),
            workpool_version=self.meta("workpool_version"),
            python=self.meta("python"),
        )

    def bytes_on_disk(self) -> int:
        total = 0
        for name in (self.path, self.path + "-wal", self.path + "-journal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(name)
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.side_directory):
                with contextlib.suppress(OSError):
                    total += entry.stat().st_size
        return total

    # --- writing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Any:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._db.execute("COMMIT")

    def rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def put_done(
        self, start: int, count: int, digest: bytes, payload: bytes | memoryview
    ) -> list[str]:
        """Journal positions ``[start, start + count)`` as done (inside a transaction).

        A row overlapping them is replaced (it happens only when a shorter input left
        a journaled chunk unverifiable, and those positions ran again). Returns the
        side files of replaced rows, to remove once the transaction is committed.
        """
        end = start + count
        db = self._db
        stale: list[tuple[int, str | None]] = []
        # Rows never overlap, so the last one starting before ``end`` ends last among
        # them: if it ends by ``start``, no row holds any of these positions (the
        # usual case, found with one look-up that reads no results).
        last = db.execute(
            "SELECT start, count FROM done WHERE start < ? ORDER BY start DESC LIMIT 1", (end,)
        ).fetchone()
        if last is not None and last[0] + last[1] > start:
            stale = db.execute(
                "SELECT start, side FROM done WHERE start >= ? AND start < ?", (start, end)
            ).fetchall()
            before = db.execute(
                "SELECT start, count, side FROM done WHERE start < ? ORDER BY start DESC LIMIT 1",
                (start,),
            ).fetchone()
            if before is not None and before[0] + before[1] > start:
                stale.append((before[0], before[2]))
            for old_start, _ in stale:
                db.execute("DELETE FROM done WHERE start = ?", (old_start,))
        checksum = zlib.crc32(payload, row_checksum(start, count, digest))
        if len(payload) > SIDE_FILE_BYTES:
            side = self._write_side_file(start, count, payload)
            db.execute(
                "INSERT INTO done (start, count, digest, side, checksum) VALUES (?, ?, ?, ?, ?)",
                (start, count, digest, side, checksum),
            )
        else:
            db.execute(
                "INSERT INTO done (start, count, digest, results, checksum) VALUES (?, ?, ?, ?, ?)",
                (start, count, digest, payload, checksum),
            )
        if self._failures is None:
            self._failures = db.execute("SELECT 1 FROM failed LIMIT 1").fetchone() is not None
        if self._failures:
            db.execute("DELETE FROM failed WHERE position >= ? AND position < ?", (start, end))
        return [side for _, side in stale if side is not None]

    def put_failed(self, position: int, error: str) -> None:
        """Note that ``position`` failed (inside a transaction), unless it is done."""
        self._db.execute(
            "INSERT OR REPLACE INTO failed (position, error) SELECT ?, ? WHERE NOT EXISTS ("
            "SELECT 1 FROM (SELECT start, count FROM done WHERE start <= ? "
            "ORDER BY start DESC LIMIT 1) WHERE start + count > ?)",
            (position, error, position, position),
        )
        self._failures = True

    def _write_side_file(self, start: int, count: int, payload: bytes | memoryview) -> str:
        os.makedirs(self.side_directory, exist_ok=True)
        name = f"{start}-{count}.{os.urandom(4).hex()}.pickle"
        temporary = os.path.join(self.side_directory, f".tmp-{name}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, os.path.join(self.side_directory, name))
        self._side_files_unsynced = True
        return name

    def sync_side_directory(self) -> None:
        """Make renames in the side directory durable (before committing rows naming them)."""
        if not self._side_files_unsynced:
            return
        fd = os.open(self.side_directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._side_files_unsynced = False

    def remove_side_files(self, names: Iterable[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.side_directory, name))

    def sweep_side_files(self) -> None:
        """Remove side files that no row names: left by a crash, or by a replaced row."""
        try:
            present = os.listdir(self.side_directory)
        except FileNotFoundError:
            return
        named = {
            side for (side,) in self._db.execute("SELECT side FROM done WHERE side IS NOT NULL")
        }
        self.remove_side_files(name for name in present if name not in named)
        if not named:
            with contextlib.suppress(OSError):
                os.rmdir(self.side_directory)

    def clear(self) -> None:
        """Remove every result, failure and the function's identity; shrink the file."""
        with self.transaction():
            self._db.execute("DELETE FROM done")
            self._db.execute("DELETE FROM failed")
            self._db.execute(
                "DELETE FROM meta WHERE key IN "
                "('function', 'function_digest', 'function_python', 'call', 'accept_next', "
                "'unchecked_rows')"
            )
        self.sweep_side_files()
        self._db.execute("VACUUM")
        if self.journal_mode == "wal":
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _out_of_order(path: str) -> ValueError:
    return damaged_file(path, "damaged (its table of results lists rows out of order)")


def _broken_rows(path: str, count: int) -> ValueError:
    rows = "a row" if count == 1 else f"{count} rows"
    return damaged_file(
        path,
        f"damaged ({rows} of its table of results read back with the count or digest "
        "missing or of another type: was it cut short?)",
    )


# Whether rows' results are unpickled as they are read from a blob handle (3.11+);
# else they are read whole, then unpickled. Tests turn it off to try the other way.
_BLOB_HANDLES = True


class _CheckedReader:
    """The file ``pickle.load`` reads a row's results from, summing what it reads.

    ``load(read)`` unpickles from ``read`` (a blob's, a side file's), then reads what
    pickle left (nothing, unless the row is damaged), even when unpickling failed:
    ``checksum`` is then the CRC-32 of the whole row (``complete``), when a start
    (the sum of the row's head) was given.
    """

    __slots__ = ("_read", "checksum", "complete")

    def __init__(self, start: int | None) -> None:
        self.checksum = start
        self.complete = False  # whether ``checksum`` covers all of the row's results
        self._read: Any = None

    def load(self, read: Any) -> Any:
        self._read = read
        try:
            return pickle.load(self)
        finally:  # pickle read all it wanted, or gave up: sum the rest (if it can be read)
            if self.checksum is not None:
                with contextlib.suppress(Exception):
                    self.read()
                    self.complete = True

    def loads(self, data: bytes) -> Any:
        """Unpickle ``data`` (read whole), summing it first."""
        if self.checksum is not None:
            self.checksum = zlib.crc32(data, self.checksum)
            self.complete = True
        return pickle.loads(data)

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._read(size)
        if self.checksum is not None:
            self.checksum = zlib.crc32(data, self.checksum)
        return data

    def readline(self) -> bytes:
        # Only opcodes of pickle protocols before 4 read lines, and journals are written
        # with the highest; such a pickle reads correctly all the same, a byte at a time.
        line = bytearray()
        while not line.endswith(b"\n"):
            byte = self.read(1)
            if not byte:
                break
            line += byte
        return bytes(line)


def _tune(connection: sqlite3.Connection, journal_mode: str) -> None:
    """Durability settings, per connection (SQLite does not keep them in the file).

    With WAL, ``synchronous=NORMAL`` writes a commit to the WAL without waiting for
    the disk: it survives the death of the process at once (the data is in the
    operating system's hands), and the file can never be left inconsistent; only an
    operating-system crash or a power cut may take back the commits since the last
    checkpoint, which is flushed to disk. A checkpoint every WAL_CHECKPOINT_BYTES
    keeps that window, and the work left for closing, small. A rollback journal is only
    safe with ``FULL``.
    """
    if journal_mode == "wal":
        connection.execute("PRAGMA synchronous=NORMAL")
        page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
        pages = max(1, WAL_CHECKPOINT_BYTES // page_size)
        connection.execute(f"PRAGMA wal_autocheckpoint={pages}")
    else:
        connection.execute("PRAGMA synchronous=FULL")


def _check_format(connection: sqlite3.Connection, path: str) -> bool:
    """Whether the file is new (empty); raise ``ValueError`` unless it is a journal we read."""
    try:
        application_id = int(connection.execute("PRAGMA application_id").fetchone()[0])
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        tables = int(connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
    except sqlite3.Error as exc:
        raise sqlite_failure(path, exc) from exc
    if application_id == 0 and version == 0 and tables == 0:
        return True
    if application_id != APPLICATION_ID:
        raise ValueError(
            f"checkpoint {path} is not a workpool checkpoint (an SQLite database of "
            "something else); it was left as it is: give the path of a new file or of a "
            "checkpoint"
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path} was written by a newer workpool (format {version}; this "
            f"version reads format {FORMAT_VERSION} and older); it was left as it is"
        )
    if version < 1:
        raise ValueError(f"checkpoint {path} is damaged (no format version); it was left as it is")
    return False


def _add_checksums(connection: sqlite3.Connection) -> None:
    """Bring a format-1 file to format 2, in one commit: rows get a checksum column.

    Rows already there keep none (the file notes that it has such rows, if it has
    any); they are read unchecked, as before. A workpool that reads only format 1
    refuses the file after this, naming the format, so no row is ever written without
    a checksum.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        if version == 1:
            connection.execute("ALTER TABLE done ADD COLUMN checksum INTEGER")
            if connection.execute("SELECT 1 FROM done LIMIT 1").fetchone() is not None:
                connection.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('unchecked_rows', '1')"
                )
            connection.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _choose_journal_mode(connection: sqlite3.Connection, path: str) -> str:
    """WAL where it works; else a rollback journal, said once per file and process."""
    network = network_filesystem(path)
    if network is None:
        mode = str(connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        if mode == "wal":
            return "wal"
        reason = "SQLite refused WAL mode for it"
    else:
        reason = f"it is on a network file system ({network}), where WAL mode is unsafe"
    connection.execute("PRAGMA journal_mode=DELETE")
    key = os.path.abspath(path)
    if key not in _warned_rollback:
        _warned_rollback.add(key)
        warnings.warn(
            f"checkpoint {path}: {reason}; it uses a rollback journal instead (commits "
            "cost more, crash safety is the same)",
            RuntimeWarning,
            stacklevel=outside_workpool(),
        )
    return "delete"


def _create(connection: sqlite3.Connection, meta: Mapping[str, str]) -> None:
    """The schema, the format's marks and ``meta`` (plus what made the file), in one commit."""
    # Looked up, not imported: this module sits below the package's public face.
    workpool_version = str(getattr(sys.modules.get("workpool"), "__version__", "unknown"))

    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)
        connection.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("created", time.strftime("%Y-%m-%d %H:%M:%S %z")),
                ("workpool_version", workpool_version),
                ("python", this_python()),
                *meta.items(),
            ],
        )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
