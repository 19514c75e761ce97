"""Devices: one bench protocol, run where the artifact will run (this host, an ssh board, an adb phone, a container).

The device side (:mod:`devices.agent`, :mod:`devices.protocol`, :mod:`devices.environment`,
:mod:`devices.reference`) needs only numpy and the runtime of the artifact: no torch, no
tensorflow, and nothing from ``pipeline``. The host side (:mod:`devices.targets`,
:mod:`devices.inventory`) ships the agent and an artifact's bundle to a target and brings
the JSON result back.
"""

from devices.errors import DeviceError

__all__ = ["DeviceError"]
