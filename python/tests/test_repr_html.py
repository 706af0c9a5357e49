"""``_repr_html_`` of Database and Reader (what Jupyter shows): the values are the API's, text is
escaped, and rendering never raises (closed, empty, broken, many indexes)."""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

import hannoy
from hannoy import Metric
from hannoy._summary import MAX_ENTRY_POINTS, MAX_HTML_INDEXES, human_bytes
from helpers import build_index


class _Tables(HTMLParser):
    """Collects the text of every table row (a list of cell texts) and of every other div."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: List[List[str]] = []
        self.notes: List[str] = []
        self.title: Optional[str] = None
        self._cell: Optional[List[str]] = None
        self._row: Optional[List[str]] = None
        self._where: List[str] = []
        self._text: List[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._where.append(tag)
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("div", "strong"):
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        self._where.pop()
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "strong":
            self.title = "".join(self._text)
        elif tag == "div" and self._text:
            self.notes.append("".join(self._text))
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._where and self._where[-1] == "style":
            return
        if self._cell is not None:
            self._cell.append(data)
        else:
            self._text.append(data)


def parse(html: str) -> _Tables:
    assert isinstance(html, str) and html.startswith('<div class="hannoy-repr">')
    p = _Tables()
    p.feed(html)
    p.close()
    return p


def fields(p: _Tables) -> Dict[str, str]:
    """The two-column rows (name: value)."""
    return {r[0]: r[1] for r in p.rows if len(r) == 2 and not r[0].isdigit()}


def index_rows(p: _Tables) -> Dict[int, List[str]]:
    """The rows of the table of indexes, by index id (the header row left out)."""
    return {int(r[0]): r for r in p.rows if len(r) >= 2 and r[0].isdigit()}


def entry_text(eps: List[int]) -> str:
    shown = ", ".join(str(e) for e in eps[:MAX_ENTRY_POINTS])
    more = ", … %d more" % (len(eps) - MAX_ENTRY_POINTS) if len(eps) > MAX_ENTRY_POINTS else ""
    return "%d: %s%s" % (len(eps), shown, more)


@pytest.fixture
def several(tmp_path: Path) -> hannoy.Database:
    """A cosine database at a path with characters HTML must escape; three indexes."""
    path = tmp_path / 'a<b>&"c'
    rng = np.random.default_rng(5)
    db = hannoy.Database(path, Metric.COSINE)
    build_index(db, rng.standard_normal((2500, 8)).astype(np.float32), seed=1)
    build_index(db, rng.standard_normal((30, 3)).astype(np.float32), index=4)
    build_index(db, rng.standard_normal((1, 5)).astype(np.float32), index=65535)
    yield db
    db.close()


def test_database_html_has_the_api_values(several: hannoy.Database) -> None:
    html = several._repr_html_()
    assert "<b>" not in html and 'a&lt;b&gt;&amp;&quot;c' in html  # escaped
    p = parse(html)
    assert p.title == "hannoy.Database"
    f = fields(p)
    assert f["path"] == several.path
    assert f["metric"] == "cosine"
    assert f["file size"] == human_bytes(os.path.getsize(os.path.join(several.path, "data.mdb")))
    assert f["format version"] == hannoy.library_info()["format"] == "0.1.3"
    assert f["indexes"] == "3"
    rows = index_rows(p)
    assert sorted(rows) == [0, 4, 65535]
    for i, row in rows.items():
        with several.reader(i) as r:
            s = r.stats()
        assert row == [
            str(i),
            "cosine",
            str(s["dimensions"]),
            "{:,}".format(s["n_items"]),
            entry_text(s["entry_points"]),
            str(s["max_level"] + 1),
            s["version"],
        ]
    assert rows[0][3] == "2,500" and rows[65535][2:4] == ["5", "1"]


def test_reader_html_has_the_api_values(several: hannoy.Database) -> None:
    with several.reader(0) as r:
        s = r.stats()
        p = parse(r._repr_html_())
    assert p.title == "hannoy.Reader"
    f = fields(p)
    assert f["path"] == several.path
    assert f["index"] == "0"
    assert f["metric"] == "cosine"
    assert f["dimensions"] == "8"
    assert f["items"] == "2,500"
    assert f["entry points"] == entry_text(s["entry_points"])
    assert f["layers"] == str(s["max_level"] + 1)
    assert f["format version"] == "0.1.3"
    assert f["read mode"] == s["read_mode"]
    size = os.path.getsize(os.path.join(several.path, "data.mdb"))
    assert f["file size"] == "%s (%s used)" % (human_bytes(size), human_bytes(s["file_bytes"]))


def test_closed_objects_render_a_note(several: hannoy.Database) -> None:
    r = several.reader(4)
    r.close()
    p = parse(r._repr_html_())
    assert "closed" in p.notes and fields(p)["index"] == "4"
    r2 = several.reader(0)
    several.close()  # closes its readers too
    for obj in (several, r2):
        p = parse(obj._repr_html_())
        assert "closed" in p.notes
        assert fields(p)["path"] == several.path


def test_empty_database(tmp_path: Path) -> None:
    with hannoy.Database(tmp_path / "empty", Metric.EUCLIDEAN) as db:
        p = parse(db._repr_html_())
    assert fields(p)["indexes"] == "0"
    assert "no built index yet" in p.notes
    assert index_rows(p) == {}


def test_indexes_that_cannot_be_opened_show_their_error(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with hannoy.Database(path, Metric.EUCLIDEAN) as db:
        build_index(db, np.eye(3, dtype=np.float32))
        build_index(db, np.eye(3, dtype=np.float32), index=1)
        w = db.writer(3, index=1)  # committed without a build
        w.add_item(9, [1.0, 1.0, 1.0])
        w.commit()
        rows = index_rows(parse(db._repr_html_()))
        assert rows[0][2:4] == ["3", "3"]
        assert rows[1][1].startswith("NeedBuildError: ")
        # an open writer of this thread does not stop the rendering
        with db.writer(3, index=2) as w:
            w.add_item(0, [1.0, 0.0, 0.0])
            assert sorted(index_rows(parse(db._repr_html_()))) == [0, 1]
    with hannoy.Database(path, Metric.COSINE) as other:  # opened with another metric
        rows = index_rows(parse(other._repr_html_()))
        assert sorted(rows) == [0, 1, 2]
        assert rows[0][1].startswith("MetricMismatchError: ") and "euclidean" in rows[0][1]


def test_many_indexes_are_summarised(tmp_path: Path) -> None:
    with hannoy.Database(tmp_path / "many", Metric.EUCLIDEAN) as db:
        for i in range(MAX_HTML_INDEXES + 3):
            build_index(db, np.eye(2, dtype=np.float32), index=i * 10)
        p = parse(db._repr_html_())
    assert fields(p)["indexes"] == str(MAX_HTML_INDEXES + 3)
    assert sorted(index_rows(p)) == [i * 10 for i in range(MAX_HTML_INDEXES)]
    assert "3 more indexes: 160, 170, 180" in p.notes


def test_named_database_beside_the_main_one(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with hannoy.Database(path, Metric.EUCLIDEAN, name="second") as db:
        build_index(db, np.eye(4, dtype=np.float32), index=3)
        f = fields(parse(db._repr_html_()))
        assert (f["name"], f["indexes"]) == ("second", "1")
    with hannoy.Database(path, Metric.EUCLIDEAN) as db:
        build_index(db, np.eye(2, dtype=np.float32))
        # the main database holds the record naming "second": still one index
        assert sorted(index_rows(parse(db._repr_html_()))) == [0]


def test_never_raises(several: hannoy.Database, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: object) -> dict:
        raise KeyError("boom")

    monkeypatch.setattr(hannoy.Database, "stats", broken)
    p = parse(several._repr_html_())
    assert p.title == repr(several)
    assert any("could not describe it: KeyError" in n for n in p.notes)
    with several.reader() as r:
        monkeypatch.setattr(hannoy.Reader, "stats", broken)
        p = parse(r._repr_html_())
        assert p.title == repr(r) and any("KeyError" in n for n in p.notes)
