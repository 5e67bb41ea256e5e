"""The CLI toolkit: shared argument groups, one env factory, one error-to-exit-code wrapper, console scripts, and
the old ``python -m tempest_gym.<tool>`` entry points (no MAME)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tempest_gym.cli import common, enjoy, evaluate, train
from tempest_gym.errors import MameNotFoundError

REPO = Path(__file__).resolve().parent.parent
TOOLS = ("train", "enjoy", "evaluate", "replay", "plot", "client")


def setup_kwargs() -> dict:
    """The keyword arguments setup.py gives setuptools.setup (without running a build)."""
    import setuptools

    captured: dict = {}
    real = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    try:
        code = compile((REPO / "setup.py").read_text(), str(REPO / "setup.py"), "exec")
        exec(code, {"__file__": str(REPO / "setup.py"), "__name__": "setup"})
    finally:
        setuptools.setup = real
    return captured


def test_every_tool_is_a_console_script_and_no_top_level_policies_module():
    kw = setup_kwargs()
    scripts = dict(s.split("=") for s in kw["entry_points"]["console_scripts"])
    assert scripts == {f"tempest-{t}": f"tempest_gym.cli.{t}:main" for t in TOOLS}
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func))
    assert all(p == "tempest_gym" or p.startswith("tempest_gym.") for p in kw["packages"]), kw["packages"]
    assert "tempest_gym.policies" in kw["packages"] and kw["package_dir"]["tempest_gym.policies"] == "policies"


@pytest.mark.parametrize("tool", TOOLS)
def test_old_python_m_entry_points_still_work(tool):
    out = subprocess.run([sys.executable, "-m", f"tempest_gym.{tool}", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")


def test_tools_share_the_emulator_and_player_groups():
    for parse in (enjoy.parse_args, evaluate.parse_args):
        args = parse(["--algo", "random", "--rompath", "R", "--mame", "M", "--start-level", "5", "--lives", "2",
                      "--seed", "7", "--num-envs", "3", "-f", "F", "--exp-id", "2", "--load-best"])  # fmt: skip
        assert common.emulator_kwargs(args) == dict(num_envs=3, rompath="R", mame="M", start_level=5, lives=2, seed=7)
        assert (args.folder, args.exp_id, args.load_best, args.model) == ("F", 2, True, None)
    # train: the group's defaults are "not given", so the YAML's env_kwargs decide; given, they override it
    hp, env_kwargs, *_ = train.prepare(train.parse_args(["--lives", "2", "--start-level", "5", "--num-envs", "3"]))
    assert env_kwargs["lives"] == 2 and env_kwargs["start_level"] == 5 and env_kwargs["num_envs"] == 3
    _, env_kwargs, *_ = train.prepare(train.parse_args([]))
    assert env_kwargs["lives"] == 3 and "seed" not in env_kwargs and "rompath" not in env_kwargs


def test_env_factory_takes_the_group_values_and_overrides():
    args = enjoy.parse_args(["--algo", "random", "--num-envs", "2", "--lives", "4", "--start-level", "3"])
    env = common.make_env(args, expert=False, lives=5)
    try:
        assert env.num_envs == 2 and env.cluster_config.lives == 5 and env.cluster_config.start_level == 3
        assert env.expert is None
    finally:
        env.close()


def test_exit_codes(capsys):
    @common.exit_codes
    def tool(argv):
        what = argv[0]
        if what == "setup":
            with common.starting("config: "):
                raise KeyError("no such section")
        if what == "mame":
            with common.starting():
                raise MameNotFoundError("MAME not found")
        if what == "runtime":
            raise MameNotFoundError("MAME went away")
        if what == "interrupt":
            raise KeyboardInterrupt
        if what == "bug":
            raise ZeroDivisionError
        return None

    assert tool(["ok"]) == 0
    assert tool(["setup"]) == 2 and "error: config: 'no such section'" in capsys.readouterr().err
    assert tool(["mame"]) == 2 and "error: MAME not found" in capsys.readouterr().err
    assert tool(["runtime"]) == 1 and "error: MAME went away" in capsys.readouterr().err
    assert tool(["interrupt"]) == 130
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        tool(["bug"])


def test_tools_exit_2_when_they_cannot_start(tmp_path, capsys):
    missing = str(tmp_path / "nothing")
    assert evaluate.main(["--algo", "hybrid_dqn", "--model", f"{missing}.zip", "--mame", missing]) == 2
    assert "not found" in capsys.readouterr().err
    assert train.main(["-conf", f"{missing}.yml"]) == 2
    assert "not found" in capsys.readouterr().err
    assert enjoy.main(["--algo", "nope"]) == 2
    assert "unknown algorithm 'nope'" in capsys.readouterr().err


def test_parse_server():
    assert common.parse_server("[::1]:9000") == ("::1", 9000)
    assert common.parse_server("trainer.example:9000") == ("trainer.example", 9000)
    with pytest.raises(ValueError, match="HOST:PORT"):
        common.parse_server("9000")
