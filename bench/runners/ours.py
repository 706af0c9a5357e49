"""This repository's hannoy (Go engine), installed into bench/.venv with `pip install <repo root>`.

Same API as upstream, plus `threads=` on db.writer and on Reader.by_array, so the batch call is
measured on 1 and on --threads threads. Builds use --threads threads.
"""

import os
import sys

from runners.common import main
from runners.hannoy_common import HannoyRunner


class Ours(HannoyRunner):
    batch_threads_control = True
    batch_also_one_thread = True

    def __init__(self, metric, dims, n, threads):
        super().__init__(metric, dims, n, threads)
        self.writer_kwargs = {"threads": threads}

    @classmethod
    def import_hannoy(cls):
        import hannoy

        if os.sep + "upstream" + os.sep in os.path.abspath(hannoy.__file__):
            raise ImportError("imported upstream hannoy from %s, expected this repository's" % hannoy.__file__)
        return hannoy


if __name__ == "__main__":
    sys.exit(main(Ours))
