"""Put tokens kept in a rescue file back into their connection: ``python -m ... CONN_ID FILE``."""

from __future__ import annotations

import argparse
import logging

from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.tokens.rescue import RescueFile
from airflow_provider_canvas.tokens.store import TokenStore


def restore(conn_id: str, rescue_path: str) -> str:
    """Save the rescued tokens to the connection if they are newer; return what was done."""
    platform = metadata.get_connection(conn_id).conn_type
    rescue = RescueFile(rescue_path)
    rescued = rescue.read(platform)
    if rescued is None:
        return f"{rescue_path} does not exist: nothing to restore"
    store = TokenStore(conn_id, platform)
    if not rescued.is_newer_than(store.load()):
        rescue.clear()
        return f"connection {conn_id!r} already holds newer tokens; removed {rescue_path}"
    store.save(rescued)
    rescue.clear()
    return f"restored the tokens of connection {conn_id!r} to {store.location}; removed {rescue_path}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("conn_id")
    parser.add_argument("rescue_file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    print(restore(args.conn_id, args.rescue_file))


if __name__ == "__main__":
    main()
