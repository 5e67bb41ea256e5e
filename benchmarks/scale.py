"""How lockstep scales: decisions/s and lockstep efficiency of TempestVecEnv with many emulators.

    python benchmarks/scale.py [--clients 8 32 128] [--seconds 10] [--modes env model+labels]

No MAME: a fleet of synthetic clients (one separate process, all connections multiplexed, so that 128 of them do
not need 128 processes on a small machine) speaks the real protocol to a ``TempestVecEnv`` in remote mode, and
each client keeps the real Lua client's timing (lua/tempest_gym/client.lua), with the parameters measured on
MAME 0.251 playing Tempest (see ``TickModel``):

* a tick is 2 or 3 video frames of emulation (25 % are 3: the game's loop runs every 9 of its 4.1-per-frame
  IRQs); a video frame takes ``1 / fps`` seconds, times the client's speed factor (hosts and scenes differ,
  lognormal ``--spread``) and a per-frame jitter, and now and then a hiccup (``--hiccup``);
* the client sends its STATE at the tick; on 40 % of the ticks (the game's IRQ counter leaves slack) it emulates
  one more frame before it needs the ACTION (pipelining), otherwise it waits for the ACTION at once; then it
  emulates the rest of the tick and sends the next STATE.

Waiting costs the fleet no CPU, so the figures are about lockstep and the server, not about emulation.
Per client count and mode it prints:

* ``decisions/s``: env steps x clients per wall second;
* ``efficiency``: lockstep efficiency, the clients' busy (emulating) time / (clients x wall time). Lockstep waits
  for the slowest client of every step, so it falls as clients are added;
* ``bound``: the efficiency lockstep allows with a server that answers the moment the last state is in (the same
  model, simulated);
* ``server us/step``: CPU time of the server process per step (the learner host's own cost).

Modes: ``env`` (constant actions), ``model`` (HybridDQN greedy inference over all clients, 1 torch thread),
``model+labels`` (the same plus the expert's label for every observation, computed after the reply, as
training collects). Figures only, no assertions. On a machine with few cores the fleet, the server and the
policy share them: say so when quoting the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import logging
import multiprocessing as mp
import secrets
import selectors
import socket
import sys
import time
from dataclasses import dataclass

import numpy as np

from tempest_gym.bridge import protocol
from tempest_gym.bridge.layout import default_layout


@dataclass(frozen=True)
class TickModel:
    """How long a MAME client emulates per tick. Measured on MAME 0.251, Tempest, a 2-core AMD EPYC VM, quiet:
    20,000 frames with a do-nothing frame callback took 0.77 ms on average (median 0.785, 99 % under 1.42 ms,
    0.5 % over 2 ms, 0.03 % over 5 ms, the longest 9.6 ms); 12,000 ticks of expert play (levels 1-26) were 2 or 3
    frames long (25 % 3); at 41 % of 3,000 ticks the game's IRQ counter ($53) left slack for pipelining."""

    fps: float = 1300.0  # video frames/s of one instance at full speed
    p3: float = 0.25  # share of 3-frame ticks (the rest are 2 frames)
    p_pipe: float = 0.41  # share of ticks whose reply may come one frame late
    spread: float = 0.05  # sigma of the clients' lognormal speed factors (one draw per client: hosts differ)
    jitter: float = 0.05  # sigma of the lognormal per-frame jitter
    hiccup: float = 0.005  # chance that a frame takes `hiccup_ms` more (the OS, the VM, MAME's housekeeping)
    hiccup_ms: float = 2.5

    def speeds(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.exp(rng.normal(0.0, self.spread, n))

    def frames(self, rng: np.random.Generator, size) -> np.ndarray:
        """Seconds of emulation for ``size`` single frames at speed 1."""
        t = np.exp(rng.normal(0.0, self.jitter, size)) / self.fps
        return t + (rng.random(size) < self.hiccup) * self.hiccup_ms / 1000.0

    def ticks(self, rng: np.random.Generator, size) -> tuple[np.ndarray, np.ndarray]:
        """Frames per tick (2 or 3) and whether the tick is pipelined, for ``size`` ticks."""
        return 2 + (rng.random(size) < self.p3), rng.random(size) < self.p_pipe


def lockstep_bound(model: TickModel, n: int, steps: int = 3000, seed: int = 1) -> float:
    """Efficiency of lockstep with a server that answers the moment the last state is in, simulated with the
    fleet's timing: a client's next tick comes k frames after its tick; a pipelined client spends the first of
    them before it needs the reply, the others wait for it first."""
    rng = np.random.default_rng(seed)
    speed = model.speeds(rng, n)
    tick = np.zeros(n)  # when each client sent its state of this step
    busy = 0.0
    for _ in range(steps):
        k, piped = model.ticks(rng, n)
        frames = [model.frames(rng, n) * speed for _ in range(3)]
        reply = tick.max()
        first = np.where(piped, np.maximum(tick + frames[0], reply), reply + frames[0])
        rest = frames[1] + np.where(k == 3, frames[2], 0.0)
        busy += float((frames[0] + rest).sum())
        tick = first + rest
    return float(busy / (n * tick.max()))


# ---------------------------------------------------------------------------------------------- the fleet
WAIT, PIPE_FRAME, EMULATE = 0, 1, 2  # a client: waiting for its ACTION, in the pipelined frame, emulating the rest


def run_fleet(port: int, token: str, n: int, model: TickModel, seed: int, conn) -> None:  # pragma: no cover
    """N synthetic clients with MAME's tick timing in one process; after the server closes, reports the clients'
    busy seconds inside the window (t0, t1) that main sends."""
    layout = default_layout()
    rng = np.random.default_rng(seed)
    raw = rng.integers(layout.lo, layout.hi + 1, size=(64, layout.size))
    pool = [row.tobytes() for row in (raw / layout.scale).astype("<f4")]
    speeds = model.speeds(rng, n).tolist()
    socks, decoders = [], []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = protocol.Hello(protocol.PROTOCOL_VERSION, layout.size, layout.hash, int(rng.integers(2**62)), i, 0,
                               "scale fleet", token)  # fmt: skip
        s.sendall(protocol.encode_hello(hello))
        dec = protocol.FrameDecoder()
        while (body := dec.next_body()) is None:
            dec.feed(s.recv(1 << 16))
        if body[0] != protocol.WELCOME:
            raise SystemExit(f"fleet client {i} refused: {protocol.decode_reject(body)}")
        s.setblocking(False)
        socks.append(s)
        decoders.append(dec)
    # select(2) takes microsecond timeouts (epoll rounds them up to whole milliseconds, which would stretch every
    # simulated tick); 128 clients are far below its descriptor limit
    sel = selectors.SelectSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)

    draws = {"frame": iter(()), "tick": iter(())}

    def frame_time(i: int) -> float:
        try:
            return next(draws["frame"]) * speeds[i]
        except StopIteration:
            draws["frame"] = iter(model.frames(rng, 8192).tolist())
            return frame_time(i)

    def tick_shape() -> tuple[int, bool]:
        try:
            return next(draws["tick"])
        except StopIteration:
            k, piped = model.ticks(rng, 8192)
            draws["tick"] = iter(zip(k.tolist(), piped.tolist(), strict=True))
            return tick_shape()

    seq = [0] * n
    phase = [EMULATE] * n
    frames_left = [0] * n
    got_action = [False] * n
    busy: list[list[tuple[float, float]]] = [[] for _ in range(n)]  # (start, seconds) of each emulation stretch
    due: list[tuple[float, int]] = []  # when a client's emulation stretch ends

    def emulate(i: int, frames: int, now: float) -> None:
        d = sum(frame_time(i) for _ in range(frames))
        busy[i].append((now, d))
        heapq.heappush(due, (now + d, i))

    def on_action(i: int, now: float) -> None:
        if phase[i] == WAIT:
            phase[i] = EMULATE
            emulate(i, frames_left[i], now)
        else:  # still in its pipelined frame: the rest of the tick starts when that frame is done
            got_action[i] = True

    now = time.monotonic()
    for i in range(n):  # one tick of emulation before the first state
        frames_left[i] = 2
        emulate(i, 2, now)
    open_ = n
    while open_:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else 1.0
        for key, _ in sel.select(timeout):
            i = key.data
            try:
                chunk = socks[i].recv(1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(socks[i])
                open_ -= 1
                continue
            decoders[i].feed(chunk)
            while (body := decoders[i].next_body()) is not None:
                command, _fz, _spin, rseq, _arg = protocol.decode_action(body)
                if command == protocol.CMD_QUIT:
                    sel.unregister(socks[i])
                    open_ -= 1
                    break
                if rseq != seq[i]:
                    raise SystemExit(f"fleet client {i}: ACTION answers {rseq}, expected {seq[i]}")
                on_action(i, time.monotonic())
        now = time.monotonic()
        while due and due[0][0] <= now:
            t, i = heapq.heappop(due)
            if phase[i] == PIPE_FRAME:  # the pipelined frame is done: go on if the ACTION came meanwhile
                if got_action[i]:
                    phase[i] = EMULATE
                    emulate(i, frames_left[i], t)
                else:
                    phase[i] = WAIT
                continue
            # the tick: send the STATE, then pipeline one frame or wait for the ACTION
            seq[i] += 1
            header = protocol.StateHeader(protocol.F_CONTROL | protocol.F_APPLIED, 4, 1, 3, 0, 0, seq[i], 2 * seq[i], 0,
                                          0.0, 0.0)  # fmt: skip
            with contextlib.suppress(OSError):  # the server is closing
                socks[i].sendall(protocol.encode_state(header, pool[seq[i] % 64]))
            k, piped = tick_shape()
            got_action[i] = False
            if piped:
                phase[i], frames_left[i] = PIPE_FRAME, k - 1
                emulate(i, 1, now)
            else:
                phase[i], frames_left[i] = WAIT, k
    t0, t1 = conn.recv()
    total = 0.0
    for i in range(n):
        if busy[i]:
            s, d = np.array(busy[i]).T
            total += float(np.clip(np.minimum(s + d, t1) - np.maximum(s, t0), 0.0, None).sum())
    conn.send(total)
    for s in socks:
        s.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(n: int, mode: str, seconds: float, model: TickModel, seed: int) -> dict[str, float]:
    from tempest_gym.env.vec_env import TempestVecEnv

    port, token = free_port(), secrets.token_hex(16)
    here, there = mp.Pipe()
    fleet = mp.get_context("fork").Process(target=run_fleet, args=(port, token, n, model, seed, there), daemon=True)
    env = TempestVecEnv(num_envs=n, remote=True, port=port, token=token, expert="labels" in mode,
                        expert_after_reply=True, step_timeout=60.0)  # fmt: skip
    fleet.start()
    policy = None
    try:
        obs = env.reset()
        if mode.startswith("model"):
            from tempest_gym.hybrid_dqn import HybridDQN

            policy = HybridDQN("MlpPolicy", env, buffer_size=1000, learning_starts=10**9, device="cpu")
        action = np.zeros((n, 2), np.float32)
        warm_end = time.perf_counter() + min(2.0, seconds / 4)
        while time.perf_counter() < warm_end:
            if policy is not None:
                action, _ = policy.predict(obs, deterministic=True)
            obs, _, _, _ = env.step(action)
        steps = 0
        t0, c0 = time.monotonic(), time.process_time()
        while time.monotonic() - t0 < seconds:
            if policy is not None:
                action, _ = policy.predict(obs, deterministic=True)
            obs, _, _, _ = env.step(action)
            steps += 1
        t1, c1 = time.monotonic(), time.process_time()
    finally:
        env.close()
    here.send((t0, t1))
    busy = here.recv()
    fleet.join(10)
    wall = t1 - t0
    return {
        "decisions": steps * n / wall,
        "efficiency": busy / (n * wall),
        "server_us": (c1 - c0) / steps * 1e6,
        "step_ms": wall / steps * 1e3,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--modes", nargs="+", default=["env", "model+labels"], choices=["env", "model", "model+labels"])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--fps", type=float, default=TickModel.fps, help="video frames/s of one emulator")
    p.add_argument("--spread", type=float, default=TickModel.spread, help="sigma of the clients' speed factors")
    p.add_argument("--hiccup", type=float, default=TickModel.hiccup, help="chance of a slow frame")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import torch as th

    th.set_num_threads(1)
    logging.getLogger("tempest_gym").setLevel(logging.ERROR)  # "waiting for N remote client(s)"
    model = TickModel(fps=args.fps, spread=args.spread, hiccup=args.hiccup)
    print(f"tick model: {model}")
    print(f"{'clients':>7} {'mode':>13} {'decisions/s':>12} {'efficiency':>10} {'bound':>6} {'step ms':>8} "
          f"{'server us/step':>14}")  # fmt: skip
    for n in args.clients:
        bound = lockstep_bound(model, n)
        for mode in args.modes:
            r = measure(n, mode, args.seconds, model, args.seed)
            print(f"{n:>7} {mode:>13} {r['decisions']:>12,.0f} {r['efficiency']:>10.2f} {bound:>6.2f} "
                  f"{r['step_ms']:>8.2f} {r['server_us']:>14,.0f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
