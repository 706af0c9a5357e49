"""One version everywhere: capi/VERSION (the file Go embeds and pyproject.toml reads) is what
``hannoy.__version__``, ``library_info()["version"]``, the installed distribution's metadata
and the name of the wheel it was installed from say."""

from __future__ import annotations

import json
import os
import re
from importlib import metadata
from pathlib import Path

import pytest

import hannoy

from helpers import REPO_DIR

INSTALLED = os.environ.get("HANNOY_TEST_INSTALLED") == "1"
VERSION_FILE = REPO_DIR / "capi" / "VERSION"


def _version_file() -> str:
    return VERSION_FILE.read_text(encoding="ascii").strip()


@pytest.mark.nolib
def test_version_file_is_a_release_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", _version_file()), _version_file()


@pytest.mark.nolib
def test_package_version_is_the_version_file() -> None:
    assert hannoy.__version__ == _version_file()


def test_library_version_is_the_package_version() -> None:
    assert hannoy.library_info()["version"] == hannoy.__version__


def _distribution() -> metadata.Distribution:
    if not INSTALLED:
        pytest.skip("testing the source tree (HANNOY_TEST_INSTALLED=1 tests the installed package)")
    dist = metadata.distribution("hannoy")
    # the metadata must be the tested package's own (not another hannoy on the path)
    files = [f for f in dist.files or [] if str(f).replace("\\", "/") == "hannoy/__init__.py"]
    assert files, "the hannoy distribution does not list hannoy/__init__.py"
    assert Path(str(files[0].locate())).resolve() == Path(hannoy.__file__).resolve()
    return dist


@pytest.mark.nolib
def test_distribution_version_is_the_package_version() -> None:
    assert _distribution().version == hannoy.__version__


@pytest.mark.nolib
def test_wheel_is_for_any_python_3() -> None:
    """The installed wheel is tagged py3-none-<platform> (cffi ABI mode; the extension is
    optional), and when it was installed from a file, that file's name has the version."""
    dist = _distribution()
    wheel = dist.read_text("WHEEL")
    assert wheel is not None
    tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
    assert tags and all(t.startswith("py3-none-") for t in tags), tags
    direct_url = dist.read_text("direct_url.json")
    if direct_url is None:
        pytest.skip("installed from an index: no file name to check")
    url = json.loads(direct_url)["url"]
    name = url.rsplit("/", 1)[-1]
    if not name.endswith(".whl"):
        pytest.skip("installed from %s, not from a wheel file" % url)
    # name-version-pythontag-abitag-platformtags.whl, compressed tags joined by "."
    _, version, python, abi, platforms = name[: -len(".whl")].split("-")
    assert version == hannoy.__version__, name
    assert {"%s-%s-%s" % (python, abi, p) for p in platforms.split(".")} == set(tags), (name, tags)
