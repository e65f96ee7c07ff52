"""File safety at the I/O boundary (issue 10): output never an input, permissions under the umask,
stale temporaries of killed runs, spreadsheet-safe CSV, GBK/GB18030 input, option validation."""
from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from drgdip.arrowio import (
    InputError,
    clean_stale,
    detect_encoding,
    publish,
    read_table,
    refuse_overwrite,
    temp_path,
    transform_file,
    write_table,
)
from drgdip.cli import main
from drgdip.grouper.drg.api import group_table, load_scheme


@pytest.fixture(scope="module")
def teaching():
    return load_scheme(None)


def _records(path, n=20):
    path.write_text("id,sex,age,diagnoses\n" + "".join(f"{i},1,50,J18.900\n" for i in range(n)), encoding="utf-8")
    return path


def test_output_equal_to_input_is_refused_and_the_input_kept(tmp_path):
    src = _records(tmp_path / "in.csv")
    before = src.read_bytes()
    for target in (str(src), str(tmp_path / "sub" / ".." / "in.csv")):
        r = CliRunner().invoke(main, ["group", str(src), "-o", target, "--quiet"])
        assert r.exit_code == 2, r.output
        assert "also an input" in r.output
    os.link(src, tmp_path / "hard.csv")
    with pytest.raises(InputError, match="also an input"):
        refuse_overwrite([None, src], tmp_path / "hard.csv")
    (tmp_path / "sym.csv").symlink_to(src)
    with pytest.raises(InputError):
        transform_file(src, tmp_path / "sym.csv", lambda b: b)
    assert src.read_bytes() == before
    refuse_overwrite(src, tmp_path / "other.csv")       # a different file is fine


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                        (0o002, 0o664, 0o775)])
def test_outputs_get_the_umask_permissions(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        out = tmp_path / "w.parquet"
        write_table(pa.table({"a": [1]}), out)
        folder = temp_path(tmp_path / "2024-02", folder=True)
        (folder / "x.csv").write_text("a\n")
        publish(folder, tmp_path / "2024-02")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "2024-02").stat().st_mode & 0o777 == dir_mode


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_the_same_target_are_cleaned(tmp_path, teaching):
    dead = _dead_pid()
    stale_file = tmp_path / f".out.parquet.{dead}.abc12345.tmp"
    stale_file.write_bytes(b"half")
    stale_dir = tmp_path / f".out.parquet.{dead}.zz_00000.tmp"
    stale_dir.mkdir()
    (stale_dir / "part").write_text("x")
    live = tmp_path / f".out.parquet.{os.getpid()}.live0000.tmp"       # a run still going
    live.write_bytes(b"busy")
    other = tmp_path / f".other.parquet.{dead}.abcdefgh.tmp"        # another target's
    other.write_bytes(b"not ours")
    longer = tmp_path / f".out.parquet.{dead}.x.{dead}.abcdefgh.tmp"   # target "out.parquet.<n>.x"
    longer.write_bytes(b"not ours either")
    src = _records(tmp_path / "in.csv")
    r = CliRunner().invoke(main, ["group", str(src), "-o", str(tmp_path / "out.parquet"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert not stale_file.exists() and not stale_dir.exists()
    assert live.exists() and other.exists() and longer.exists()
    assert clean_stale(tmp_path / "other.parquet") == [other]


def test_a_killed_run_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    src = _records(tmp_path / "in.csv", 200)
    out = tmp_path / "o.parquet"
    code = ("import os, signal, sys; from drgdip.arrowio import transform_file\n"
            "def fn(b):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            "transform_file(sys.argv[1], sys.argv[2], fn, batch_size=10)")
    # the writer opens on the first output batch: make fn return once, then die
    code = code.replace("def fn(b):\n    os.kill", "n = [0]\ndef fn(b):\n    n[0] += 1\n    if n[0] == 1: return b\n    os.kill")
    r = subprocess.run([sys.executable, "-c", code, str(src), str(out)], cwd=os.getcwd())
    assert r.returncode == -9
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".o.parquet.")]
    assert len(left) == 1
    transform_file(src, out, lambda b: b)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.parquet.")]
    assert pq.read_table(out).num_rows == 200


def test_csv_text_cells_cannot_become_formulas_numbers_stay(tmp_path):
    t = pa.table({"note": ["=HYPERLINK(\"x\")", "+SUM(A1)", "-2+3", "@cmd", "-3.5", "+86", "fine", None],
                  "value": [-3.5, 1.0, -2.0, 0.0, 4.0, 5.0, 6.0, 7.0]})
    out = tmp_path / "x.csv"
    write_table(t, out)
    lines = out.read_text(encoding="utf-8").splitlines()
    cells = [line.rsplit(",", 1) for line in lines[1:]]
    assert [c[0] for c in cells] == ['"\'=HYPERLINK(""x"")"', '"\'+SUM(A1)"', '"\'-2+3"', '"\'@cmd"', '"-3.5"',
                                     '"+86"', '"fine"', ""]
    assert cells[0][1] == "-3.5"


def test_gbk_and_bom_csv_are_read(tmp_path, teaching):
    rows = "".join(f"{i},1,50,J18.900|E11.900,门诊{i}\n" for i in range(3000))
    text = "结算ID,性别,年龄,诊断编码,备注\n" + rows + "9999,2,40,J18.900,最后一行：张三\n"
    gbk, bom = tmp_path / "gbk.csv", tmp_path / "bom.csv"
    gbk.write_bytes(text.encode("gbk"))
    bom.write_bytes(text.encode("utf-8-sig"))
    assert detect_encoding(gbk) == "gb18030" and detect_encoding(bom) == "utf-8-sig"
    assert detect_encoding(_records(tmp_path / "plain.csv")) == "utf-8"
    # a late non-UTF-8 byte is found although the first chunk is clean
    late = tmp_path / "late.csv"
    late.write_bytes(("id,note\n" + "1,a\n" * 5000).encode() + "2,张\n".encode("gbk"))
    assert detect_encoding(late, chunk=1024) == "gb18030"
    a, b = read_table(gbk), read_table(bom)
    assert a.column_names == ["结算ID", "性别", "年龄", "诊断编码", "备注"]
    assert a.equals(b)
    assert a.column("备注")[-1].as_py() == "最后一行：张三"
    for extra in ([], ["--encoding", "gbk"]):
        out = tmp_path / "g.parquet"
        r = CliRunner().invoke(main, ["group", str(gbk), "-o", str(out), "--quiet", "--keep", "all", *extra])
        assert r.exit_code == 0, r.output
        g = pq.read_table(out)
        assert g.column("备注")[-1].as_py() == "最后一行：张三"
        assert g.column("drg").to_pylist() == group_table(a, teaching).column("drg").to_pylist()
    r = CliRunner().invoke(main, ["group", str(gbk), "-o", str(tmp_path / "u.parquet"), "--quiet",
                                  "--encoding", "utf-8"])
    assert r.exit_code == 2 and "encoding" in r.output


def test_full_width_bar_splits_codes_like_the_bar(teaching):
    a = group_table(pa.table({"sex": ["1"], "age": [50], "diagnoses": ["J18.900|E11.900"]}), teaching)
    b = group_table(pa.table({"sex": ["1"], "age": [50], "diagnoses": ["J18.900｜E11.900"]}), teaching)
    c = group_table(pa.table({"sex": ["1"], "age": [50], "diagnoses": ["J18.900"]}), teaching)
    assert a.column("drg").to_pylist() == b.column("drg").to_pylist() != c.column("drg").to_pylist()


@pytest.mark.parametrize("size", ["0", "-5", "ten"])
def test_batch_size_must_be_a_positive_whole_number(tmp_path, size):
    src = _records(tmp_path / "in.csv")
    r = subprocess.run([sys.executable, "-m", "drgdip", "group", str(src), "-o", str(tmp_path / "o.csv"),
                        "--batch-size", size, "--quiet"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "batch-size" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.csv").exists()
    with pytest.raises(InputError, match="batch size"):
        transform_file(src, tmp_path / "o.csv", lambda b: b, batch_size=0)


def test_sigterm_removes_the_temporary_and_keeps_the_previous_output(tmp_path):
    import signal
    import time
    src = _records(tmp_path / "in.csv", 200)
    out = tmp_path / "o.csv"
    out.write_text("previous\n")
    code = ("import sys, time; from drgdip.arrowio import transform_file\n"
            "def fn(b):\n    print('go', flush=True); time.sleep(0.2); return b\n"
            "transform_file(sys.argv[1], sys.argv[2], fn, batch_size=10)")
    p = subprocess.Popen([sys.executable, "-c", code, str(src), str(out)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "go"
    time.sleep(0.5)                              # the writer holds its temporary by now
    assert [x for x in tmp_path.iterdir() if x.name.startswith(f".o.csv.{p.pid}.")]
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 128 + signal.SIGTERM
    assert out.read_text() == "previous\n"
    assert not [x for x in tmp_path.iterdir() if x.name.startswith(".o.csv.")]


def test_a_csv_catalogue_and_its_sidecar_get_the_umask_permissions(tmp_path):
    from drgdip.grouper.dip.api import load_catalog, write_catalog
    from drgdip.weights.dip_catalog import build_catalog
    from tests.dip_example import POLICY, history
    old = os.umask(0o022)
    try:
        write_catalog(build_catalog(history(), POLICY), tmp_path / "cat.csv")
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"cat.csv": 0o644,
                                                                            "cat.csv.meta.json": 0o644}
    assert load_catalog(tmp_path / "cat.csv").num_rows > 0
