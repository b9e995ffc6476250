"""``python -m xinference.deploy.cmdline_local``: the same as ``xinference-local``."""

from .cmdline import local

if __name__ == "__main__":
    local()
