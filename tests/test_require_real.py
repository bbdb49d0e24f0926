"""The CI policy itself: under LLMTOP_REQUIRE_REAL=1 every skip fails unless allow-listed.

An inner pytest run (pytester) uses tests/conftest.py's report hooks on a tiny test file.
"""

from __future__ import annotations

import pytest

from tests.conftest import ALLOWED_SKIPS

pytest_plugins = ["pytester"]

ALLOWED = next(iter(ALLOWED_SKIPS))
# in-process inner run: no cache, and not the SVG snapshot plugin (its temp dir is per process)
INNER_ARGS = ("-p", "no:cacheprovider", "-p", "no:textual-snapshot", "-rA",
              "-o", "asyncio_default_fixture_loop_scope=function")  # fmt: skip

INNER = f"""
import sys
import pytest

def test_plain_skip():
    pytest.skip("no widget here")

@pytest.mark.skipif(True, reason="marker says no")
def test_skipif_marker():
    pass

def test_importorskip():
    pytest.importorskip("llmtop_no_such_module")

@pytest.fixture
def needs_thing():
    pytest.skip("fixture cannot find the thing")

def test_fixture_skip(needs_thing):
    pass

@pytest.mark.xfail(reason="known broken")
def test_xfail():
    assert False

def test_allow_listed():
    pytest.skip({ALLOWED!r})

def test_runs():
    assert True
"""

INNER_MODULE_SKIP = """
import pytest
pytest.importorskip("llmtop_no_such_module_either")

def test_never_collected():
    pass
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    # the inner run's conftest is the real one's hooks, not a copy of them
    pytester.makeconftest(
        "from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport\n"
    )
    pytester.makepyfile(test_inner=INNER, test_inner_module=INNER_MODULE_SKIP)
    return pytester


def test_without_require_real_skips_stay_skips(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMTOP_REQUIRE_REAL", raising=False)
    result = inner.runpytest(*INNER_ARGS)
    result.assert_outcomes(passed=1, skipped=6, xfailed=1)


def test_require_real_fails_every_skip_but_the_allow_listed(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMTOP_REQUIRE_REAL", "1")
    result = inner.runpytest(*INNER_ARGS, "--continue-on-collection-errors")
    # pytest.skip, importorskip and xfail in the call fail; a skipif marker or a skipping
    # fixture is a setup error; the module skipped at import is a collection error; only the
    # allow-listed reason is still a skip.
    result.assert_outcomes(passed=1, skipped=1, failed=3, errors=3)
    out = result.stdout.str()
    for reason in ("'no widget here'", "'marker says no'", "'fixture cannot find the thing'",
                   "'xfail: known broken'", "'could not import 'llmtop_no_such_module'",
                   "'could not import 'llmtop_no_such_module_either'"):  # fmt: skip
        assert f"skipped under LLMTOP_REQUIRE_REAL=1: {reason}" in out.replace('"', "'"), reason
    assert "ALLOWED_SKIPS" in out
    assert result.ret != 0
    skipped = [r for r in result.reprec.getreports("pytest_runtest_logreport") if r.skipped]
    assert [r.nodeid.rsplit("::", 1)[-1] for r in skipped] == ["test_allow_listed"]


def test_every_allowed_skip_says_why() -> None:
    assert ALLOWED_SKIPS
    for reason, why in ALLOWED_SKIPS.items():
        assert reason.strip() and len(why) > 40, reason
