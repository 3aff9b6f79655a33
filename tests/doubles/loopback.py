"""Run an ASGI app on a free loopback port in a daemon thread: the base of the test doubles
that speak real HTTP (OpenAI, FHIR, terminology), so the real client code runs end to end."""

import socket
import threading
import time

import uvicorn


class LoopbackServer:
    def __init__(self, app, name: str) -> None:
        self.app = app
        self.name = name
        self.port: int | None = None
        self._lifecycle = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        if self.port is None:
            raise RuntimeError(f"the {self.name} is not running")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self._lifecycle:
            if self._server is not None:
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Inherited by the accepted connections (Linux): without it, a keep-alive request
            # waits 40 ms on delayed ACKs, and the doubles look slower than the real thing.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            config = uvicorn.Config(
                self.app,
                loop="asyncio",
                http="h11",
                lifespan="off",
                log_config=None,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=1,
            )
            self._server = uvicorn.Server(config)
            self._thread = threading.Thread(
                target=self._server.run, kwargs={"sockets": [sock]}, name=self.name, daemon=True
            )
            self._thread.start()
            deadline = time.monotonic() + 5
            while not self._server.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the {self.name} did not start")
                time.sleep(0.005)

    def stop(self) -> None:
        with self._lifecycle:
            server, thread = self._server, self._thread
            if server is None or thread is None:
                return
            server.should_exit = True
            server.force_exit = True  # do not wait for slow (delayed) answers to finish
            thread.join(timeout=5)
            self._server = self._thread = None
            self.port = None
