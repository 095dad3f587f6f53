"""The WebSocket protocol of a notification socket: Tornado's, but for how client frames are
read.

Tornado reads a frame in three or four `read_bytes` calls (header, length, mask, payload), each
a future resolved from the stream's buffer, and its frame loop is a task that wakes once per
piece. With acknowledgements every client sends ten frames a second, so here a socket's
readable event is handled where it happens: one `recv` takes what the socket holds and every
whole frame in it is handled before the event returns, with no future, no task and no second
read. The rules are Tornado's (RFC 6455): the size limit is checked on the header, before any
of the payload is kept; control frames are short, final and may come between fragments;
reserved bits and stray continuations end the socket; Tornado's `_handle_message` answers
pings and close frames and calls `on_message` as before. Compression is never negotiated here
(the handler offers none), so any reserved bit is an error.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import tornado.iostream
import tornado.websocket
from tornado.ioloop import IOLoop
from tornado.util import _websocket_mask

if TYPE_CHECKING:
    from .ws import NotificationSocket

READ_CHUNK = 64 * 1024  # bytes taken from a socket per readable event at most
_RESERVED = 0x70  # RSV1-3 of a frame's first byte


class _UpgradedStream(tornado.iostream.IOStream):
    """The stream of a socket once it carries WebSocket frames. Tornado made it an IOStream at
    accept, before anyone knew; its class is swapped at the upgrade (same layout). Writes stay
    Tornado's, and its handler of the socket now serves them alone: the protocol's reader is
    registered with the event loop directly (one call per readable event, not three)."""

    protocol: NotificationProtocol

    def _handle_events(self, fd: Any, events: int) -> None:
        if self.closed():
            return
        try:
            if events & IOLoop.WRITE:
                self._handle_write()
            if not self.closed():
                self.watch_writes()
        except Exception as e:  # as Tornado's: the socket ends
            self.close(exc_info=e)
            raise

    def watch_writes(self) -> None:
        """Tornado's handler listens for writability while bytes are queued, never for reads
        (its reader would replace the protocol's)."""
        state = IOLoop.ERROR | (IOLoop.WRITE if self._write_buffer else 0)
        if state == self._state:
            return
        if self._state is None:
            self.io_loop.add_handler(self.fileno(), self._handle_events, state)
        else:
            self.io_loop.update_handler(self.fileno(), state)
        self._state = state

    def _maybe_add_error_listener(self) -> None:
        """Nothing: the protocol's reader sees the peer go (Tornado's version would add its
        own reader whenever the stream is idle)."""

    def close_fd(self) -> None:
        self.protocol.read(False)
        super().close_fd()


class NotificationProtocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol with three changes: client frames are read as the module says; it
    tells the handler why Tornado itself said goodbye (a ping gone unanswered, a frame too
    big), which on_close cannot tell from a client's close; and it keeps no task per socket
    (Tornado's frame loop would hold the request's coroutines, suspended, for as long as the
    socket is open)."""

    handler: NotificationSocket
    stream: _UpgradedStream
    waiting = False  # a handler's coroutine for an earlier frame runs: frames wait, unread
    _reading = False  # the socket's reader is registered with the event loop
    _fd: int
    _loop: asyncio.AbstractEventLoop
    _unread: bytes | bytearray = b""  # read, not yet a whole frame; a bytearray grows in place
    _ended = False

    async def _receive_frame_loop(self) -> None:
        """Called once, after open(): from here the event loop calls `_readable` when the
        socket has bytes. What Tornado read past the handshake, if anything, comes first."""
        stream = self.stream
        assert stream._read_future is None, "no read may be pending at the upgrade"
        leftover = stream._consume(stream._read_buffer_size)
        if stream._state is not None:  # registered with the old class's bound method
            stream.io_loop.remove_handler(stream.fileno())
            stream._state = None
        stream.__class__ = _UpgradedStream
        stream.protocol = self
        stream.set_close_callback(self._stream_closed)
        if stream.closed():
            self._stream_closed()
            return
        stream.watch_writes()
        self._fd = stream.fileno()
        self._loop = stream.io_loop.asyncio_loop  # type: ignore[attr-defined]
        self.read(True)
        if leftover:
            self._unread = leftover
            self._handle_frames()

    def read(self, on: bool) -> None:
        """Registers the socket's reader, or takes it away."""
        if on != self._reading:
            self._reading = on
            if on:
                self._loop.add_reader(self._fd, self._readable)
            else:
                self._loop.remove_reader(self._fd)

    def _readable(self) -> None:
        try:
            data = self.stream.socket.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as e:
            self.stream.close(exc_info=e)  # its close callback ends the socket
            return
        if not data:
            self.stream.close()
            return
        self._wire_bytes_in += len(data)
        if self._unread:
            self._unread += data  # (a bytearray: a part frame, however small its pieces)
        else:
            self._unread = data
        self._handle_frames()

    def _handle_frames(self) -> None:
        """Handles every whole frame read so far, in order. Stops at a part frame, at the
        end of the socket, and at a frame whose handler returns a coroutine: the next frame
        waits for it (and the socket is not read meanwhile), as in Tornado."""
        try:
            unread, at, size = self._unread, 0, len(self._unread)
            while not self.waiting and not self.client_terminated and size - at >= 2:
                first, second = unread[at], unread[at + 1]
                opcode, length, start = first & 0x0F, second & 0x7F, at + 2
                if first & _RESERVED or opcode & 0x8 and length >= 126:
                    self._abort()  # an extension never agreed on; a control frame too long
                    return
                if length == 126:
                    start += 2
                    if size < start:
                        break
                    length = int.from_bytes(unread[at + 2:start], "big")
                elif length == 127:
                    start += 8
                    if size < start:
                        break
                    length = int.from_bytes(unread[at + 2:start], "big")
                held = self._fragmented_message_buffer
                if length + (len(held) if held is not None else 0) > self.params.max_message_size:
                    self.close(1009, "message too big")
                    self._abort()
                    return
                masked = second & 0x80
                end = start + (4 if masked else 0) + length
                if size < end:
                    break
                payload = bytes(unread[start + 4 if masked else start:end])
                if masked:
                    payload = _websocket_mask(bytes(unread[start:start + 4]), payload)
                at = end
                handled = self._frame(bool(first & 0x80), opcode, payload)
                if handled is not None:
                    self._pause(handled)
            if at == size:
                self._unread = b""
            elif at or not isinstance(unread, bytearray):  # a part frame: it grows in place
                self._unread = bytearray(unread[at:])
        except Exception as e:  # a bug, or the handler's: this socket ends, the server goes on
            self.handler.log_exception(type(e), e, e.__traceback__)
            self._abort()

    def _frame(self, final: bool, opcode: int, payload: bytes) -> asyncio.Future[None] | None:
        """One frame, as Tornado's `_receive_frame` decides after reading it."""
        held = self._fragmented_message_buffer
        if opcode & 0x8:
            if not final:  # control frames come whole
                self._abort()
                return None
        elif opcode == 0:
            if held is None:  # nothing to continue
                self._abort()
                return None
            held.extend(payload)
            if not final:
                return None
            opcode, payload = self._fragmented_message_opcode, bytes(held)
            self._fragmented_message_buffer = None
        elif held is not None:  # a new message before the last one ended
            self._abort()
            return None
        elif not final:
            self._fragmented_message_opcode = opcode
            self._fragmented_message_buffer = bytearray(payload)
            return None
        if opcode == 0x1:
            # Text goes straight to the handler (`_handle_message` would take two calls more);
            # what the handler raises ends the socket (see `_handle_frames`), as in Tornado.
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                self._abort()
                return None
            handled = self.handler.on_message(text)
            return None if handled is None else asyncio.ensure_future(handled)
        try:
            return self._handle_message(opcode, payload)
        except ValueError:  # a close frame's reason that is not UTF-8: the client's fault
            self._abort()
            return None

    def _pause(self, handled: asyncio.Future[None]) -> None:
        self.waiting = True
        self.read(False)
        handled.add_done_callback(self._resume)

    def _resume(self, handled: asyncio.Future[None]) -> None:
        self.waiting = False
        error = None if handled.cancelled() else handled.exception()
        if error is not None:  # the handler's: this socket ends, as in Tornado
            self.handler.log_exception(type(error), error, error.__traceback__)
        if handled.cancelled() or error is not None:
            self._abort()
            return
        if self.stream.closed():
            return
        self._handle_frames()  # the frames read already first, then the socket
        if not self.waiting and not self.stream.closed():
            self.read(True)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if not self.server_terminated and not self.client_terminated:
            self.handler.goodbye = reason or f"code {code}"
        super().close(code, reason)

    def _stream_closed(self) -> None:
        """The socket's end, whoever closed it: as Tornado's frame loop ends."""
        if self._ended:
            return
        self._ended = True
        self._abort()
        self.handler.on_ws_connection_close(self.close_code, self.close_reason)
