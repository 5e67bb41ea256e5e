"""tempest-gym: reinforcement learning on Atari's Tempest (1981) in real MAME, as an SB3 extension."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
LUA_FILES = [str(p.relative_to(HERE)) for p in sorted((HERE / "lua").rglob("*")) if p.is_file()]


def lua_data_files():
    """Install lua/ under <prefix>/share/tempest-gym/lua (tempest_gym.bridge.paths finds it there)."""
    by_dir: dict[str, list[str]] = {}
    for f in LUA_FILES:
        sub = str(Path(f).parent)
        by_dir.setdefault(f"share/tempest-gym/{sub}", []).append(f)
    return sorted(by_dir.items())


setup(
    name="tempest-gym",
    version="0.1.0",
    description="Gymnasium/SB3 environment and hybrid-action DQN for Tempest (1981) running in real MAME",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # only the tempest_gym package: the checkout's top-level policies/ (the expert) is installed as
    # tempest_gym.policies (in the checkout, tempest_gym/policies is a link to it), never as a top-level
    # module named "policies"
    packages=[
        *find_packages(include=["tempest_gym", "tempest_gym.*"], exclude=["tempest_gym.policies"]),
        "tempest_gym.policies",
        "tempest_gym.zoo_configs",
    ],
    # the top-level zoo_configs/ is installed as tempest_gym/zoo_configs/ (package data), where
    # tempest_gym.cli.zoo.default_config_file finds it without the checkout
    package_dir={"tempest_gym.policies": "policies", "tempest_gym.zoo_configs": "zoo_configs"},
    package_data={"tempest_gym.zoo_configs": ["*.yml"]},
    data_files=lua_data_files(),
    install_requires=[
        "stable-baselines3>=2.3,<3",
        "sb3-contrib>=2.3,<3",
        "gymnasium>=1.0,<2",
        # the CPU wheel: run `pip install torch==2.13.0` first (see README); a bare `torch`
        # requirement on a machine without it would pull a multi-GB CUDA build
        "torch>=2.3,<3",
        "numpy>=1.24,<3",
        "pyyaml>=6,<7",
        "rich>=13",
        "tqdm>=4",
        "tensorboard>=2.10",
        "matplotlib>=3.5",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.6"],
        # MAME clients placed by Ray (train --ray, TempestVecEnv(launcher="ray")); [default]: `ray start`, dashboard
        "ray": ["ray[default]>=2,<3"],
    },
    entry_points={
        "console_scripts": [
            f"tempest-{tool}=tempest_gym.cli.{tool}:main"
            for tool in ("train", "enjoy", "evaluate", "replay", "plot", "client")
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Games/Entertainment :: Arcade",
    ],
)
