"""``python -P -m controller`` / ``ipcluster-controller``: run one controller."""

from controller.app import main

if __name__ == "__main__":
    main()
