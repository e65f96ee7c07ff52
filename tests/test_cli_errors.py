"""The CLI's error contract: bad input gives one line and exit 2; a bug is shown as a bug."""
from click.testing import CliRunner

from drgdip.cli import main


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

    from drgdip.codesets.standards import standards
    out = _run(["codes", "info"]).output.splitlines()
    starts = set()
    for s in standards().values():
        line = next(l for l in out if f" {s.id} " in l and s.en in l)
        starts.add(wcswidth(line[: line.index(s.en, line.index(s.zh) + len(s.zh))]))
    assert len(starts) == 1, starts


def test_no_command_writes_over_one_of_its_inputs(tmp_path):
    """output == input is refused before anything is read or written; the input is intact."""
    import pyarrow as pa

    from drgdip.arrowio import write_table
    src = tmp_path / "h.parquet"
    write_table(pa.table({"id": ["a"], "diagnoses": [["J18.900"]], "total_cost": [100.0]}), src)
    before = src.read_bytes()
    pol = tmp_path / "p.toml"
    pol.write_text('[budget.employee]\n"2024-01" = 1.0\n', encoding="utf-8")
    mapping = tmp_path / "m.dat"
    mapping.write_text("J18.900 J18.900\n", encoding="utf-8")
    s = str(src)
    for args in (["weights", s, "--policy", str(pol), "-o", s],
                 ["check", s, "-o", s],
                 ["check", s, "-o", str(tmp_path / "f.csv"), "--summary", s],
                 ["dip", "catalog", s, "-o", s],
                 ["codes", "map", s, "--mapping", str(mapping), "-o", s],
                 ["group", s, "-o", s],
                 ["simulate", s, "--weights", s, "--policy", str(pol), "-o", s],
                 ["report", str(pol), "-o", str(pol)]):
        r = _run(args)
        assert r.exit_code == 2, (args, r.output)
        assert "the output is also an input" in r.output, (args, r.output)
        assert src.read_bytes() == before, args


def test_a_bug_is_shown_as_a_bug_not_as_bad_input(monkeypatch):
    """An exception that is not an input error keeps its traceback and says it is a bug (exit 70)."""
    import drgdip.grouper.drg.reference as ref

    def broken(*a, **k):
        return {}["no such key"]            # a KeyError inside the library: a bug, not the user's input
    monkeypatch.setattr(ref, "explain", broken)
    r = _run(["explain", "--record", '{"sex": "1"}'])
    assert r.exit_code == 70
    assert "this is a bug in drgdip" in r.output and "KeyError" in r.output


def test_ctrl_c_is_one_line_even_when_numba_wraps_it(monkeypatch):
    import drgdip.grouper.drg.reference as ref

    def interrupted(*a, **k):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise SystemError("CPUDispatcher(<function tokenize>) returned a result with an exception set") from exc
    monkeypatch.setattr(ref, "explain", interrupted)
    r = _run(["explain", "--record", '{"sex": "1"}'])
    assert r.exit_code == 130
    assert r.output.strip() == "drgdip: interrupted; outputs left as they were"


def _commands(group, prefix=()):
    import click
    for name, cmd in sorted(group.commands.items()):
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


def test_every_command_has_help_with_an_example_and_documented_options():
    import click
    for path, cmd in _commands(main):
        r = _run([*path, "--help"])
        assert r.exit_code == 0, (path, r.output)
        assert "Example" in r.output, f"drgdip {' '.join(path)} --help has no example"
        assert f"drgdip {' '.join(path)}" in r.output, f"the example of {' '.join(path)} does not show the command"
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                assert p.help, f"drgdip {' '.join(path)} {p.opts[0]} has no help text"


def test_output_options_are_named_alike():
    """Every command that writes a file or folder takes -o/--output."""
    import click
    for path, cmd in _commands(main):
        outs = [p for p in cmd.params if isinstance(p, click.Option) and ({"--out", "--output"} & set(p.opts))]
        for p in outs:
            assert "-o" in p.opts and "--output" in p.opts, (path, p.opts)
