"""Errors a user can act on. Each message says what happened and what to do about it."""

from __future__ import annotations


class TempestGymError(RuntimeError):
    """Base class for tempest-gym failures."""


class MameNotFoundError(TempestGymError):
    """No MAME binary where we looked."""


class RomsNotFoundError(TempestGymError):
    """The ROM path is missing, or MAME says the tempest1 set there is incomplete or bad."""


class PortInUseError(TempestGymError):
    """The server could not bind its port."""


class ClientTimeoutError(TempestGymError):
    """A MAME client did not connect, or did not send its next state, in time."""


class ClientDisconnectedError(TempestGymError):
    """A MAME client closed its connection or its process exited."""
