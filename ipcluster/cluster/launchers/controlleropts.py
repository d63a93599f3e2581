"""The options every controller launcher passes to ``python -P -m controller``, in one place."""

from __future__ import annotations

from traitlets import Bool, HasTraits, List, Unicode


class ControllerOptions(HasTraits):
    """Traits of a controller launcher that become the controller's command-line options.

    Mixed into each controller launcher (local, MPI, SSH, batch) so that a setting such as
    ``enable_curve`` cannot be honoured by one and silently dropped by another.
    """

    ip = Unicode("127.0.0.1", help="The address the controller binds (on its host).")
    location = Unicode("", help="The address the controller advertises (default: its ip).")
    log_level = Unicode("INFO", help="The controller's log level.")
    enable_curve = Bool(False, help="CurveZMQ encryption and key checking on the controller's sockets.")
    curve_allowed_keys = List(Unicode(), help="More client public keys the controller accepts.")
    ipc = Bool(True, help="Unix domain sockets for processes on the controller's host (else TCP only).")
    controller_args = List(Unicode(), help="Extra command-line arguments for the controller.").tag(config=True)
    persist = Bool(False, help="Keep tasks and results in the controller's persistent store (--persist).")
    restore = Bool(False, help="Start from the store and connection file a killed controller left (--restore).")

    @classmethod
    def state_traits(cls) -> set[str]:
        """Recorded in the cluster file, so ``ipcluster stop`` elsewhere rebuilds the same launcher."""
        return {"ip", "location", "log_level"}

    def controller_options(self) -> list[str]:
        """``--ip ... --log-level ...`` (and ``--location``, Curve, ``controller_args``)."""
        args = ["--ip", self.ip, "--log-level", self.log_level]
        if self.location:
            args += ["--location", self.location]
        if self.enable_curve:
            args += ["--enable-curve"] + [f"--curve-allow={key}" for key in self.curve_allowed_keys]
        if self.persist:
            args.append("--restore" if self.restore else "--persist")
        if not self.ipc:
            args.append("--no-ipc")
        return args + list(self.controller_args)
