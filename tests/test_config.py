"""A bad config fails at once with a message that names the problem."""

import copy
import socket

import pytest
import yaml
from hpcagents.core.artifacts import REPO_DIR
from hpcagents.llm import probe
from hpcagents.llm.probe import check_servers
from hpcagents.spec.config import ConfigError, parse_config
from hpcagents.spec.kernelspec import load_kernel

DEFAULT = yaml.safe_load((REPO_DIR / "config" / "config.yaml").read_text())


def cfg(**changes):
    raw = copy.deepcopy(DEFAULT)
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return raw


def test_shipped_config_is_valid():
    c = parse_config(copy.deepcopy(DEFAULT))
    assert c.kernels == ("dgemm",) and c.pgs == 4 and c.iterations == 3
    assert c.cflags == ("-O3", "-march=native", "-fopenmp")


def test_missing_key_is_named():
    with pytest.raises(ConfigError, match=r"campaign.*'pgs' is a required property"):
        parse_config(cfg(campaign__pgs=KeyError))


def test_wrong_type_is_named_with_its_path():
    with pytest.raises(ConfigError, match=r"key 'campaign.iterations'.*not of type 'integer'"):
        parse_config(cfg(campaign__iterations="three"))


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match=r"'tempreature' was unexpected"):
        parse_config(cfg(llm__tempreature=0.1))


def test_unknown_kernel_is_named_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown kernel 'sgemv'.*known: .*dgemm"):
        parse_config(cfg(kernels=["sgemv"]))


def test_bad_server_url_is_named():
    servers = [{"name": "a", "base_url": "localhost:8000", "model": "m"}]
    with pytest.raises(ConfigError, match=r"llm.servers.0.base_url"):
        parse_config(cfg(llm__servers=servers))


def test_duplicate_server_names_rejected():
    s = {"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "m"}
    with pytest.raises(ConfigError, match="server name .a. is used 2 times"):
        parse_config(cfg(llm__servers=[s, dict(s)]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_servers_are_each_named():
    port = _free_port()
    servers = [
        {"name": "gpu1", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m"},
        {"name": "gpu2", "base_url": f"http://localhost:{port}/v1", "model": "m"},
    ]
    c = parse_config(cfg(llm__servers=servers))
    with pytest.raises(ConfigError, match=r"no LLM server answers.*'gpu1'.*'gpu2'"):
        check_servers(c)


def test_offline_replay_does_not_probe_servers(monkeypatch):
    """Offline replay answers from the response cache: a server that is down is not
    probed and stops nothing, where a live run with the same servers stops on it."""
    port = _free_port()
    servers = [{"name": "gpu1", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m"}]
    live = parse_config(cfg(llm__servers=servers))
    with pytest.raises(ConfigError, match=r"no LLM server answers.*'gpu1'"):
        check_servers(live)
    probed = []
    monkeypatch.setattr(probe, "probe", lambda server, known: probed.append(server.name))
    assert check_servers(parse_config(cfg(llm__servers=servers, llm__offline=True))) == []
    assert probed == []


def test_config_readme_documents_every_key():
    text = (REPO_DIR / "config" / "README.md").read_text()

    def keys(node, prefix=""):
        for k, v in node.items():
            yield prefix + k
            if isinstance(v, dict):
                yield from keys(v, prefix + k + ".")

    missing = [k for k in keys(DEFAULT) if f"`{k}`" not in text]
    assert not missing, f"config/README.md does not document: {missing}"


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    from hpcagents.spec.config import load_config

    path = tmp_path / "bad.yaml"
    path.write_text("kernels: [dgemm]\ncampaign:\n  iterations: 3\n   pgs: 4\n")
    with pytest.raises(ConfigError, match=rf"{path}:4:\d+: invalid YAML"):
        load_config(path)


def test_server_roles_and_per_role_sampling_are_parsed():
    servers = [
        {"name": "big", "base_url": "http://h:1/v1", "model": "m", "roles": ["pm"]},
        {"name": "coder", "base_url": "http://h:2/v1", "model": "c"},
    ]
    roles = {"pm": {"temperature": 0.9, "reasoning_effort": "high"}, "pg": None}
    c = parse_config(cfg(llm__servers=servers, llm__roles=roles))
    assert [s.name for s in c.llm.servers_for("pm")] == ["big", "coder"]
    assert [s.name for s in c.llm.servers_for("pg")] == ["coder"]
    assert c.llm.role("pm").temperature == 0.9 and c.llm.role("pg").temperature is None


def test_unknown_role_is_rejected():
    servers = [{"name": "a", "base_url": "http://h:1/v1", "model": "m", "roles": ["boss"]}]
    with pytest.raises(ConfigError, match=r"llm.servers.0.roles.0"):
        parse_config(cfg(llm__servers=servers))


def test_kernels_dir_adds_the_users_kernels_resolved_from_the_campaign_dir(tmp_path, monkeypatch):
    from conftest import copy_kernel

    copy_kernel("mykernel", tmp_path / "own")
    (tmp_path / "campaign").mkdir()
    monkeypatch.chdir(tmp_path / "campaign")
    c = parse_config(cfg(kernels=["mykernel", "dgemv"], kernels_dir="../own"))
    assert c.kernels_dir == tmp_path / "own"
    assert c.raw["kernels_dir"] == str(tmp_path / "own")  # what every step reads
    assert c.kernel_search == (tmp_path / "own", REPO_DIR / "kernels")
    assert load_kernel("mykernel", c.kernel_search).directory == tmp_path / "own" / "mykernel"
    assert load_kernel("dgemv", c.kernel_search).directory == REPO_DIR / "kernels" / "dgemv"


def test_a_users_kernel_shadows_the_builtin_of_that_name(tmp_path):
    from conftest import copy_kernel

    mine = copy_kernel("dgemv", tmp_path / "own", like="dgemm")
    c = parse_config(cfg(kernels=["dgemv"], kernels_dir=str(tmp_path / "own")))
    assert load_kernel("dgemv", c.kernel_search).directory == mine


def test_kernels_dir_that_is_not_a_folder_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'kernels_dir': .*nowhere is not a directory"):
        parse_config(cfg(kernels_dir=str(tmp_path / "nowhere")))


def test_unknown_kernel_names_every_folder_looked_in(tmp_path):
    (tmp_path / "own").mkdir()
    with pytest.raises(ConfigError, match=rf"unknown kernel 'sgemv'.*{tmp_path / 'own'} or "):
        parse_config(cfg(kernels=["sgemv"], kernels_dir=str(tmp_path / "own")))
