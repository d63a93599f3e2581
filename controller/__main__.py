"""``python -P -m controller`` / ``ipcluster-controller``: run one controller."""

from controller.app import main
from ipcluster.schedpolicy import use_batch_scheduling


def run() -> None:
    """The process's entry point: batch scheduling (see :mod:`ipcluster.schedpolicy`) before any
    thread exists, then the controller.  (``main`` alone leaves the calling process's policy.)"""
    use_batch_scheduling()
    main()


if __name__ == "__main__":
    run()
