# SPDX-License-Identifier: MIT
"""mbroker - a Python worker's side of mbroker, in the standard library.

Connects to mbrokerd over its Unix socket (SOCK_SEQPACKET, one JSON object
per record), attaches models through the read-only descriptor the broker
passes (SCM_RIGHTS) and maps them read-only, so every worker shares one
copy.  For safetensors models, ``Attachment.tensor(name)`` returns a numpy
array that views the mapping without copying (numpy is optional; without
it ``tensor_bytes`` gives a memoryview).  docs/protocol.md is the
protocol; include/mbroker.h the C library this mirrors.

A model may be a bundle, a directory of files: ``Attachment.members``
lists them (each mapped on its own), ``Attachment.member(path)`` finds
one, and tensors span every safetensors shard (through the bundle's
``*.safetensors.index.json`` when it has one).  ``attach(name,
keep_fds=True)`` also keeps each member's read-only descriptor, so that
code which opens files by path can be given ``member.path``
("/proc/self/fd/N") or ``model.member_dir()``, a directory of links laid
out like the bundle; all are let go at detach, ack and close.
``attach(name, populate=True)`` enters every page in the page tables
before it returns (MADV_POPULATE_READ), so the first pass over the
weights is as fast as the next ones.

    import mbroker
    with mbroker.connect() as client, client.attach("whisper") as model:
        weights = model.tensor("encoder.conv1.weight")
        ...
        for event in client.events():      # after select() on client
            if event.type == "replaced":
                model = client.follow_replace(model, event)
            elif event.type in ("unload", "shutdown"):
                client.ack()

The broker also sends a signal (SIGUSR1 by default) whose default action
ends the process: call ``mbroker.handle_unload_signal(client)`` to ack from
a handler, or ``handle_unload_signal(client, ack=False)`` to ignore it and
act on the events.

``connect(path, timeout=S)`` bounds the connect and hello, ``client.timeout``
each later round trip, and ``client.attach_wait(name, S)`` waits for a
model to become READY; past a bound they raise TimeoutError.  The broker
must run as this process's uid or root (or ``broker_uid=``, or
$MBROKER_BROKER_UID): anyone else serving the socket raises UntrustedBroker.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import json
import mmap
import os
import re
import select
import shutil
import signal
import socket
import stat
import struct
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

PROTOCOL_VERSION = 1
MAX_REPLY = 160 * 1024
# Most descriptors one message carries; a bundle's come 8 at a time.
FDS_PER_MESSAGE = 8
# A model's name: 1 to 64 of these, and not "." or "..".
_MODEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Most members of a bundle, and the longest member name in bytes.
MAX_MEMBERS = 256
MEMBER_NAME_MAX = 255
# Largest *.safetensors.index.json read, as libmbroker.
INDEX_MAX = 16 << 20
INDEX_SUFFIX = ".safetensors.index.json"
# mmap keeps a duplicate of the descriptor for each mapping unless told
# not to (Python 3.13): one more descriptor per member of a bundle.
_MMAP_NO_FD = {"trackfd": False} if sys.version_info >= (3, 13) else {}
# Linux 5.14's madvise that fills the page tables of a mapping; the mmap
# module names it from Python 3.13 on.
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)

_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "uint16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
    "BOOL": "bool", "F8_E4M3": "uint8", "F8_E5M2": "uint8",
}


class BrokerError(Exception):
    """The broker refused a request; ``code`` is its wire code."""

    def __init__(self, code: str, message: str, reply: Dict[str, Any]):
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message
        self.reply = reply


class BrokerLost(ConnectionError):
    """The connection to the broker closed; mappings stay valid."""


class UntrustedBroker(ConnectionError):
    """The socket is served by a process of another uid than expected (own
    uid or root, or the one given): it is refused before anything is sent."""

    def __init__(self, path: str, uid: int, pid: int, expected: str):
        super().__init__(f"{path} is served by uid {uid} (pid {pid}), "
                         f"not by {expected}")
        self.uid = uid
        self.pid = pid


class AttachCancelled(Exception):
    """An ack (from a signal handler) ran while attach waited for its reply:
    the new attachment was handed back at once, as the ack asked."""


@dataclass(frozen=True)
class Event:
    """An event from the broker: "unload" (one model), "replaced" (a new
    generation of one model serves: ``generation`` is the new one,
    ``old_generation`` the one to let go of; see Client.follow_replace),
    "shutdown", or "broker_lost"."""

    type: str
    model: Optional[str] = None
    generation: Optional[int] = None
    timeout_ms: Optional[int] = None
    old_generation: Optional[int] = None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: Tuple[int, ...]
    offset: int  # in its member
    nbytes: int
    member: int = 0  # the index of the member holding it


class Member:
    """One file of an attached model: a bundle's member (``name`` its path
    in the bundle) or, for a single file, the model itself (``name`` the
    model's).  ``data`` is a read-only memoryview of its mapping (empty
    for a 0-byte member); ``fd`` and ``path`` ("/proc/self/fd/N") its
    kept descriptor with keep_fds, else None.  Valid until the attachment
    is detached, acked or its client closes."""

    def __init__(self, name: str, format: str, size: int, checksum: int):
        self.name = name
        self.format = format
        self.size = size
        self.checksum = checksum
        self.data = memoryview(b"")
        self.fd: Optional[int] = None
        self._map: Optional[mmap.mmap] = None

    @property
    def path(self) -> Optional[str]:
        return None if self.fd is None else f"/proc/self/fd/{self.fd}"

    def _map_fd(self, fd: int, reply: Dict[str, Any],
                populate: bool = False) -> None:
        st = os.fstat(fd)
        # A segment is a regular file: a directory (whose size 0 is never
        # mapped) would lead member_dir's links out of their directory.
        if not stat.S_ISREG(st.st_mode) or st.st_size != self.size:
            raise BrokerError("protocol_error",
                              f"{self.name}: not a file of its size", reply)
        if self.size > 0:
            self._map = mmap.mmap(fd, self.size, flags=mmap.MAP_SHARED,
                                  prot=mmap.PROT_READ, **_MMAP_NO_FD)
            self.data = memoryview(self._map)
            if populate:
                self._populate()

    def _populate(self) -> None:
        """Enters every page of the mapping in the page tables; a kernel
        before 5.14 refuses the madvise (EINVAL): one read per page does
        the same there."""
        try:
            self._map.madvise(_MADV_POPULATE_READ)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            for off in range(0, self.size, mmap.PAGESIZE):
                self._map[off]

    def _release(self) -> None:
        try:
            self.data.release()
        except BufferError:
            pass  # numpy views still use it; unmapped when they go
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass
            self._map = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __repr__(self) -> str:
        return (f"Member({self.name!r}, {self.format!r}, size={self.size}, "
                f"fd={self.fd})")


def default_socket_path() -> str:
    """$MBROKER_SOCKET; for root /run/mbroker/default.sock; else
    $XDG_RUNTIME_DIR/mbroker/default.sock, else
    /run/user/<uid>/mbroker/default.sock when that directory is the user's
    own, else /tmp/mbroker-<uid>/default.sock: what the broker and mbctl
    use."""
    env = os.environ.get("MBROKER_SOCKET")
    if env:
        return env
    uid = os.getuid()
    if uid == 0:
        return "/run/mbroker/default.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):
        return os.path.join(runtime, "mbroker", "default.sock")
    run = f"/run/user/{uid}"
    try:
        st = os.lstat(run)
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
        return os.path.join(run, "mbroker", "default.sock")
    return f"/tmp/mbroker-{uid}/default.sock"


def _expected_uid(broker_uid: Optional[int]) -> Optional[int]:
    """The uid the broker may run as besides root: broker_uid, else
    $MBROKER_BROKER_UID, else None for our own."""
    if broker_uid is not None:
        return broker_uid
    env = os.environ.get("MBROKER_BROKER_UID", "")
    if not env:
        return None
    if not env.isdigit():
        raise ValueError(f"MBROKER_BROKER_UID is not a uid: {env!r}")
    return int(env)


class _Semaphore:
    """The broker's ack semaphore, opened by name through libc; posting it
    wakes the broker at once (the ack message is what counts)."""

    def __init__(self, name: str):
        self._libc = None
        self._sem = None
        for lib in (None, ctypes.util.find_library("pthread")):
            try:
                libc = ctypes.CDLL(lib, use_errno=True)
                libc.sem_open.restype = ctypes.c_void_p
                libc.sem_open.argtypes = [ctypes.c_char_p, ctypes.c_int]
                libc.sem_post.argtypes = [ctypes.c_void_p]
                libc.sem_close.argtypes = [ctypes.c_void_p]
            except (OSError, AttributeError):
                continue
            self._libc = libc
            break
        if self._libc is not None:
            self._sem = self._libc.sem_open(name.encode(), 0) or None

    def post(self) -> None:
        if self._sem is not None:
            self._libc.sem_post(self._sem)

    def close(self) -> None:
        if self._sem is not None:
            self._libc.sem_close(self._sem)
            self._sem = None


def _parse_safetensors(buf: memoryview) -> Dict[str, TensorInfo]:
    """The tensor table of a safetensors file the broker validated."""
    (hlen,) = struct.unpack_from("<Q", buf, 0)
    header = json.loads(bytes(buf[8:8 + hlen]))
    start = 8 + hlen
    tensors = {}
    for name, desc in header.items():
        if name == "__metadata__":
            continue
        begin, end = desc["data_offsets"]
        tensors[name] = TensorInfo(name, desc["dtype"], tuple(desc["shape"]),
                                   start + begin, end - begin)
    return tensors


def _member_name_valid(name: Any) -> bool:
    """Whether a bundle member's name is a path that stays inside the
    bundle (and the member directory): relative, at most MEMBER_NAME_MAX
    bytes, no empty, "." or ".." component, no control character."""
    if not isinstance(name, str):
        return False
    parts = name.split("/")
    return (0 < len(name.encode(errors="surrogatepass")) <= MEMBER_NAME_MAX
            and all(part not in ("", ".", "..") for part in parts)
            and not any(ord(ch) < 0x20 or ord(ch) == 0x7f for ch in name))


def _member_specs(reply: Dict[str, Any]) -> List[Member]:
    """The members an attach reply announces: a bundle's "members", or the
    single file as one member named after the model.  The model's name
    must be one (a single file's member_dir link is named after it); a
    bundle's names valid paths in strictly increasing bytewise order (so
    none twice)."""
    name = reply["name"]
    if not isinstance(name, str) or name in (".", "..") or \
            not _MODEL_NAME.fullmatch(name):
        raise BrokerError("protocol_error", "the model's name is no model "
                          "name", reply)
    if "members" not in reply:
        return [Member(reply["name"], reply["format"], reply["size"],
                       int(reply["checksum"], 16))]
    specs = reply["members"]
    if (not isinstance(specs, list) or not specs
            or len(specs) > MAX_MEMBERS
            or sum(m["size"] for m in specs) != reply["size"]):
        raise BrokerError("protocol_error", "members do not add up", reply)
    names = [m["name"] for m in specs]
    if not all(map(_member_name_valid, names)) or any(
            a.encode(errors="surrogatepass") >=
            b.encode(errors="surrogatepass")
            for a, b in zip(names, names[1:])):
        raise BrokerError("protocol_error", "member names are no paths in "
                          "order inside the bundle", reply)
    return [Member(m["name"], m["format"], m["size"],
                   int(m["checksum"], 16)) for m in specs]


class Attachment:
    """One attached model: its members' read-only mappings and, for
    safetensors members, their tensors.  ``data`` is a single file's
    mapping (None for a bundle: see ``members``).  Valid until detached,
    acked or the client closes."""

    def __init__(self, client: "Client", reply: Dict[str, Any],
                 fds: List[int], keep_fds: bool = False,
                 populate: bool = False):
        """Takes fds (one per member, in order) in every case."""
        self._client = client
        self.id: int = reply["attachment"]
        self.name: str = reply["name"]
        self.format: str = reply["format"]
        self.generation: int = reply["generation"]
        self.size: int = reply["size"]
        self.checksum: int = int(reply["checksum"], 16)
        self.keep_fds = keep_fds
        self.populate = populate
        self.bundle = "members" in reply
        self._dir: Optional[Tuple[str, weakref.finalize]] = None
        self._live = True
        self.members: List[Member] = []
        try:
            self.members = _member_specs(reply)
            if len(fds) != len(self.members):
                raise BrokerError("protocol_error",
                                  "descriptors do not match the members",
                                  reply)
            for member, fd in zip(self.members, fds):
                member._map_fd(fd, reply, populate)
            if keep_fds:
                for member, fd in zip(self.members, fds):
                    member.fd = fd
                fds = []
            self.tensors, self._weight_map = self._read_tensors(reply)
        except BaseException:
            self._release()
            raise
        finally:
            for fd in fds:
                os.close(fd)
        self.data: Optional[memoryview] = (
            None if self.bundle else self.members[0].data)

    def _read_tensors(self, reply: Dict[str, Any]):
        """The tensors of every safetensors member (members in order, names
        in order within each) and the weight map of the bundle's index,
        when it has one: only tensors it places are found then."""
        tables = {}
        for i, m in enumerate(self.members):
            if m.format == "safetensors":
                table = _parse_safetensors(m.data)
                tables[i] = table if i == 0 else {
                    n: dataclasses.replace(t, member=i)
                    for n, t in table.items()}
        weight_map: Optional[Dict[str, int]] = None
        for m in self.members if self.bundle else []:
            if "/" in m.name or not m.name.endswith(INDEX_SUFFIX) or \
                    m.name == INDEX_SUFFIX:
                continue
            weight_map = weight_map or {}
            for name, shard in self._read_index(m, tables, reply).items():
                weight_map.setdefault(name, shard)
        tensors: Dict[str, TensorInfo] = {}
        for i, table in tables.items():
            for name in sorted(table):
                if weight_map is None or weight_map.get(name) == i:
                    tensors.setdefault(name, table[name])
        return tensors, weight_map

    def _read_index(self, m: Member, tables: Dict[int, Any],
                    reply: Dict[str, Any]) -> Dict[str, int]:
        """An index member's weight_map, as tensor name -> member index."""
        def bad(why: str) -> BrokerError:
            return BrokerError("format_error", f"{m.name}: {why}", reply)
        if m.size > INDEX_MAX:
            raise bad(f"an index of {m.size} bytes is over the bound of "
                      f"{INDEX_MAX}")
        try:
            index = json.loads(bytes(m.data))
        except ValueError as e:
            raise bad(f"not a JSON index: {e}") from None
        if not isinstance(index, dict) or \
                not isinstance(index.get("weight_map"), dict):
            raise bad("no weight_map object")
        shards = {self.members[i].name: i for i in tables}
        placed = {}
        for name, shard in index["weight_map"].items():
            if not isinstance(shard, str) or shard not in shards:
                raise bad(f"the weight_map puts {name} in {shard}, which "
                          "is no safetensors member")
            placed[name] = shards[shard]
        return placed

    def member(self, name: str) -> Member:
        """The member called name (its path in the bundle); KeyError when
        there is none."""
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def fd(self) -> Optional[int]:
        """Member 0's kept descriptor (keep_fds), else None."""
        return self.members[0].fd if self.members else None

    @property
    def path(self) -> Optional[str]:
        """Member 0's "/proc/self/fd/N" (keep_fds), else None."""
        return self.members[0].path if self.members else None

    def member_dir(self) -> str:
        """A private directory (under $TMPDIR or /tmp, mode 0700) of one
        symlink per member at its path in the bundle (one named after the
        model for a single file), each to the member's /proc/self/fd/N:
        for code that wants a model directory.  Made once; removed at
        detach, ack and close.  Needs keep_fds (else OSError EBADF)."""
        if self.fd is None:
            raise OSError(errno.EBADF, "attached without keep_fds")
        if self._dir is None:
            root = tempfile.mkdtemp(prefix="mbroker.")
            # Also removed when the interpreter exits without a detach.
            self._dir = (root, weakref.finalize(self, shutil.rmtree, root,
                                                True))
            try:
                self._lay_out(root)
            except BaseException:
                # Not left half made for the next call to hand out.
                self._dir[1]()
                self._dir = None
                raise
        return self._dir[0]

    def _lay_out(self, root: str) -> None:
        """The links of member_dir under root."""
        for m in self.members:
            name = m.name if self.bundle else self.name
            parent = root
            for part in name.split("/")[:-1]:
                parent = os.path.join(parent, part)
                if not os.path.isdir(parent):
                    os.mkdir(parent, 0o700)
            os.symlink(m.path, os.path.join(root, name))

    def _tensor_view(self, name: str) -> Tuple[TensorInfo, memoryview]:
        if self._weight_map is not None and name not in self._weight_map:
            raise KeyError(name)
        t = self.tensors[name]
        return t, self.members[t.member].data

    def tensor_bytes(self, name: str) -> memoryview:
        """The bytes of a tensor, a view into its member's mapping (no
        copy).  KeyError when there is no such tensor."""
        t, data = self._tensor_view(name)
        return data[t.offset:t.offset + t.nbytes]

    def tensor(self, name: str):
        """A numpy array viewing the tensor in its member's mapping: no
        copy, not writable.  BF16 comes as uint16 (numpy has no
        bfloat16)."""
        import numpy as np
        t, data = self._tensor_view(name)
        count = t.nbytes // np.dtype(_DTYPES[t.dtype]).itemsize
        array = np.frombuffer(data, dtype=_DTYPES[t.dtype], count=count,
                              offset=t.offset)
        return array.reshape(t.shape)

    def detach(self) -> None:
        """Tells the broker this worker let go.  Arrays still viewing the
        mapping keep it mapped until they are gone."""
        if not self._live:
            return
        self._release()
        self._client._forget(self)
        if not self._client.lost:
            try:
                self._client.request("detach", attachment=self.id)
            except BrokerError as e:
                if e.code != "not_attached":
                    raise

    def _release(self) -> None:
        """Unmaps every member, closes the kept descriptors and removes the
        member directory."""
        self._live = False
        for m in self.members:
            m._release()
        if self._dir is not None:
            self._dir[1]()
            self._dir = None

    def __enter__(self) -> "Attachment":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()


class Client:
    """A connection to mbrokerd.  Not thread-safe; one per process.

    ``timeout`` (seconds) bounds the connect and hello; afterwards the
    ``timeout`` attribute bounds each round trip (None: no bound), past
    which TimeoutError is raised and the late reply is dropped when it
    comes.  ``broker_uid`` is the uid the broker may run as besides root
    (default: $MBROKER_BROKER_UID, else this process's own)."""

    _CONNECT_RETRY = 0.01

    def __init__(self, path: Optional[str] = None, role: str = "worker",
                 timeout: Optional[float] = None,
                 broker_uid: Optional[int] = None):
        self.path = path or default_socket_path()
        self.lost = False
        self.timeout: Optional[float] = None
        self._next_id = 0
        self._acks = 0
        self._sem: Optional[_Semaphore] = None
        self._events: List[Event] = []
        self._attachments: List[Attachment] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._pending = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._epoll = select.epoll()
        try:
            self._sock.setblocking(False)
            self._epoll.register(self._sock, select.EPOLLIN)
            self._epoll.register(self._pending, select.EPOLLIN)
            deadline = self._deadline(timeout)
            self._connect(deadline)
            self._check_peer(broker_uid)
            self.hello, _ = self._call("hello", {"version": PROTOCOL_VERSION,
                                                 "role": role}, deadline)
            if isinstance(self.hello.get("ack_semaphore"), str):
                self._sem = _Semaphore(self.hello["ack_semaphore"])
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _deadline(timeout: Optional[float]) -> Optional[float]:
        return None if timeout is None else time.monotonic() + timeout

    def _connect(self, deadline: Optional[float]) -> None:
        """Connects, retrying while the broker's backlog is full."""
        while True:
            try:
                self._sock.connect(self.path)
                return
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{self.path}: the broker accepts "
                                       "no connection") from None
                time.sleep(self._CONNECT_RETRY)

    def _check_peer(self, broker_uid: Optional[int]) -> None:
        """Refuses a socket served by anyone but root or the expected uid:
        anyone could have bound it first."""
        expected = _expected_uid(broker_uid)
        pid, uid, _ = struct.unpack("iII", self._sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("iII")))
        if expected is not None:
            if uid not in (0, expected):
                raise UntrustedBroker(self.path, uid, pid,
                                      f"uid {expected} or root")
        elif uid not in (0, os.getuid(), os.geteuid()):
            own = f"uid {os.geteuid()} or " if os.geteuid() else ""
            raise UntrustedBroker(self.path, uid, pid,
                                  f"{own}root (set MBROKER_BROKER_UID to "
                                  "trust it)")

    @property
    def attached(self) -> int:
        """How many attachments this client holds."""
        return len(self._attachments)

    def fileno(self) -> int:
        """Readable (for select/poll) whenever an event may be pending:
        one waiting in the socket, or one a request read on its way and
        queued.  An epoll instance: poll it, never read it."""
        return self._epoll.fileno()

    def _sync_pending(self) -> None:
        """Makes the eventfd say whether the queue holds an event."""
        try:
            if self._events:
                os.eventfd_write(self._pending, 1)
            else:
                os.eventfd_read(self._pending)
        except BlockingIOError:
            pass

    def _poll(self, events: int, deadline: Optional[float]) -> None:
        """Waits until the socket is ready for events, or the deadline."""
        poller = select.poll()
        poller.register(self._sock, events)
        while True:
            left = None if deadline is None else max(
                0.0, deadline - time.monotonic())
            if poller.poll(None if left is None else left * 1000):
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("no reply from the broker in time")

    def _recv(self, deadline: Optional[float] = None,
              blocking: bool = True) -> Tuple[Optional[dict], List[int]]:
        """One message and the descriptors that came with it (at most
        FDS_PER_MESSAGE: any more are closed)."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._sock, MAX_REPLY,
                                                  2 * FDS_PER_MESSAGE)
                break
            except BlockingIOError:
                if not blocking:
                    return None, []
                self._poll(select.POLLIN, deadline)
            except ConnectionResetError:
                data, fds = b"", []
                break
        _close_all(fds[FDS_PER_MESSAGE:])
        fds = fds[:FDS_PER_MESSAGE]
        if not data:
            _close_all(fds)
            self._lose()
            raise BrokerLost("connection to the broker lost")
        try:
            return json.loads(data), fds
        except ValueError:
            _close_all(fds)
            raise

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            self._events.append(Event("broker_lost"))
            self._sync_pending()

    def _take_event(self, msg: dict) -> bool:
        if "event" not in msg:
            return False
        self._events.append(Event(msg["event"], msg.get("model"),
                                  msg.get("generation"),
                                  msg.get("timeout_ms"),
                                  msg.get("old_generation")))
        self._sync_pending()
        return True

    def _drop_stale(self, msg: dict, fds: List[int]) -> None:
        """A reply nobody waits for (its request timed out): an attachment
        it granted is handed back at once."""
        if not fds:
            return
        _close_all(fds)
        if msg.get("ok") and isinstance(msg.get("attachment"), int):
            self._next_id += 1
            try:
                self._sock.send(json.dumps(
                    {"op": "detach", "attachment": msg["attachment"],
                     "id": self._next_id}).encode(), socket.MSG_DONTWAIT)
            except OSError:
                pass

    def _send(self, request: dict, deadline: Optional[float]) -> None:
        data = json.dumps(request).encode()
        while True:
            try:
                self._sock.send(data)
                return
            except BlockingIOError:
                self._poll(select.POLLOUT, deadline)
            except (BrokenPipeError, ConnectionResetError):
                self._lose()
                raise BrokerLost("connection to the broker lost") from None

    def _call(self, op: str, fields: Dict[str, Any],
              deadline: Optional[float] = None) -> Tuple[dict, List[int]]:
        """Sends a request and waits for its reply; returns it with the
        descriptors that came with it, which the caller closes."""
        if self.lost:
            raise BrokerLost("connection to the broker lost")
        if deadline is None:
            deadline = self._deadline(self.timeout)
        self._next_id += 1
        want = self._next_id
        self._send(dict(fields, op=op, id=want), deadline)
        while True:
            msg, fds = self._recv(deadline)
            if self._take_event(msg):
                _close_all(fds)
                continue
            rid = msg.get("id")
            if rid == want or (rid is None and msg.get("ok") is False):
                break
            self._drop_stale(msg, fds)
        if not msg.get("ok"):
            _close_all(fds)
            err = msg.get("error", {})
            raise BrokerError(err.get("code", "?"), err.get("message", ""),
                              msg)
        return msg, fds

    def request(self, op: str, **fields: Any) -> Dict[str, Any]:
        """Sends one request and returns the broker's reply; raises
        BrokerError when it says no, TimeoutError past ``timeout``."""
        reply, fds = self._call(op, fields)
        _close_all(fds)
        return reply

    def attach(self, name: str, keep_fds: bool = False,
               populate: bool = False) -> Attachment:
        """Maps a READY model read-only, every member of a bundle.  With
        keep_fds each member's read-only descriptor stays open (see
        Member.fd, Member.path, Attachment.member_dir) until detach, ack
        or close.  With populate every page is in the page tables when it
        returns, so the first pass takes no page fault (the attach takes
        that time instead).  Raises AttachCancelled when an ack ran (in a
        signal handler) while it waited for the reply."""
        return self._attach(name, None, keep_fds, populate)

    def _descriptors(self, reply: Dict[str, Any], fds: List[int],
                     deadline: Optional[float]) -> List[int]:
        """Every member's descriptor: a single file's one, or a bundle's
        first page and the rest asked for 8 at a time.  Takes fds."""
        if "members" not in reply:
            _close_all(fds[1:])
            if not fds:
                raise BrokerError("protocol_error", "no descriptor", reply)
            return fds[:1]
        want, given = len(reply["members"]), reply.get("descriptors", {})
        try:
            if given.get("from") != 0 or given.get("count") != len(fds) \
                    or not fds:
                raise BrokerError("protocol_error",
                                  "descriptors do not match", reply)
            while len(fds) < want:
                page, more = self._call("members", {
                    "attachment": reply["attachment"], "from": len(fds)},
                    deadline)
                if (page.get("attachment") != reply["attachment"]
                        or page.get("from") != len(fds) or not more
                        or page.get("count") != len(more)
                        or len(fds) + len(more) > want):
                    _close_all(more)
                    raise BrokerError("protocol_error",
                                      "members page does not match", page)
                fds += more
        except BaseException:
            _close_all(fds)
            raise
        return fds

    def _attach(self, name: str, deadline: Optional[float],
                keep_fds: bool = False, populate: bool = False) -> Attachment:
        acks = self._acks
        reply, fds = self._call("attach", {"name": name}, deadline)
        try:
            fds = self._descriptors(reply, fds, deadline)
            att = Attachment(self, reply, fds, keep_fds, populate)
        except Exception:
            # The broker counts the attachment: hand it back, as
            # libmbroker does.
            self._give_back(reply)
            raise
        self._attachments.append(att)
        if self._acks != acks:
            # The ack let go of what was attached then, not of this one.
            att.detach()
            raise AttachCancelled(f"an ack during the attach of {name} "
                                  "let it go")
        return att

    def _give_back(self, reply: Dict[str, Any]) -> None:
        """Detaches an attachment the broker granted but this client could
        not use; a refusal or a lost connection is no matter then."""
        if self.lost or not isinstance(reply.get("attachment"), int):
            return
        try:
            self.request("detach", attachment=reply["attachment"])
        except (BrokerError, OSError, TimeoutError):
            pass

    def attach_wait(self, name: str, timeout: Optional[float],
                    keep_fds: bool = False,
                    populate: bool = False) -> Attachment:
        """attach() that waits up to timeout seconds (None: no bound) for a
        model called name to be READY, asking again while the broker says
        not_ready or unknown_model; then raises the last BrokerError (or
        TimeoutError when the broker did not answer in time)."""
        deadline = self._deadline(timeout)
        step = 0.005
        while True:
            each = self._deadline(self.timeout)
            if each is None or (deadline is not None and deadline < each):
                each = deadline
            try:
                return self._attach(name, each, keep_fds, populate)
            except BrokerError as e:
                if e.code not in ("not_ready", "unknown_model"):
                    raise
                left = (step if deadline is None
                        else deadline - time.monotonic())
                time.sleep(max(0.0, min(left, step)))
                if deadline is not None and left <= step:
                    raise
                step = min(step * 2, 0.1)

    def follow_replace(self, att: Attachment, event: Event) -> Attachment:
        """Follows a "replaced" event: when att is an attachment of
        event.model older than event.generation, attaches the model again
        and only then detaches att, so the worker never holds nothing;
        returns the new Attachment.  Returns att itself when the event does
        not concern it.  When the new attach fails its error is raised and
        att is left as it was, still mapped: the old generation stays
        readable until the broker's drain deadline.  Once it has moved,
        take tensors from the new Attachment (numpy arrays still viewing
        the old one keep its pages mapped until they are gone)."""
        if (event.type != "replaced" or att.name != event.model
                or event.generation is None
                or att.generation >= event.generation):
            return att
        new = self.attach(event.model, keep_fds=att.keep_fds,
                          populate=att.populate)
        try:
            att.detach()
        except (BrokerError, OSError, TimeoutError):
            pass  # the broker drops it at its deadline or our close
        return new

    def _forget(self, att: Attachment) -> None:
        if att in self._attachments:
            self._attachments.remove(att)

    def events(self) -> Iterator[Event]:
        """The pending events, without blocking."""
        while True:
            if not self._events and not self.lost:
                try:
                    msg, fds = self._recv(blocking=False)
                except BrokerLost:
                    msg, fds = None, []
                if msg is not None:
                    if not self._take_event(msg):
                        self._drop_stale(msg, fds)
                    else:
                        _close_all(fds)
                    continue
            if not self._events:
                self._sync_pending()  # a forked sibling may have set it
                return
            event = self._events.pop(0)
            if not self._events:
                self._sync_pending()
            yield event

    def ack(self) -> None:
        """Lets go of every attachment (mappings, kept descriptors, member
        directories), tells the broker so (what it waits for after an
        unload or shutdown event) and posts its ack semaphore to wake it
        at once.  Safe to call from a signal handler: one send,
        no reply awaited; an attach it interrupts is undone.  A mapping
        that numpy arrays still view stays mapped until they are gone."""
        self._acks += 1
        for att in list(self._attachments):
            att._release()
        self._attachments.clear()
        if not self.lost:
            try:
                self._sock.send(b'{"id":0,"op":"ack"}', socket.MSG_DONTWAIT)
            except OSError:
                pass
        if self._sem is not None:
            self._sem.post()

    def close(self) -> None:
        for att in list(self._attachments):
            att._release()
        self._attachments.clear()
        if self._sem is not None:
            self._sem.close()
        self._sock.close()
        self._epoll.close()
        if self._pending >= 0:
            os.close(self._pending)
            self._pending = -1

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _close_all(fds: List[int]) -> None:
    for fd in fds:
        os.close(fd)


def handle_unload_signal(client: Client, ack: bool = True) -> None:
    """Installs a handler for the broker's unload signal (the number the
    hello reply gives, SIGUSR1 by default), whose default action would end
    the worker.  With ack, the handler acks at once (every attachment is
    let go, as mb_ack does); without, it does nothing and the worker acts
    on the events instead.  Nothing is installed unless this is called."""
    signum = client.hello.get("signal", signal.SIGUSR1)
    signal.signal(signum, (lambda s, f: client.ack()) if ack
                  else signal.SIG_IGN)


def connect(path: Optional[str] = None, timeout: Optional[float] = None,
            broker_uid: Optional[int] = None) -> Client:
    """Connects to the broker at path (default: default_socket_path()),
    within timeout seconds (None: no bound), checking that it runs as
    broker_uid or root (default: see Client)."""
    return Client(path, timeout=timeout, broker_uid=broker_uid)
