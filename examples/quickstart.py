"""Quick start: start a local cluster, run work on every engine, stop it.

    python examples/quickstart.py
"""

import os

import ipcluster as ipp


def main() -> None:
    # Starts a controller and 4 engines on this machine; stops them when the block ends.
    with ipp.Cluster(n=4) as rc:
        print("engines:", rc.ids)

        dview = rc[:]                                  # a DirectView on all engines
        print("engine pids:", dview.apply_sync(os.getpid))

        dview["scale"] = 10                            # push a variable to every engine
        # functions defined in a script or notebook run in the engines' namespace
        print("scaled:", dview.apply_sync(lambda: scale * 2))  # noqa: F821

        squares = dview.map_sync(lambda x: x * x, range(16))   # split over the engines
        print("squares:", squares)

        ar = rc[0].apply_async(sum, range(1_000_000))  # non-blocking: returns a future
        print("sum:", ar.get(timeout=30), f"(took {ar.wall_time * 1e3:.1f} ms)")

        ar = dview.execute("import platform; print(platform.python_version())", block=False)
        ar.get(timeout=30)
        ar.display_outputs()                           # [stdout:0] 3.11.7 ...
        try:
            rc[1].apply_sync(lambda: 1 / 0)
        except ZeroDivisionError as e:                 # remote errors keep their type
            print("caught remote error:", e)


if __name__ == "__main__":
    main()
