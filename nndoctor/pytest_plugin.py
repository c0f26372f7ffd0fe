"""The pytest plugin (entry point `pytest11`): an `nndoctor` fixture and marker.

    @pytest.mark.nndoctor(target="models/net.py:build", checks=["data", "init", "overfit"])
    def test_net_trains():
        pass                                  # the diagnosis is the test

    @pytest.mark.nndoctor(checks="data,init")
    def test_built_here():
        return build_model_and_loaders()      # ... of what the test returns

    def test_with_fixture(nndoctor):
        report = nndoctor("models/net.py:build", checks=["overfit"])

A diagnosis that finds a problem at or above `fail_on` fails the test with the
findings table as its message (and so in `--junitxml`'s <failure>); the
findings are also recorded as the test's junit properties. Relative target
paths are read from pytest's rootdir. Loading the plugin imports neither torch
nor the checks: they are imported when a diagnosis runs, so the plugin costs
nothing in test suites that do not use it.
"""

from __future__ import annotations

import inspect
import os

import pytest

MARKER = "nndoctor"


def pytest_addoption(parser) -> None:
    group = parser.getgroup("nndoctor")
    group.addoption("--nndoctor-seed", type=int, default=None,
                    help="Seed of every nndoctor diagnosis (default: 0).")
    group.addoption("--nndoctor-device", default=None, choices=("auto", "cpu", "cuda", "mps"),
                    help="Device of every nndoctor diagnosis (default: auto).")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(target=None, checks=None, fail_on='error', **options): the test is an nndoctor "
        "diagnosis of `target` (or of what the test returns); it fails with the findings table.")


class Doctor:
    """The `nndoctor` fixture: `nndoctor(target_or_model, ...)` is `assert_healthy` with the
    session's seed and device, recording the findings as the test's junit properties.
    `fail_on="never"` only diagnoses and returns the Report."""

    def __init__(self, config, record):
        self._config, self._record = config, record

    def __call__(self, target_or_model=None, *args, target=None, **options):
        __tracebackhide__ = True
        from .errors import UsageError
        from .testing import UnhealthyModelError, assert_healthy

        subject = target if target is not None else target_or_model
        if subject is None:
            raise TypeError("nndoctor(...) needs a target (\"model.py:build\") or a model")
        if isinstance(subject, str):
            subject = _from_rootdir(subject, self._config)
        for key, option in (("seed", "--nndoctor-seed"), ("device", "--nndoctor-device")):
            value = self._config.getoption(option)
            if value is not None:
                options.setdefault(key, value)
        try:
            report = assert_healthy(subject, *args, **options)
        except UnhealthyModelError as exc:
            _record(self._record, exc.report)
            raise
        except UsageError as exc:  # a target that cannot be loaded: the CLI's one line, no traceback
            pytest.fail(f"nndoctor: {exc}", pytrace=False)
        _record(self._record, report)
        return report


@pytest.fixture
def nndoctor(request):
    return Doctor(request.config, request.node.user_properties.append)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    marker = pyfuncitem.get_closest_marker(MARKER)
    if marker is None:
        return None  # not ours: pytest calls the test as usual
    __tracebackhide__ = True
    if marker.args:
        pytest.fail("@pytest.mark.nndoctor takes keywords only (target=..., checks=..., fail_on=...)",
                    pytrace=False)
    testfunction = pyfuncitem.obj
    if inspect.iscoroutinefunction(testfunction):
        pytest.fail("@pytest.mark.nndoctor does not run async tests", pytrace=False)
    names = pyfuncitem._fixtureinfo.argnames
    returned = testfunction(**{name: pyfuncitem.funcargs[name] for name in names})
    options = dict(marker.kwargs)  # all but target= go to nndoctor.testing.assert_healthy
    target = options.pop("target", None)
    if target is None and returned is None:
        pytest.fail("@pytest.mark.nndoctor needs target=\"model.py:build\" or a test that returns "
                    "the model (or its setup)", pytrace=False)
    doctor = Doctor(pyfuncitem.config, pyfuncitem.user_properties.append)
    doctor(target if target is not None else returned, **options)
    return True


def _from_rootdir(target: str, config) -> str:
    """`PATH.py[:ATTR]` with a relative PATH is read from the rootdir, wherever pytest runs."""
    from .target import split_target  # no torch: plain string handling

    path, attr = split_target(target)
    if not (path.endswith(".py") or "/" in path or os.sep in path) or os.path.isabs(path):
        return target  # a module target, or already absolute
    path = os.path.join(str(config.rootpath), path)
    relative = os.path.relpath(path)  # as the user reads it, when under the working folder
    return f"{relative if not relative.startswith('..') else path}:{attr}"


def _record(record, report) -> None:
    """The verdict and each finding as junit properties (`<property name=… value=…>`)."""
    record(("nndoctor_status", report.status))
    for f in report.findings:
        where = f" at {f.where}" if f.where else ""
        record((f"nndoctor_{f.severity}", f"{f.code}{where}: {f.message}"))
