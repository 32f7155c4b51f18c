"""The demo talks only to the scripted model it started (free port + identity token)."""

from __future__ import annotations

import pytest
from conftest import campaign_config
from hpcagents.demo import check_identity, demo_config
from hpcagents.scripted import serve


def test_identity_check_accepts_our_server_and_rejects_another(tmp_path):
    ours = serve(port=0, instance="token-ours")
    theirs = serve(port=0, instance="token-theirs")
    try:
        check_identity(ours.url, "token-ours")
        with pytest.raises(RuntimeError, match="not the scripted model this demo started"):
            check_identity(theirs.url, "token-ours")
    finally:
        ours.shutdown()
        theirs.shutdown()


def test_demo_config_points_only_the_stand_in_servers_at_the_demo_server():
    raw = campaign_config("http://127.0.0.1:8765/v1")
    raw["llm"]["servers"].append(
        {"name": "gpu", "base_url": "http://gpu01:8000/v1", "model": "gpt-oss-120b"}
    )
    out = demo_config(raw, "http://127.0.0.1:40123/v1")
    assert [s["base_url"] for s in out["llm"]["servers"]] == [
        "http://127.0.0.1:40123/v1",
        "http://gpu01:8000/v1",
    ]
    assert raw["llm"]["servers"][0]["base_url"] == "http://127.0.0.1:8765/v1"  # not mutated
