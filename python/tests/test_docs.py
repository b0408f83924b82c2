"""The examples in the docstrings run."""

import doctest

import pytest

import trace_writer as tw


@pytest.mark.parametrize("obj", [tw.LibsqlTraceStorage, tw.BufferedTraceWriter, tw.SessionTracer])
def test_docstring_examples(obj):
    assert ">>>" in obj.__doc__
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = finder.find(obj, obj.__name__, globs={**vars(tw)})
    assert tests and tests[0].examples
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0 and result.attempted > 0


def test_package_docstring_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = tw.__doc__.split("Example::", 1)[1]
    exec(compile("\n".join(line[4:] for line in code.splitlines()), "trace_writer.__doc__", "exec"), {})
    with tw.LibsqlTraceStorage.file(tmp_path / "traces.db") as s:
        assert s.query("SELECT COUNT(*) AS n FROM events") == [{"n": 1}]
