"""The CLI's error contract: bad input gives one line and exit 2; a bug is shown as a bug."""
from click.testing import CliRunner

from cli import main


def _run(args):
    return CliRunner().invoke(main, args)


def test_explain_empty_record_is_an_invalid_record_not_a_crash():
    r = _run(["explain", "--record", "{}"])
    assert r.exit_code == 0, r.output
    assert "status invalid" in r.output and "MISSING_SEX" in r.output


def test_explain_refuses_a_record_that_is_not_an_object():
    for bad in ("[]", "3", '"x"'):
        r = _run(["explain", "--record", bad])
        assert r.exit_code == 2, (bad, r.output)
        assert r.output.strip().startswith("drgdip: a record is a JSON object"), r.output
        assert "Traceback" not in r.output


def test_codes_info_help_examples_all_succeed():
    """Every example in `codes info --help` runs as printed (they need no files)."""
    import shlex
    help_text = _run(["codes", "info", "--help"]).output
    examples = [l.strip() for l in help_text.splitlines() if l.strip().startswith("drgdip codes info")]
    assert len(examples) >= 3
    for line in examples:
        r = _run(shlex.split(line)[1:])
        assert r.exit_code == 0, (line, r.output)


def test_terminal_tables_align_chinese_text():
    """Columns after Chinese text start at the same terminal column (wide characters count two)."""
    from wcwidth import wcswidth

    from codesets.standards import standards
    out = _run(["codes", "info"]).output.splitlines()
    starts = set()
    for s in standards().values():
        line = next(l for l in out if f" {s.id} " in l and s.en in l)
        starts.add(wcswidth(line[: line.index(s.en, line.index(s.zh) + len(s.zh))]))
    assert len(starts) == 1, starts
