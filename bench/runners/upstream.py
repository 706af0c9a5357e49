"""Upstream hannoy 0.1.3 (the Rust package from the Python package index).

It imports as `hannoy` too, so bench/run.sh installs it into its own directory
(`pip install --target bench/.cache/upstream hannoy==0.1.3`) and this process puts that directory
first on sys.path (HANNOY_UPSTREAM_DIR overrides the location). Its writer takes no thread
count (rayon uses every core); its by_array takes none either (the driver caps rayon with
RAYON_NUM_THREADS). The GIL is held during its calls.
"""

import os
import sys

from runners.common import main
from runners.hannoy_common import HannoyRunner

DEFAULT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "upstream")


class Upstream(HannoyRunner):
    @classmethod
    def import_hannoy(cls):
        where = os.path.abspath(os.environ.get("HANNOY_UPSTREAM_DIR", DEFAULT_DIR))
        if not os.path.isdir(os.path.join(where, "hannoy")):
            raise ImportError("upstream hannoy is not installed in %s (bash bench/run.sh installs it)" % where)
        if sys.path[:1] != [where]:
            sys.path.insert(0, where)
        import hannoy

        if not os.path.abspath(hannoy.__file__).startswith(where + os.sep):
            raise ImportError("imported hannoy from %s, expected upstream in %s" % (hannoy.__file__, where))
        return hannoy

    def ids_arg(self, ids):
        return ids.tolist()


if __name__ == "__main__":
    sys.exit(main(Upstream))
