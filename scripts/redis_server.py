"""A private redis-server for the measuring scripts beside this file (lua-cost.py, list-cost.py,
mixed-fleet.py): started on a free port of 127.0.0.1, without persistence, in a temporary
directory; the caller terminates it. Python 3 only."""

import shutil
import socket
import subprocess
import sys
import tempfile
import time


def start(name):
    """Starts redis-server from PATH; returns (process, port). Exits with a message naming
    `name` (the calling script) when it cannot."""
    if not shutil.which("redis-server"):
        sys.exit("%s: redis-server is not on PATH" % name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix=name + "-")
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return server, port
        except OSError:
            if time.time() > deadline:
                server.kill()
                sys.exit("%s: redis-server did not start" % name)
            time.sleep(0.05)
