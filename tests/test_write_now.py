"""`write_now`: straight to the socket while nothing is queued, through Tornado's stream after
a partial send, in order either way, and bounded as the stream bounds it."""

import asyncio
import socket

import pytest
from tornado.iostream import IOStream, StreamBufferFullError

from tidings.connections import write_now


def _pair(sndbuf: int = 4096) -> tuple[IOStream, socket.socket]:
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
    return IOStream(ours), peer


async def _read(peer: socket.socket, size: int) -> bytes:
    loop, got = asyncio.get_running_loop(), bytearray()
    peer.setblocking(False)
    while len(got) < size:
        got += await asyncio.wait_for(loop.sock_recv(peer, 65536), 5)
    return bytes(got)


@pytest.mark.gen_test
async def test_what_the_socket_cannot_take_at_once_follows_in_order():
    stream, peer = _pair()
    frames = [bytes([i % 251]) * (700 + i) for i in range(200)]  # far more than the buffers
    futures = [write_now(stream, f) for f in frames]
    assert futures[0] is None  # an empty socket took the first frame at once
    queued = [f for f in futures if f is not None]
    assert queued and stream.writing()  # the rest waits in the stream, in order
    # The socket has room again, but bytes are still queued: the next frame goes behind them.
    early = peer.recv(65536)
    frames.append(b"last")
    assert write_now(stream, b"last") is not None
    expected = b"".join(frames)
    assert early + await _read(peer, len(expected) - len(early)) == expected
    await asyncio.wait_for(asyncio.gather(*queued), 5)
    stream.close()
    peer.close()


@pytest.mark.gen_test
async def test_what_is_queued_stays_within_the_stream_bound():
    stream, peer = _pair()
    stream.max_write_buffer_size = 64 * 1024
    with pytest.raises(StreamBufferFullError):
        for _ in range(1000):
            write_now(stream, b"x" * 4096)
    stream.close()
    peer.close()
