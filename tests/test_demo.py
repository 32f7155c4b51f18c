"""The demo points only the stand-in servers of the user's config at the scripted model it
started (that server's free port and identity token: ScriptedModelProcess, tested in
test_study.py)."""

from __future__ import annotations

from conftest import campaign_config
from hpcagents.demo import demo_config


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
