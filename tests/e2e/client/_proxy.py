"""A TCP proxy that can cut a connection mid-stream: the network failure the client's
event streams must survive, made on real sockets between the client and the appliance.

`CuttingProxy.cut_next_after(n)` makes the next accepted connection forward only `n`
bytes from the server to the client and then close both sides; each connection records
the bytes it carried each way. `Forwarder` puts TLS or a Unix socket in front of a
plaintext port. `close()` stops everything each started.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass, field


@dataclass
class Connection:
    cut_after: int | None
    up: bytearray = field(default_factory=bytearray)  # client -> server
    down_bytes: int = 0  # server -> client
    done: threading.Event = field(default_factory=threading.Event)


class CuttingProxy:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.connections: list[Connection] = []
        self._cut_next: int | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_next_after(self, n: int) -> None:
        with self._lock:
            self._cut_next = n

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                conn = Connection(cut_after=self._cut_next)
                self._cut_next = None
                self.connections.append(conn)
                self._sockets += [client, server]
            threading.Thread(target=self._pump_up, args=(client, server, conn), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(server, client, conn), daemon=True).start()

    def _pump_up(self, client: socket.socket, server: socket.socket, conn: Connection) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                conn.up += data
                server.sendall(data)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _pump_down(self, server: socket.socket, client: socket.socket, conn: Connection) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if conn.cut_after is not None:
                    data = data[: max(0, conn.cut_after - conn.down_bytes)]
                conn.down_bytes += len(data)
                if data:
                    client.sendall(data)
                if conn.cut_after is not None and conn.down_bytes >= conn.cut_after:
                    break
        for sock in (client, server):  # a cut (or the end): both sides closed, as a broken network would
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        conn.done.set()

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


class Forwarder:
    """Forwards a TLS port or a Unix socket to a plaintext TCP port (asyncio in a thread,
    so TLS is handled by one event loop, never by two threads on one SSL object).

    `Forwarder(port, ssl_context=ctx)` terminates TLS (ALPN h2 for gRPC) in front of
    the control plane; `Forwarder(port, unix_path=p)` serves it on a Unix socket.
    `connections` counts the connections that reached the target.
    """

    def __init__(self, target_port: int, *, ssl_context: ssl.SSLContext | None = None, unix_path: str = ""):
        self.target_port = target_port
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            self._start(ssl_context, unix_path), self._loop
        ).result(10)
        self.port = 0 if unix_path else int(self._server.sockets[0].getsockname()[1])

    async def _start(self, ssl_context: ssl.SSLContext | None, unix_path: str) -> asyncio.Server:
        if unix_path:
            return await asyncio.start_unix_server(self._handle, path=unix_path)
        return await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_context)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.connections += 1

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
