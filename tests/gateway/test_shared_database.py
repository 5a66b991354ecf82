"""Two gateways on one database (a SQLite file, then PostgreSQL), in front of a stub upstream:
both start on it (the first migrates the schema, the second finds it current), each is in the
table of live processes while it runs, and a key made on one works on the other, which writes
its usage where the first reads it."""

from __future__ import annotations

from contextlib import ExitStack

import httpx
from alembic.script import ScriptDirectory
from sqlalchemy import text

from gateway.db import alembic_config, create_db_engine
from gateway.presence import ProcessTable
from gateway.settings import Settings
from tests.helpers import ADMIN_TOKEN, MODEL, running_gateway, stub_upstream, wait_until

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def test_two_gateways_share_one_database(database_url: str) -> None:
    with ExitStack() as stack:
        stub = stack.enter_context(stub_upstream())
        settings = Settings(
            upstreams=[stub.url], database_url=database_url, admin_token=ADMIN_TOKEN,
            key_sync_interval=0.2, eval_sample_rate=0,
        )  # fmt: skip
        first, second = (stack.enter_context(running_gateway(settings)) for _ in range(2))

        created = httpx.post(f"{first}/admin/keys", headers=ADMIN, json={"name": "shared"})
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        assert httpx.get(f"{second}/admin/keys/shared", headers=ADMIN).status_code == 200

        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}

        def closed() -> bool:  # the second has re-read the keys: /v1 now needs one
            reply = httpx.post(f"{second}/v1/chat/completions", json=body, timeout=30)
            return reply.status_code == 401

        wait_until(closed, timeout=30, what="the second gateway to see the managed key")

        def answered() -> bool:
            reply = httpx.post(
                f"{second}/v1/chat/completions",
                headers={"authorization": f"Bearer {key}"},
                json=body,
                timeout=30,
            )
            return reply.status_code == 200

        wait_until(answered, timeout=30, what="the second gateway to accept the new key")

        def used() -> bool:  # the second writes usage; the first reads it from the database
            totals = httpx.get(f"{first}/admin/keys/shared", headers=ADMIN).json()
            return totals["usage"]["requests"] >= 1

        wait_until(used, timeout=30, what="usage written by the second gateway")

        reader = create_db_engine(database_url)
        assert len(ProcessTable(reader).live(max_age=60)) == 2, "both gateways are in the table"
        reader.dispose()

    engine = create_db_engine(database_url)
    assert ProcessTable(engine).live(max_age=3600) == [], "each left it when it stopped"
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
        assert list(versions) == [ScriptDirectory.from_config(alembic_config()).get_current_head()]
    engine.dispose()
