"""The MFS data plane: host daemons, a coordinator, real transports and the emulated testbed.

Modules (who calls whom): :mod:`.protocol` frames control messages for everyone;
:mod:`.transport` moves real bytes for :mod:`.daemon`; the daemon runs the same policy objects
as the simulator and reports to :mod:`.coordinator`; :mod:`.netns` builds the emulated fabric;
:mod:`.engine` is the wall-clock engine that lets :class:`mfsched.sim.serving.Serving` drive the
daemons; :mod:`.testbed` puts it together and :mod:`.commands` exposes it on the command line.
"""
