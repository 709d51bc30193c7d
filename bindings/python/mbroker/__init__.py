# SPDX-License-Identifier: MIT
"""mbroker - a Python worker's side of mbroker, in the standard library.

Connects to mbrokerd over its Unix socket (SOCK_SEQPACKET, one JSON object
per record), attaches models through the read-only descriptor the broker
passes (SCM_RIGHTS) and maps them read-only, so every worker shares one
copy.  For safetensors models, ``Attachment.tensor(name)`` returns a numpy
array that views the mapping without copying (numpy is optional; without
it ``tensor_bytes`` gives a memoryview).  docs/protocol.md is the
protocol; include/mbroker.h the C library this mirrors.

    import mbroker
    with mbroker.connect() as client, client.attach("whisper") as model:
        weights = model.tensor("encoder.conv1.weight")
        ...
        for event in client.events():      # after select() on client
            if event.type in ("unload", "shutdown"):
                client.ack()

The broker also sends a signal (SIGUSR1 by default) whose default action
ends the process: call ``mbroker.handle_unload_signal(client)`` to ack from
a handler, or ``handle_unload_signal(client, ack=False)`` to ignore it and
act on the events.
"""
from __future__ import annotations

import json
import mmap
import os
import signal
import socket
import stat
import struct
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

PROTOCOL_VERSION = 1
MAX_REPLY = 160 * 1024

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


@dataclass(frozen=True)
class Event:
    """An event from the broker: "unload" (one model) or "shutdown"."""

    type: str
    model: Optional[str] = None
    generation: Optional[int] = None
    timeout_ms: Optional[int] = None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: Tuple[int, ...]
    offset: int
    nbytes: int


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


class Attachment:
    """One attached model: a read-only mapping and, for safetensors, its
    tensors.  Valid until detached, acked or the client closes."""

    def __init__(self, client: "Client", reply: Dict[str, Any], fd: int):
        self._client = client
        self.id: int = reply["attachment"]
        self.name: str = reply["name"]
        self.format: str = reply["format"]
        self.generation: int = reply["generation"]
        self.size: int = reply["size"]
        self.checksum: int = int(reply["checksum"], 16)
        try:
            if os.fstat(fd).st_size != self.size:
                raise BrokerError("protocol_error", "size mismatch", reply)
            self._map: Optional[mmap.mmap] = mmap.mmap(
                fd, self.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.data = memoryview(self._map)
        self.tensors: Dict[str, TensorInfo] = (
            _parse_safetensors(self.data) if self.format == "safetensors"
            else {})

    def tensor_bytes(self, name: str) -> memoryview:
        """The bytes of a tensor, a view into the mapping (no copy)."""
        t = self.tensors[name]
        return self.data[t.offset:t.offset + t.nbytes]

    def tensor(self, name: str):
        """A numpy array viewing the tensor in the mapping: no copy, not
        writable.  BF16 comes as uint16 (numpy has no bfloat16)."""
        import numpy as np
        t = self.tensors[name]
        count = t.nbytes // np.dtype(_DTYPES[t.dtype]).itemsize
        array = np.frombuffer(self.data, dtype=_DTYPES[t.dtype], count=count,
                              offset=t.offset)
        return array.reshape(t.shape)

    def detach(self) -> None:
        """Tells the broker this worker let go.  Arrays still viewing the
        mapping keep it mapped until they are gone."""
        if self._map is None:
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
        self.data.release()
        try:
            self._map.close()
        except BufferError:
            pass  # numpy views still use it; unmapped when they go
        self._map = None

    def __enter__(self) -> "Attachment":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()


class Client:
    """A connection to mbrokerd.  Not thread-safe; one per process."""

    def __init__(self, path: Optional[str] = None, role: str = "worker"):
        self.path = path or default_socket_path()
        self.lost = False
        self._next_id = 0
        self._events: List[Event] = []
        self._attachments: List[Attachment] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._sock.connect(self.path)
            self.hello = self.request("hello", version=PROTOCOL_VERSION,
                                      role=role)
        except BaseException:
            self._sock.close()
            raise

    @property
    def attached(self) -> int:
        """How many attachments this client holds."""
        return len(self._attachments)

    def fileno(self) -> int:
        """Readable when an event may be pending (for select/poll)."""
        return self._sock.fileno()

    def _recv(self, blocking: bool = True) -> Tuple[Optional[dict], int]:
        flags = 0 if blocking else socket.MSG_DONTWAIT
        try:
            data, fds, _, _ = socket.recv_fds(self._sock, MAX_REPLY, 4, flags)
        except BlockingIOError:
            return None, -1
        except ConnectionResetError:
            data, fds = b"", []
        for extra in fds[1:]:
            os.close(extra)
        if not data:
            self._lose()
            raise BrokerLost("connection to the broker lost")
        return json.loads(data), (fds[0] if fds else -1)

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            self._events.append(Event("broker_lost"))

    def _take_event(self, msg: dict) -> bool:
        if "event" not in msg:
            return False
        self._events.append(Event(msg["event"], msg.get("model"),
                                  msg.get("generation"),
                                  msg.get("timeout_ms")))
        return True

    def _call(self, op: str, fields: Dict[str, Any]) -> Tuple[dict, int]:
        if self.lost:
            raise BrokerLost("connection to the broker lost")
        self._next_id += 1
        request = dict(fields, op=op, id=self._next_id)
        try:
            self._sock.send(json.dumps(request).encode())
        except (BrokenPipeError, ConnectionResetError):
            self._lose()
            raise BrokerLost("connection to the broker lost") from None
        while True:
            msg, fd = self._recv()
            if self._take_event(msg):
                continue
            rid = msg.get("id")
            if rid == self._next_id or (rid is None and msg.get("ok") is False):
                break
            if fd >= 0:
                os.close(fd)
        if not msg.get("ok"):
            if fd >= 0:
                os.close(fd)
            err = msg.get("error", {})
            raise BrokerError(err.get("code", "?"), err.get("message", ""),
                              msg)
        return msg, fd

    def request(self, op: str, **fields: Any) -> Dict[str, Any]:
        """Sends one request and returns the broker's reply; raises
        BrokerError when it says no."""
        reply, fd = self._call(op, fields)
        if fd >= 0:
            os.close(fd)
        return reply

    def attach(self, name: str) -> Attachment:
        """Maps a READY model read-only."""
        reply, fd = self._call("attach", {"name": name})
        if fd < 0:
            raise BrokerError("protocol_error", "no descriptor", reply)
        att = Attachment(self, reply, fd)
        self._attachments.append(att)
        return att

    def _forget(self, att: Attachment) -> None:
        if att in self._attachments:
            self._attachments.remove(att)

    def events(self) -> Iterator[Event]:
        """The pending events, without blocking."""
        while True:
            if not self._events and not self.lost:
                try:
                    msg, fd = self._recv(blocking=False)
                except BrokerLost:
                    msg, fd = None, -1
                if fd >= 0:
                    os.close(fd)
                if msg is not None:
                    self._take_event(msg)
                    continue
            if not self._events:
                return
            yield self._events.pop(0)

    def ack(self) -> None:
        """Lets go of every attachment and tells the broker so (what it
        waits for after an unload or shutdown event).  Safe to call from
        a signal handler: one send, no reply awaited.  A mapping that numpy
        arrays still view stays mapped until they are gone."""
        for att in list(self._attachments):
            att._release()
        self._attachments.clear()
        if not self.lost:
            try:
                self._sock.send(b'{"id":0,"op":"ack"}', socket.MSG_DONTWAIT)
            except OSError:
                pass

    def close(self) -> None:
        for att in list(self._attachments):
            att._release()
        self._attachments.clear()
        self._sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def handle_unload_signal(client: Client, ack: bool = True) -> None:
    """Installs a handler for the broker's unload signal (the number the
    hello reply gives, SIGUSR1 by default), whose default action would end
    the worker.  With ack, the handler acks at once (every attachment is
    let go, as mb_ack does); without, it does nothing and the worker acts
    on the events instead.  Nothing is installed unless this is called."""
    signum = client.hello.get("signal", signal.SIGUSR1)
    signal.signal(signum, (lambda s, f: client.ack()) if ack
                  else signal.SIG_IGN)


def connect(path: Optional[str] = None) -> Client:
    """Connects to the broker at path (default: default_socket_path())."""
    return Client(path)
