"""A TCP forwarder from host loopback into a network namespace, for the real-node harness.

    python -m kubeserial_testing.netns_forward --listen 127.0.0.1:PORT --netns /run/netns/NAME --to IP:PORT

It binds its listener in the network namespace it starts in (the host's), then moves itself into
the target namespace, so every connection it makes from then on starts there: one process, no
fork per connection, and nothing added to the host's network configuration.
"""

import argparse
import asyncio
import contextlib
import ctypes
import os
import socket
import sys

CLONE_NEWNET = 0x40000000


def enter_netns(path: str) -> None:
    """setns(2) for this thread (os.setns only exists from Python 3.12)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def serve(listener: socket.socket, host: str, port: int) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.transport.abort()
            return
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))
        for writer in (client_writer, upstream_writer):
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubeserial_testing.netns_forward")
    parser.add_argument("--listen", required=True, help="HOST:PORT in the current network namespace")
    parser.add_argument("--netns", required=True, help="network namespace file, e.g. /run/netns/NAME")
    parser.add_argument("--to", required=True, help="HOST:PORT inside that namespace")
    args = parser.parse_args(argv)
    listen_host, listen_port = args.listen.rsplit(":", 1)
    to_host, to_port = args.to.rsplit(":", 1)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((listen_host, int(listen_port)))
    listener.listen(128)
    # The listening socket stays in the host namespace; connect() calls happen in the target one.
    enter_netns(args.netns)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(listener, to_host, int(to_port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
