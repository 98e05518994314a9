"""A worker's control planes (`mist worker --join URL,URL`): the next one when one is down."""

import asyncio
import socket

import httpx
import pytest

from mist.cluster.planes import ControlPlanes


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(status: int) -> tuple[asyncio.AbstractServer, str]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def test_a_request_goes_to_the_next_control_plane_when_one_cannot_be_reached_and_stays_there():
    async def main() -> None:
        server, up = await serve(200)
        down = f"http://127.0.0.1:{closed_port()}"
        planes = ControlPlanes(f"{down}, {up}/")
        async with httpx.AsyncClient() as client, server:
            assert (await planes.request(client, "GET", "/v1/x")).status_code == 200
            assert planes.url == up  # the next request starts there
            assert (await planes.request(client, "POST", "/v1/y", json={})).status_code == 200

    asyncio.run(main())


def test_an_answer_is_returned_as_it_is_and_all_planes_down_raises():
    async def main() -> None:
        server, refusing = await serve(401)
        async with httpx.AsyncClient() as client, server:
            planes = ControlPlanes(f"{refusing},http://127.0.0.1:{closed_port()}")
            assert (await planes.request(client, "GET", "/v1/x")).status_code == 401  # not a reason to move on
            assert planes.url == refusing
            dead = ControlPlanes(f"http://127.0.0.1:{closed_port()},http://127.0.0.1:{closed_port()}")
            with pytest.raises(httpx.ConnectError):
                await dead.request(client, "GET", "/v1/x")

    asyncio.run(main())
