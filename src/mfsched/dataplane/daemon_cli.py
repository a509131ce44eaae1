"""The host daemon's command line: ``python -m mfsched.dataplane.daemon --server 3 ...``.

Who calls this: :func:`mfsched.dataplane.daemon.main` (the module's entry point, which the
testbed runner starts inside a server's namespace, see :func:`mfsched.dataplane.testbed.
daemon_argv`). Parses the options into a :class:`~mfsched.dataplane.daemon.DaemonConfig`, reads
the run key, and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import UserError
from .auth import RunKey
from .clock import serve_until_signalled
from .daemon import Daemon, DaemonConfig
from .limits import parse_limit_options
from .sender import SenderConfig

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None) -> tuple[DaemonConfig, str]:
    """The daemon's configuration and log level from its command line."""
    p = argparse.ArgumentParser(prog="python -m mfsched.dataplane.daemon",
                                description="MFS host daemon (one per emulated server)")
    p.add_argument("--server", type=int, required=True)
    p.add_argument("--socket", required=True, help="Unix socket of the local API")
    p.add_argument("--socket-group", default=None,
                   help="group that may also use the socket (mode 0660); default: owner only")
    p.add_argument("--port", type=int, default=7411, help="TCP port for data")
    p.add_argument("--nics", type=int, default=1)
    p.add_argument("--gpus-per-server", type=int, default=4)
    p.add_argument("--address-base", default="198.18")
    p.add_argument("--pcie-bytes-per-s", type=float, default=31.5e6)
    p.add_argument("--coordinator", default=None, help="Unix socket of the coordinator")
    sender_defaults = SenderConfig()  # (a slots dataclass has no class-level defaults)
    p.add_argument("--chunk-bytes", type=int, default=sender_defaults.chunk_bytes)
    p.add_argument("--window-bytes", type=int, default=sender_defaults.window_bytes)
    p.add_argument("--promote-copy-after-s", type=float,
                   default=sender_defaults.promote_copy_after_s)
    key = p.add_mutually_exclusive_group()
    key.add_argument("--key-file", help="the run's data-plane key: 64 hex digits in a file "
                                        "only its owner can read")
    key.add_argument("--key-fd", type=int, help="read the key from this inherited descriptor")
    key.add_argument("--no-auth", action="store_true",
                     help="accept and open data connections without authentication")
    p.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                   help="a resource limit (see mfsched.dataplane.limits), repeatable")
    p.add_argument("--kv-store-bytes", type=int, default=DaemonConfig.kv_store_bytes,
                   help="received KV flows held until a local runtime takes them")
    p.add_argument("--kv-ttl-s", type=float, default=DaemonConfig.kv_ttl_s,
                   help="unclaimed or stalled received KV flows are freed after this")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    if a.key_file is None and a.key_fd is None and not a.no_auth:
        raise UserError("give the run's key (--key-file or --key-fd) or --no-auth",
                        where="--key-file")
    key = None if a.no_auth else (RunKey.from_file(a.key_file) if a.key_file is not None
                                  else RunKey.from_fd(a.key_fd))
    data_limits, control_limits = parse_limit_options(a.limit)
    try:
        sender = SenderConfig(a.chunk_bytes, a.window_bytes, a.promote_copy_after_s)
    except ValueError as e:
        raise UserError(str(e), where="--chunk-bytes/--window-bytes") from None
    cfg = DaemonConfig(a.server, a.socket, a.port, a.nics, a.gpus_per_server, a.address_base,
                       a.pcie_bytes_per_s, a.coordinator, sender, key, data_limits,
                       control_limits, a.socket_group, a.kv_store_bytes, a.kv_ttl_s)
    if a.kv_store_bytes <= 0 or a.kv_ttl_s <= 0:
        raise UserError("--kv-store-bytes and --kv-ttl-s must be positive", where="--kv-ttl-s")
    return cfg, a.log_level


def main(argv: list[str] | None = None) -> None:
    try:
        cfg, level = parse_args(argv)
        logging.basicConfig(level=level, stream=sys.stderr,
                            format=f"%(asctime)s daemon{cfg.server} %(levelname)s %(message)s")
        serve_until_signalled(Daemon(cfg))  # may refuse its socket path: a UserError
    except UserError as e:
        print(f"mfsched daemon: error: {e}", file=sys.stderr)
        sys.exit(2)
