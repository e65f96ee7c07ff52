"""drgdip weights import: the 27 published tables of ../shared/data/weights/regions, odd headers
with a user's map, bad files, and settlement with an imported table."""
import csv
import io
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from drgdip.arrowio import InputError
from drgdip.cli import main
from drgdip.weights.official_tables import import_report, import_table, load_column_map
from drgdip.weights.relative_weights import read_weight_table

REPO = Path(__file__).resolve().parents[1]
REGIONS = REPO.parent / "shared" / "data" / "weights" / "regions"
POLICY = REPO / "examples" / "region.toml"
YES = {"是", "※"}

# per file: encoding, weight header, flags as (header, values meaning the flag), inverted
# flags (header, values meaning NOT the flag), all read from the raw file independently
EXPECT = {
    "临汾2022.csv": ("utf-8-sig", "RW", {"basic_group": ("病组标识", {"分级诊疗"})}),
    "临沂2022.csv": ("utf-8-sig", "RW", {}),
    "乌鲁木齐2022.csv": ("utf-8-sig", "RW", {}),
    "云南2022.csv": ("utf-8-sig", "RW", {}),
    "兰州2022.csv": ("utf-8-sig", "RW", {"basic_group": ("病组类型", {"基础组"}),
                                          "unstable_group": ("病组类型", {"不稳定组"})}),
    "兰州2023.csv": ("utf-8-sig", "RW", {"basic_group": ("病组类型", {"基础病组"}),
                                          "unstable_group": ("病组类型", {"不稳定病组"})}),
    "北京2022.csv": ("gb18030", "RW", {}),
    "南平2023.csv": ("utf-8-sig", "权重", {"unstable_group": ("病组类型", {"不稳定病组"})}),
    "吉林2022.csv": ("utf-8-sig", "权重", {}),
    "常州2022.csv": ("utf-8-sig", "RW", {"basic_group": ("病组标识", {"基础组"})}),
    "广西2022.csv": ("utf-8-sig", "RW", {"unstable_group": ("稳定（玉林）", {"否"})}),
    "新疆兵团2022.csv": ("utf-8-sig", "RW", {"basic_group": ("基础病组", YES)}),
    "无锡2022.csv": ("gb18030", "RW", {"basic_group": ("基础病组", YES), "tcm_group": ("中医优势病组", YES)}),
    "武汉2022.csv": ("gb18030", "RW", {}),
    "泰州2022.csv": ("gb18030", "RW", {"unstable_group": ("稳定组", {"否"})}),
    "烟台2023.csv": ("utf-8-sig", "RW", {"basic_group": ("同等费率病组", YES)}),
    "盐城2022.csv": ("gb18030", "RW", {"review_group": ("单议病组", YES)}),
    "盐城2023.csv": ("utf-8-sig", "RW", {"review_group": ("单议病组", YES)}),
    "福州2022.csv": ("utf-8-sig", "RW", {}),
    "聊城2022.csv": ("utf-8-sig", "RW", {}),
    "苏州2022.csv": ("gb18030", "RW", {"basic_group": ("基础病组", YES)}),
    "苏州2023.csv": ("utf-8-sig", "RW", {"basic_group": ("基础病组", YES), "tcm_group": ("中医优势病组", YES)}),
    "西安2020.csv": ("utf-8-sig", "RW", {}),
    "铜川2022.csv": ("utf-8-sig", "RW", {}),
    "银川2023.csv": ("utf-8-sig", "标准分值", {}),
    "长沙2023.csv": ("utf-8-sig", "初始权重", {"basic_group": ("基础病组", YES), "unstable_group": ("不稳定病组", YES)}),
    "青岛2023.csv": ("utf-8-sig", "RW", {}),
}

needs_data = pytest.mark.skipif(not REGIONS.is_dir(), reason=f"shared data missing: {REGIONS}")


def raw_rows(path):
    """The raw file read on its own: (header, code-like rows, encoding)."""
    b = path.read_bytes()
    try:
        txt, enc = b.decode("utf-8-sig"), "utf-8-sig"
    except UnicodeDecodeError:
        txt, enc = b.decode("gbk"), "gb18030"
    rows = list(csv.reader(io.StringIO(txt)))
    body = [r + [""] * (len(rows[0]) - len(r)) for r in rows[1:] if r and re.fullmatch(r"[0-9A-Za-z]{1,8}", r[0].strip())]
    return rows[0], body, enc


def num(s):
    try:
        return float(s)
    except ValueError:
        return None


@needs_data
def test_all_27_files_are_expected():
    assert sorted(p.name for p in REGIONS.glob("*.csv")) == sorted(EXPECT)


@needs_data
@pytest.mark.parametrize("name", sorted(EXPECT))
def test_region_table_imports(name):
    path = REGIONS / name
    enc, wcol, flags = EXPECT[name]
    header, body, raw_enc = raw_rows(path)
    t = import_table(path)
    rep = import_report(t)
    assert rep["encoding"] == enc == raw_enc
    # groups = code-like rows, less every row of a code repeated with different contents
    codes = [r[0].strip() for r in body]
    conflicting = {c for c in codes if codes.count(c) > 1}
    assert t.num_rows == len(codes) - sum(codes.count(c) for c in conflicting) == rep["groups"]
    assert rep["rows_dropped"].get("duplicate_code", 0) == sum(codes.count(c) for c in conflicting)
    kept = [r for r in body if r[0].strip() not in conflicting]
    # first and last group: code, name, weight as the raw file has them
    wi = header.index(wcol)
    for pos in (0, -1):
        row = t.slice(pos % t.num_rows, 1).to_pylist()[0]
        assert row["drg"] == kept[pos][0].strip()
        assert row["name"] == kept[pos][1].strip()
        assert row["weight"] == num(kept[pos][wi])
    assert t["weight"].null_count == sum(1 for r in kept if num(r[wi]) is None) == rep["groups_without_weight"]
    # every published column kept verbatim
    for k, h in enumerate(header):
        assert t[f"src_{h}"].to_pylist()[0] == (kept[0][k] or None)
    # flags counted from the raw cells
    for flag, (col, words) in flags.items():
        ci = header.index(col)
        assert rep["flags"][flag] == sum(1 for r in kept if r[ci].strip() in words) > 0
        assert t[flag].to_pylist() == [r[ci].strip() in words for r in kept]
    assert set(rep["flags"]) == set(flags)
    assert not rep["unknown_words"]


@needs_data
def test_known_values_of_some_tables():
    bj = import_table(REGIONS / "北京2022.csv")
    assert bj["weight"].null_count == 49
    assert import_report(bj)["text_values"] == {"weight": {"按项目据实支付": 49}}
    jl = import_table(REGIONS / "吉林2022.csv").to_pylist()
    assert jl[0]["drg"] == "AF19" and jl[0]["payment_standard_level3"] == Decimal("8426.759680")
    assert jl[0]["low_k"] == 0.35 and jl[0]["high_k"] == 2.0          # 2949.365888 / 8426.75968 etc.
    assert all(r["low_k"] == 0.35 and r["high_k"] == 2.0 for r in jl)
    # docs/official_tables.md's worked example: AH11 27,658.56851 / 79,024.48146 = 0.3499… → 0.35
    ah11 = [r for r in jl if r["drg"] == "AH11"][0]
    assert ah11["src_低倍临界值（三级）"] == "27658.56851" and ah11["payment_standard_level3"] == Decimal("79024.481460")
    assert ah11["src_高倍临界值（三级）"] == "158048.9629" and (ah11["low_k"], ah11["high_k"]) == (0.35, 2.0)
    qd = import_table(REGIONS / "青岛2023.csv").to_pylist()[0]
    assert qd["payment_standard_named_hospitals"] == Decimal("316702.6919")
    assert qd["payment_standard_level1"] == Decimal("166988.6921")
    wx = import_table(REGIONS / "无锡2022.csv").to_pylist()
    assert wx[0]["drg"] == "0" and wx[0]["payment_standard_level3"] == Decimal("2612.00")
    assert [r["name"] for r in wx if r["drg"] == "AG19"] == ["异体骨髓／造血干细胞移植"]   # full-width spaces trimmed
    cs = {r["drg"]: r for r in import_table(REGIONS / "长沙2023.csv").to_pylist()}
    assert cs["FV1A"]["weight"] == 3.6156 and cs["FV1A"]["unstable_group"] is False   # a short row
    assert cs["NG19"]["weight"] is None and cs["NG19"]["unstable_group"] is True
    lz = {r["drg"]: r for r in import_table(REGIONS / "兰州2023.csv").to_pylist()}
    assert lz["BR23"]["basic_group"] and not lz["BR21"]["basic_group"]
    assert lz["BR21"]["level_coefficient_provincial3a"] == 1.1476 and lz["BR21"]["base_rate_employee"] == Decimal("9986.9352")
    gx = {r["drg"]: r for r in import_table(REGIONS / "广西2022.csv").to_pylist()}
    assert gx["AB19"]["mean_cost"] == Decimal("239359.812") and gx["AB19"]["unstable_group"] is True
    wq = import_table(REGIONS / "乌鲁木齐2022.csv")
    assert "DR13" not in wq["drg"].to_pylist() and import_report(wq)["dropped_examples"]["duplicate_code"] == ["DR13"]
    lc = import_table(REGIONS / "聊城2022.csv")["drg"].to_pylist()
    assert "BE1a" in lc and "BE1b" in lc


@needs_data
def test_duplicate_codes_can_be_refused():
    with pytest.raises(InputError, match="DR13 appears 2 times"):
        import_table(REGIONS / "乌鲁木齐2022.csv", {"rows": {"duplicate_codes": "error"}})


ODD = ("全市DRG病组支付标准表（2026年）\n"
       "\n"
       "病组代码,病组名称,基准点数,基层,单议,中医,低倍,高倍,支付标准,,标注\n"
       ",,,,,,,,三级职工,二级居民,\n"
       "ab19 ,肝移植,\"1,234.5\",否,√,,40%,300%,\"12,000\",9000.5,x\n"
       "BR21,脑缺血性疾患，伴严重并发症或合并症,0.85,Y,,是,0.5倍,2,8000元,7000,\n"
       "BR21,脑缺血性疾患，伴严重并发症或合并症,0.85,Y,,是,0.5倍,2,8000元,7000,\n"
       ",,,,,,,,,,\n"
       "病组代码,病组名称,基准点数,基层,单议,中医,低倍,高倍,支付标准,,标注\n"
       "ZZ15,多发性重要创伤,0.6,N,1,0,,,5000,4000.25,\n"
       "合计,,3.5,,,,,,,,\n"
       "Total,,3.5,,,,,,,,\n"
       "注：本表自2026年1月1日起执行\n")

MAP = """[weight_table.columns]
drg = "病组代码"
weight = "基准点数"
basic_group = "基层"
review_group = "单议"
tcm_group = "中医"
low_k = "低倍"
high_k = "高倍"
"""


def test_odd_headers_with_a_user_map(tmp_path):
    src = tmp_path / "odd.csv"
    src.write_bytes(ODD.encode("gbk"))
    (tmp_path / "map.toml").write_text(MAP, encoding="utf-8")
    cmap = load_column_map(tmp_path / "map.toml")
    t = import_table(src, cmap)
    rep = import_report(t)
    assert rep["encoding"] == "gb18030" and rep["header_row"] == 3 and rep["header_rows"] == 2
    assert rep["rows_dropped"] == {"title": 2, "blank": 1, "repeated_header": 1, "not_a_group": 3,
                                   "duplicate_identical": 1}
    rows = t.to_pylist()
    assert [r["drg"] for r in rows] == ["ab19", "BR21", "ZZ15"]
    assert [r["weight"] for r in rows] == [1234.5, 0.85, 0.6]
    assert [r["basic_group"] for r in rows] == [False, True, False]
    assert [r["review_group"] for r in rows] == [True, False, True]
    assert [r["tcm_group"] for r in rows] == [False, True, False]
    assert [r["low_k"] for r in rows] == [0.4, 0.5, None]
    assert [r["high_k"] for r in rows] == [3.0, 2.0, None]
    # merged header 支付标准 over 三级职工 / 二级居民: one column per level and fund, decimals exact
    assert [r["payment_standard_level3_employee"] for r in rows] == [Decimal("12000.00"), Decimal("8000.00"),
                                                                     Decimal("5000.00")]
    assert [r["payment_standard_level2_resident"] for r in rows] == [Decimal("9000.50"), Decimal("7000.00"),
                                                                     Decimal("4000.25")]
    assert rows[0]["src_标注"] == "x" and rows[0]["src_基准点数"] == "1,234.5"
    assert rep["flags"] == {"basic_group": 1, "review_group": 2, "tcm_group": 1}
    # without the map 基准点数 is not a known weight header: one line naming the fix
    with pytest.raises(InputError, match="no weight column .* --region-columns") as e:
        import_table(src)
    assert "\n" not in str(e.value)


def test_user_map_overrides_builtin_aliases(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("DRG编码,DRG名称,RW,调整后权重,稳定组\nAB19,肝移植,1.5,1.7,否\nBR21,脑,0.8,0.9,是\n", encoding="utf-8")
    t = import_table(src)
    assert t["weight"].to_pylist() == [1.5, 0.8] and t["unstable_group"].to_pylist() == [True, False]
    t = import_table(src, {"columns": {"weight": "调整后权重"}})
    assert t["weight"].to_pylist() == [1.7, 0.9] and t["src_RW"].to_pylist() == ["1.5", "0.8"]
    with pytest.raises(InputError, match="unknown project column 'wieght'"):
        import_table(src, {"columns": {"wieght": "RW"}})


def test_two_columns_meaning_one_thing_are_refused(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("DRG编码,RW,权重\nAB19,1.5,1.7\n", encoding="utf-8")
    with pytest.raises(InputError, match="both mean weight"):
        import_table(src)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("content,message", [
    (b"\x00\x01\x02\xff\xfe" * 50, "binary data"),
    ("名称,RW\n肝移植,1.5\n".encode(), "no group-code column"),
    ("DRG编码,DRG名称\nAB19,肝移植\n".encode(), "no weight column"),
    ("DRG编码,RW\n合计,1.5\n".encode(), "no group rows"),
    (b"", "empty file"),
])
def test_bad_files_exit_2_with_one_line(tmp_path, content, message):
    src = tmp_path / "bad.csv"
    src.write_bytes(content)
    with pytest.raises(InputError, match=message):
        import_table(src)
    r = run("weights", "import", src, "-o", tmp_path / "w.parquet")
    assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w.parquet").exists()


def test_bad_column_maps_exit_2(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("DRG编码,RW\nAB19,1.5\n", encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text('[weight_table.rows]\nduplicate_codes = "maybe"\n', encoding="utf-8")
    r = run("weights", "import", src, "--region-columns", bad, "-o", tmp_path / "w.parquet")
    assert r.exit_code == 2 and "duplicate_codes must be one of drop, error" in r.stderr
    r = run("weights", "import", src, "--region-columns", POLICY, "-o", tmp_path / "w.parquet")
    assert r.exit_code == 2 and "has no [weight_table] section" in r.stderr


def test_policy_weight_table_section_is_checked_and_used(tmp_path):
    from drgdip.weights.settlement.policy import PolicyError, load_policy
    pol = tmp_path / "p.toml"
    pol.write_text(POLICY.read_text(encoding="utf-8") + '\n[weight_table.columns]\nweight = "点数"\n', encoding="utf-8")
    load_policy(pol)
    src = tmp_path / "t.csv"
    src.write_text("DRG编码,点数\nAB19,150\n", encoding="utf-8")
    r = run("weights", "import", src, "--region-columns", pol, "-o", tmp_path / "w.parquet")
    assert r.exit_code == 0, r.output
    assert pq.read_table(tmp_path / "w.parquet")["weight"].to_pylist() == [150.0]
    pol.write_text(POLICY.read_text(encoding="utf-8") + '\n[weight_table]\ncolumn = {}\n', encoding="utf-8")
    with pytest.raises(PolicyError, match="weight_table: unknown key 'column'"):
        load_policy(pol)


@needs_data
def test_cli_import_summary_and_byte_identical_rerun(tmp_path):
    r = run("weights", "import", REGIONS / "乌鲁木齐2022.csv", "-o", tmp_path / "a.parquet")
    assert r.exit_code == 0, r.output
    assert "716 groups read" in r.stdout and "duplicate_code 2 (DR13)" in r.stdout
    r = run("weights", "import", REGIONS / "苏州2023.csv", "-o", tmp_path / "s.parquet")
    assert "648 groups read" in r.stdout and "flags: basic_group 21, tcm_group 36" in r.stdout
    r = run("weights", "import", REGIONS / "苏州2023.csv", "-o", tmp_path / "s2.parquet")
    assert (tmp_path / "s.parquet").read_bytes() == (tmp_path / "s2.parquet").read_bytes()
    r = run("weights", "import", REGIONS / "苏州2022.csv", "--encoding", "utf-8", "-o", tmp_path / "x.parquet")
    assert r.exit_code == 2 and "not utf-8-sig text" in r.stderr


def test_weights_group_help_and_default_command(tmp_path):
    r = run("weights", "--help")
    assert r.exit_code == 0
    assert "compute" in r.stdout and "import" in r.stdout
    assert "drgdip weights history.parquet" in r.stdout and "drgdip weights import" in r.stdout
    r = run("weights", "compute", "--help")
    assert "--policy" in r.stdout


# ---------------------------------------------------------------- settlement with an imported table

DRGS = ["BR21", "BR23", "ES29", "FM19"]


def month_records(n, seed):
    rng = np.random.default_rng(seed)
    d = rng.choice(DRGS, n)
    mean = {"BR21": 30000.0, "BR23": 20000.0, "ES29": 9000.0, "FM19": 45000.0}
    cost = np.round(np.array([mean[x] for x in d]) * rng.lognormal(0, 0.4, n), 2)
    return pa.table({
        "setl_id": [f"S{seed}-{i}" for i in range(n)],
        "fixmedins_code": rng.choice(["H23010000001", "H23010000002", "H23010000004"], n),
        "insutype": rng.choice(["310", "390"], n), "dscg_time": [f"2026-10-{i % 28 + 1:02d}" for i in range(n)],
        "drg": d, "status": ["grouped"] * n, "medfee_sumamt": cost, "个人负担": np.round(cost * 0.25, 2),
        "los_days": rng.integers(2, 15, n).astype(float)})


def test_settle_accepts_an_imported_table(tmp_path):
    src = tmp_path / "official.csv"
    src.write_text("DRG编码,DRG名称,RW,基础病组,单议病组,低倍临界值,高倍临界值\n"
                   "BR21,脑缺血 伴严重,1.2,否,,0.4,3\n"
                   "BR23,脑缺血 伴一般,0.8,是,,,\n"
                   "ES29,呼吸系统感染,0.4,是,,,\n"
                   "FM19,经皮冠状动脉支架植入,按项目据实支付,否,是,,\n", encoding="utf-8")
    r = run("weights", "import", src, "-o", tmp_path / "w.parquet")
    assert r.exit_code == 0, r.output
    assert "4 groups read, 1 without a weight" in r.stdout and "basic_group 2, review_group 1" in r.stdout
    w = read_weight_table(tmp_path / "w.parquet")
    assert w["basic_group"].to_pylist() == [False, True, True, False]
    assert w["review_group"].type == pa.bool_() and w["low_k"].to_pylist() == [0.4, None, None, None]
    pq.write_table(month_records(200, 7), tmp_path / "oct.parquet")
    settle = ["settle", "2026-10", tmp_path / "oct.parquet", "--weights", tmp_path / "w.parquet",
              "--ledger", tmp_path / "r.db", "--new-ledger", "--quiet"]
    # the example policy takes the group mean from the table, which an official table lacks
    r = run(*settle, "--policy", POLICY, "--out", tmp_path / "o1")
    assert r.exit_code == 2 and 'deviation.group_mean = "period"' in r.stderr
    pol = tmp_path / "p.toml"
    pol.write_text(POLICY.read_text(encoding="utf-8").replace('group_mean = "table"', 'group_mean = "period"'),
                   encoding="utf-8")
    r = run(*settle, "--policy", pol, "--out", tmp_path / "o2")
    assert r.exit_code == 0, r.output
    cases = pq.read_table(tmp_path / "o2" / "cases.parquet").to_pylist()
    fm = [c for c in cases if c["drg"] == "FM19"]
    assert fm and all(c["pricing_reason"] == "GROUP_NOT_PRICED" for c in fm)
    br = [c for c in cases if c["drg"] == "BR21"]
    assert br and all(c["weight"] == 1.2 for c in br)


def test_weights_default_command_and_compute_give_the_same_file(tmp_path):
    hist = month_records(300, 11)
    hist = hist.set_column(hist.schema.get_field_index("dscg_time"), "dscg_time",
                           pa.array([f"2025-{i % 12 + 1:02d}-10" for i in range(hist.num_rows)]))
    pq.write_table(hist, tmp_path / "h.parquet")
    outs = []
    for i, form in enumerate((["weights"], ["weights", "compute"])):
        out = tmp_path / f"w{i}.parquet"
        r = run(*form, tmp_path / "h.parquet", "--policy", POLICY, "-o", out, "--quiet")
        assert r.exit_code == 0, r.output
        assert "4 groups (0 without weight)" in r.stdout
        outs.append(out.read_bytes())
    r = run("weights", "--policy", POLICY, tmp_path / "h.parquet", "-o", tmp_path / "w2.parquet", "--quiet")
    assert r.exit_code == 0, r.output                       # options before the file: still the default
    assert outs[0] == outs[1] == (tmp_path / "w2.parquet").read_bytes()


def test_imported_csv_reads_back_typed_and_encoding_option(tmp_path):
    src = tmp_path / "t.csv"
    src.write_bytes("DRG编码,DRG名称,RW,单议病组,不稳定病组\nAB19,肝移植,1.5,是,\nBR21,脑,,,※\n".encode("gbk"))
    r = run("weights", "import", src, "--encoding", "gbk", "-o", tmp_path / "w.csv")
    assert r.exit_code == 0, r.output
    assert "2 groups read, 1 without a weight" in r.stdout and "review_group 1, unstable_group 1" in r.stdout
    w = read_weight_table(tmp_path / "w.csv")
    assert w["review_group"].to_pylist() == [True, False] and w["unstable_group"].to_pylist() == [False, True]
    assert w["weight"].to_pylist() == [1.5, None] and w["name"].to_pylist() == ["肝移植", "脑"]
    r = run("weights", "import", src, "--encoding", "latin-9x", "-o", tmp_path / "x.csv")
    assert r.exit_code == 2 and "unknown encoding" in r.stderr
