"""Run ``yolo-master`` with every socket connection and DNS lookup refused and recorded.

    python tests/no_network.py train model=n.yaml data=...      # exit 3 if anything tried the network

Used by test_offline.py. The guard is installed before ``yolo_master`` (and so ``ultralytics``) is
imported, so import-time checks are covered too. Exits with the CLI's own status, or 3 when any
network access was attempted (even one that the caller swallowed).
"""

from __future__ import annotations

import socket
import sys

ATTEMPTS: list[str] = []


def _refuse(what: str):
    def refuse(*args, **kwargs):
        ATTEMPTS.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
        raise OSError(f"network access blocked by tests/no_network.py: {what}")

    return refuse


def install() -> None:
    socket.socket.connect = _refuse("socket.connect")
    socket.socket.connect_ex = _refuse("socket.connect_ex")
    socket.create_connection = _refuse("create_connection")
    socket.getaddrinfo = _refuse("getaddrinfo")
    socket.gethostbyname = _refuse("gethostbyname")


def main() -> int:
    install()
    if sys.argv[1:2] == ["--self-test"]:  # proves the guard catches a real attempt
        try:
            import urllib.request

            urllib.request.urlopen("http://example.com", timeout=2)
        except Exception:
            pass
        status = 0
    else:
        from yolo_master.cli import main as cli

        status = cli(sys.argv[1:])
    if ATTEMPTS:
        print("NETWORK ACCESS ATTEMPTED:", *ATTEMPTS[:5], sep="\n  ", file=sys.stderr)
        return 3
    return status


if __name__ == "__main__":
    sys.exit(main())
