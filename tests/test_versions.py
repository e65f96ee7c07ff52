"""Scheme versions by discharge date: each record grouped with the version in force."""
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from drgdip.arrowio import InputError
from drgdip.grouper.drg.versions import (
    VersionedGrouper,
    discharge_days,
    load_region_schemes,
)

TEACHING = Path(__file__).resolve().parents[1] / "grouper" / "drg" / "teaching_scheme"


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    """2025: the teaching scheme; from 2026: the same with ES2 unsplit (ES29)."""
    d = tmp_path_factory.mktemp("region")
    b = d / "teaching_es29"
    shutil.copytree(TEACHING, b)
    lines = (b / "3_DRG.txt").read_text(encoding="utf-8").splitlines()
    at = next(i for i, l in enumerate(lines) if l.startswith("ES21"))
    lines = [l for l in lines if not l.startswith(("ES21", "ES23", "ES25"))]
    lines.insert(at, "ES29 呼吸系统感染／炎症")
    (b / "3_DRG.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    f = d / "region.toml"
    f.write_text('[[scheme]]\nversion = "teaching 1.0"\npath = "teaching"\nfrom = 2025-01-01\nto = 2025-12-31\n\n'
                 '[[scheme]]\nversion = "teaching ES29"\npath = "teaching_es29"\nfrom = "2026-01-01"\n',
                 encoding="utf-8")
    return f


def records(dates):
    n = len(dates)
    return pa.table({"id": [f"r{i}" for i in range(n)], "sex": ["1"] * n, "age": [60.0] * n,
                     "diagnoses": [["J18.900"]] * n, "procedures": [[]] * n, "discharge_date": dates})


def test_each_record_takes_the_version_in_force(region):
    g = VersionedGrouper.from_file(region)
    out = g.group(records(["2025-12-31", "2026-01-01", "2024-12-31", "2024-02-30", None, "2025-06-01 10:30:00"]))
    assert out["id"].to_pylist() == ["r0", "r1", "r2", "r3", "r4", "r5"]          # order kept
    assert out["drg"].to_pylist() == ["ES25", "ES29", "0000", "0000", "0000", "ES25"]
    assert out["scheme_version"].to_pylist() == ["teaching 1.0", "teaching ES29", None, None, None, "teaching 1.0"]
    assert out["status"].to_pylist() == ["grouped", "grouped", "invalid", "invalid", "invalid", "grouped"]
    assert out["reason"].to_pylist() == ["OK", "OK", "NO_SCHEME_FOR_DATE", "DISCHARGE_DATE_UNREADABLE",
                                         "DISCHARGE_DATE_UNREADABLE", "OK"]


def test_date_types():
    import datetime as dt
    days, bad = discharge_days(pa.array([dt.date(1970, 1, 2), None], pa.date32()))
    assert days[0] == 1 and bad.tolist() == [False, True]
    days, bad = discharge_days(pa.array(["2024-02-29", "2023-02-29", "29/02/2024"]))
    assert bad.tolist() == [False, True, True]


@pytest.mark.parametrize("body,message", [
    ('[[scheme]]\nversion = "a"\nfrom = 2025-01-01\n[[scheme]]\nversion = "b"\nfrom = 2025-06-01\n', "overlaps"),
    ('[[scheme]]\nversion = "a"\nfrom = 2025-01-01\nto = 2024-01-01\n', "before from"),
    ('[[scheme]]\nversion = "a"\nfrom = "1st May"\n', "not a date"),
    ('title = "x"\n', r"no \[\[scheme\]\]"),
    ('[[scheme]]\nversion = "a"\nfrom = 2025-01-01\nuntil = 2025-02-01\n', "unknown key"),
])
def test_bad_region_files_are_refused(tmp_path, body, message):
    f = tmp_path / "r.toml"
    f.write_text(body, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_region_schemes(f)


def test_records_without_a_discharge_date_column_are_refused(region):
    with pytest.raises(InputError, match="discharge_date"):
        VersionedGrouper.from_file(region).group(records(["2025-01-01"]).drop(["discharge_date"]))


def test_group_command_with_a_region_file(region, tmp_path):
    from click.testing import CliRunner

    from drgdip.arrowio import read_table, write_table
    from drgdip.cli import main
    src = tmp_path / "r.parquet"
    write_table(records(["2025-12-31", "2026-01-01", "2024-12-31"]), src)
    out = tmp_path / "g.csv"
    r = CliRunner().invoke(main, ["group", str(src), "-o", str(out), "--region", str(region), "--quiet",
                                  "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    assert "3 records grouped with teaching 1.0, teaching ES29 by discharge date: grouped 2, invalid 1" in r.output
    t = read_table(out)
    assert t.column_names == ["id", "mdc", "adrg", "drg", "status", "reason", "scheme_version"]
    assert t["drg"].to_pylist() == ["ES25", "ES29", "0000"]
    assert t["scheme_version"].to_pylist() == ["teaching 1.0", "teaching ES29", None]
