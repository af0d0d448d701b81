"""``SpdyConnection.receive_now`` (the emulator's keystroke path over SPDY: bytes parsed in the
tunnel's callback, no task woken) against the connection's own reader alone, the reference: a
client session's frames (streams opened, data, FINs, pings, window updates), cut at any points
and offered to ``receive_now`` whenever the reader waits with nothing buffered (as the tunnel
offers them), give every stream the same bytes in the same order and the same ends; a stream's
``direct`` hook only ever sees bytes with nothing buffered before them."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproto.aio.spdy import SpdyConnection, SpdyStream
from streamproto.spdy import Role, Session

OPS = st.lists(st.one_of(
    st.tuples(st.just("data"), st.integers(0, 2), st.integers(1, 300)),
    st.tuples(st.just("fin"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("last"), st.integers(0, 2), st.integers(1, 50)),  # data with FIN
    st.tuples(st.just("ping"), st.just(0), st.just(0)),
    st.tuples(st.just("window"), st.integers(0, 2), st.integers(1, 5000)),
), max_size=25)


def _wire(ops: list[tuple[str, int, int]]) -> tuple[bytes, dict[int, bytes], set[int]]:
    """The client's bytes, what each stream (by id) carries, and the streams it ended."""
    client = Session(Role.CLIENT)
    ids = [client.open_stream([("streamtype", f"s{i}")]) for i in range(3)]
    sent = {sid: b"" for sid in ids}
    ended: set[int] = set()
    for n, (op, index, size) in enumerate(ops):
        sid = ids[index]
        if op in ("data", "last") and sid not in ended:
            payload = bytes((n * 7 + i) % 251 for i in range(size))
            client.send_data(sid, payload, fin=op == "last")
            sent[sid] += payload
            if op == "last":
                ended.add(sid)
        elif op == "fin" and sid not in ended:
            client.end_stream(sid)
            ended.add(sid)
        elif op == "ping":
            client.ping()
        elif op == "window":
            client._window_frame(sid, size)  # (a window update the peer may send at any time)
    return client.data_to_send(), sent, ended


async def _serve(wire: bytes, cuts: list[int], direct_on: bool) -> tuple[dict[int, bytes], set[int], int]:
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True) if b > a]
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    waiting = False

    async def read() -> bytes | None:
        nonlocal waiting
        waiting = True
        try:
            return await queue.get()
        finally:
            waiting = False

    async def write(data: bytes) -> None:
        pass

    conn = SpdyConnection(Role.SERVER, read, write)
    got: dict[int, bytes] = {}
    ended: set[int] = set()
    taken = 0

    async def consume(stream: SpdyStream) -> None:
        idle = [False]  # the reader waits with everything it read recorded (as `cat_waiting`)

        def direct(data: bytes) -> bool:
            nonlocal taken
            assert idle[0] and not stream.inbound.size
            if len(data) % 2:
                return False  # some go to the buffer after all
            got[stream.id] = got.get(stream.id, b"") + data
            taken += 1
            return True

        if direct_on:
            stream.direct = direct
        while True:
            idle[0] = True
            chunk = await stream.read()
            idle[0] = False
            if chunk is None:
                break
            got[stream.id] = got.get(stream.id, b"") + chunk
        if not conn.closed.is_set():
            ended.add(stream.id)  # by its FIN, not by the end of the session

    async with asyncio.timeout(10):
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(conn.run())

            async def accept() -> None:
                while (stream := await conn.accept()) is not None:
                    tg.create_task(consume(stream))

            tg.create_task(accept())
            for chunk in chunks:
                for _ in range(5):  # let the reader and the streams settle, as between two reads
                    await asyncio.sleep(0)
                if not (waiting and queue.empty() and conn.receive_now(memoryview(chunk))):
                    queue.put_nowait(chunk)
            for _ in range(5):
                await asyncio.sleep(0)
            queue.put_nowait(None)
            await runner
    return got, ended, taken


@settings(max_examples=150, deadline=None)
@given(ops=OPS, data=st.data())
def test_receive_now_gives_every_stream_what_the_reader_alone_gives(ops, data) -> None:
    wire, sent, fins = _wire(ops)
    bounds, pos = [], 0
    while pos < len(wire):  # frame boundaries (the tunnel mostly carries whole frames), and anywhere
        pos += 8 + (int.from_bytes(wire[pos + 4 : pos + 8], "big") & 0xFFFFFF)
        bounds.append(pos)
    picked = data.draw(st.lists(st.sampled_from(bounds), max_size=30))
    cuts = sorted(set(picked) | set(data.draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=4))))
    direct_on = data.draw(st.booleans())
    reference = asyncio.run(_serve(wire, [], False))
    got, ended, _ = asyncio.run(_serve(wire, [c for c in cuts if c < len(wire)], direct_on))
    assert {sid: b for sid, b in got.items() if b} == {sid: b for sid, b in sent.items() if b}
    assert got == reference[0]
    assert ended == fins == reference[1]  # every FIN seen as it came, no other end


def test_whole_data_frames_go_through_the_callback() -> None:
    """Keystrokes, one DATA frame each, while the reader waits: all taken by ``receive_now``."""
    ops = [("data", 0, 1)] * 20 + [("data", 1, 2)] * 5
    wire, sent, _ = _wire(ops)
    head = wire.index(b"\x00\x00\x00\x01\x00\x00\x00\x01")  # the first DATA frame: after the 3 SYN_STREAMs
    cuts = [head + 9 * i for i in range(21)] + [head + 9 * 20 + 10 * i for i in range(1, 5)]
    got, _, taken = asyncio.run(_serve(wire, cuts, True))
    assert got == {sid: b for sid, b in sent.items() if b}
    assert taken == 5  # stream 1's two-byte keystrokes went straight to its `direct`
