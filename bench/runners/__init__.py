"""One module per library. Each runs in its own process: `python -m runners.<lib> <phase> ...`
(from bench/) and prints one JSON line. See common.py for the phases and what they measure.

The modules import their library lazily, so the driver can read METRICS without having it.
"""

# name in results -> module (runners.<module>)
LIBS = {
    "ours": "ours",
    "upstream": "upstream",
    "hnswlib": "peer_hnswlib",
    "usearch": "peer_usearch",
    "faiss": "peer_faiss",
}
HANNOY_LIBS = ("ours", "upstream")
