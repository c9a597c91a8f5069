"""Small real HTTP servers on 127.0.0.1 standing in for LLM providers, with bounded lifetimes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def provider(mode: str, *, delay_s: float = 0.0) -> Iterator[dict[str, Any]]:
    """``ok`` answers a chat completion with usage; ``500`` fails; ``slow`` sleeps ``delay_s``."""
    state: dict[str, Any] = {"calls": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            return

        def do_POST(self) -> None:
            state["calls"] += 1
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length))
            if mode == "500":
                self.send_response(500)
                self.end_headers()
                return
            if mode == "slow":
                time.sleep(delay_s)
            prompt = body["messages"][-1]["content"]
            answer = {
                "choices": [
                    {"message": {"role": "assistant", "content": f"{prompt}, golden hour"}}
                ],
                "usage": {"prompt_tokens": 41, "completion_tokens": 17, "total_tokens": 58},
            }
            data = json.dumps(answer).encode()
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except BrokenPipeError:
                pass  # the client timed out first, as the test wanted

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
