"""A Jupyter server extension that makes kernel round trips fast enough to scrub with.

Tornado leaves Nagle's algorithm on for websockets. A widget update makes the kernel send several
small messages in a row (busy, comm update, idle); with Nagle on, each one after the first waits
for the browser's delayed acknowledgement, about 40 ms on Linux. Measured in the browser test on
loopback: a kernel_info round trip took 44 ms with Nagle on and 2-3 ms with it off; the scrubber's
chart rule followed the slider in 53 ms against 20 ms.

Enabled in the environment by ``make`` and Binder's postBuild with ``python -m widgets.server``,
which writes a config file into ``<prefix>/etc/jupyter/jupyter_server_config.d/``.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

MARK = "_evx_nodelay"
CONFIG_NAME = "emotion-vector-explorer.json"


def _jupyter_server_extension_points():
    return [{"module": "widgets.server"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from jupyter_server.services.kernels.websocket import KernelWebsocketHandler

    if getattr(KernelWebsocketHandler.open, MARK, False):
        return
    original = KernelWebsocketHandler.open

    @functools.wraps(original)
    async def open_without_nagle(self, *args, **kwargs):
        self.set_nodelay(True)
        return await original(self, *args, **kwargs)

    setattr(open_without_nagle, MARK, True)
    KernelWebsocketHandler.open = open_without_nagle
    serverapp.log.info("widgets.server: kernel websockets send without Nagle delay (TCP_NODELAY)")


def enable(prefix: str | None = None) -> Path:
    """Enable the extension in the environment at ``prefix`` (default: this Python's)."""
    folder = Path(prefix or sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_NAME
    path.write_text(json.dumps({"ServerApp": {"jpserver_extensions": {"widgets.server": True}}}, indent=2) + "\n")
    return path


if __name__ == "__main__":
    print(f"enabled widgets.server: {enable()}")
