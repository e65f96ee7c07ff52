"""The grouping algorithm in plain Python, with a trace in words: ``explain`` (分组路径说明).

Same compiled scheme, same steps as :mod:`grouper.drg.kernel`, written for people: every
decision is recorded as a line a hospital coder can follow (which table and rule matched,
which CC/MCC counted, which exclusion table removed one). It is also the reference the
kernel is tested against on every conformance record.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from drgdip.arrowio import InputError
from drgdip.codesets.reasons import reason_table
from drgdip.grouper.drg import kernel as K
from drgdip.grouper.drg.encode import CodeSet, Encoder
from drgdip.grouper.drg.scheme import ROLE_WORDS, ROLES, Scheme

SEV_WORDS = {0: "无并发症或合并症 (no CC/MCC)", 1: "并发症或合并症 CC", 2: "严重并发症或合并症 MCC"}


@dataclass
class Explanation:
    mdc: str | None
    adrg: str | None
    drg: str
    status: str
    reason: str
    steps: list[str] = field(default_factory=list)

    def text(self) -> str:
        head = f"DRG {self.drg}  status {self.status}  reason {self.reason}"
        return "\n".join([head] + [f"  {i + 1}. {s}" for i, s in enumerate(self.steps)])

    def as_dict(self) -> dict:
        return {"mdc": self.mdc, "adrg": self.adrg, "drg": self.drg, "status": self.status,
                "reason": self.reason, "steps": self.steps}


class _Ctx:
    def __init__(self, scheme: Scheme, enc, i: int, trace: bool):
        self.s, self.e, self.i, self.trace = scheme, enc, i, trace
        self.steps: list[str] = []
        a = scheme.arrays
        self.a = a
        self.d = [int(x) for x in enc.diag_ids[enc.diag_ptr[i]:enc.diag_ptr[i + 1]]]
        self.p = [int(x) for x in enc.proc_ids[enc.proc_ptr[i]:enc.proc_ptr[i + 1]]]

    def log(self, msg: str) -> None:
        if self.trace:
            self.steps.append(msg)

    def member(self, kind: str, code: int, lst: int) -> bool:
        if code < 0 or lst < 0:
            return False
        ptr, ids = (self.a["diag_list_ptr"], self.a["diag_list_ids"]) if kind == "d" else (self.a["proc_list_ptr"], self.a["proc_list_ids"])
        return lst in ids[ptr[code]:ptr[code + 1]]

    def dname(self, c: int) -> str:
        code = self.s.diag_codes[c]
        return f"{code} {self.s.names.get(code, '')}".strip()

    def pname(self, c: int) -> str:
        code = self.s.proc_codes[c]
        return f"{code} {self.s.names.get(code, '')}".strip()

    def conds_ok(self, start: int, end: int, what: str) -> bool:
        a = self.a
        for k in range(start, end):
            f = self.s.fields[a["cond_field"][k]]
            v = float(self.e.values[self.i, a["cond_field"][k]])
            lo, hi = float(a["cond_lo"][k]), float(a["cond_hi"][k])
            if math.isnan(v) or v < lo or v > hi:
                self.log(f"{what}: condition {f} in [{_num(lo)}, {_num(hi)}] not met (value {_num(v)})")
                return False
        return True

    def term_ok(self, role: int, lst: int) -> tuple[bool, str]:
        a = self.a
        pd = self.d[0]
        pp = self.p[0] if self.p else -1
        is_or = lambda c: c >= 0 and a["proc_is_or"][c] == 1  # noqa: E731
        name = ROLES[role]
        where = self.s.list_names[lst] if lst >= 0 else ""
        if name in ("pdx", "pdx_mdc"):
            return self.member("d", pd, lst), f"{ROLE_WORDS[name]} 《{where}》"
        if name == "odx":
            hit = next((c for c in self.d[1:] if self.member("d", c, lst)), None)
            return hit is not None, f"{ROLE_WORDS[name]} 《{where}》" + (f": {self.dname(hit)}" if hit is not None else "")
        if name == "adx":
            hit = next((c for c in self.d if self.member("d", c, lst)), None)
            return hit is not None, f"{ROLE_WORDS[name]} 《{where}》" + (f": {self.dname(hit)}" if hit is not None else "")
        if name == "ppx":
            return self.member("p", pp, lst), f"{ROLE_WORDS[name]} 《{where}》" + (f": {self.pname(pp)}" if pp >= 0 else "")
        if name == "apx":
            hit = next((c for c in self.p if self.member("p", c, lst)), None)
            return hit is not None, f"{ROLE_WORDS[name]} 《{where}》" + (f": {self.pname(hit)}" if hit is not None else "")
        if name == "orpx":
            return is_or(pp), ROLE_WORDS[name]
        if name == "nopx":
            return not is_or(pp), ROLE_WORDS[name]
        if name == "orpx_except":
            return is_or(pp) and not self.member("p", pp, lst), f"{ROLE_WORDS[name]} 《{where}》"
        return False, name

    def severity(self) -> int:
        a = self.a
        pd = self.d[0]
        best = 0
        for c in self.d[1:]:
            if c < 0:
                continue
            lvl = int(a["cc_level"][c])
            if lvl == 0:
                continue
            t = int(a["cc_table"][c])
            if t >= 0 and self.member("d", pd, t):
                self.log(f"{self.dname(c)} is {'MCC' if lvl == 2 else 'CC'} but excluded: the principal diagnosis is in its {self.s.list_names[t]}")
                continue
            self.log(f"{self.dname(c)} counts as {'MCC' if lvl == 2 else 'CC'}")
            best = max(best, lvl)
        self.log(f"severity: {SEV_WORDS[best]}")
        return best


def _num(v: float) -> str:
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if math.isnan(v):
        return "missing"
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def group_encoded_py(scheme: Scheme, enc, i: int, trace: bool = False):
    """(mdc index, adrg id, drg id, kernel reason index, steps) of record i, in plain Python."""
    cx = _Ctx(scheme, enc, i, trace)
    a = scheme.arrays
    v = scheme.validation
    newborn_days = float(v.get("newborn_max_age_days", 28))
    min_bw, max_bw = float(v.get("min_birth_weight_g", 100)), float(v.get("max_birth_weight_g", 10000))
    max_age = float(v.get("max_age_years", 150))
    fail = lambda r: (-1, -1, -1, r, cx.steps)  # noqa: E731
    if enc.bad_value[i]:
        return fail(K.R_BAD_VALUE)
    s = int(enc.sex[i])
    if s == 0:
        return fail(K.R_MISSING_SEX)
    if s < 0:
        return fail(K.R_INVALID_SEX)
    age = float(enc.values[i, K.F_AGE])
    if math.isnan(age):
        return fail(K.R_MISSING_AGE)
    if age < 0 or age > max_age:
        return fail(K.R_INVALID_AGE)
    if not cx.d:
        return fail(K.R_MISSING_DIAGNOSIS)
    if cx.d[0] == -2:
        return fail(K.R_UNKNOWN_DIAGNOSIS)
    if age < 1:
        ad = float(enc.values[i, K.F_AGE_DAYS])
        if math.isnan(ad):
            return fail(K.R_MISSING_AGE_DAYS)
        if ad < 0 or ad > 365:
            return fail(K.R_INVALID_AGE_DAYS)
        if ad <= newborn_days:
            bw = float(enc.values[i, K.F_BIRTH_WEIGHT])
            if math.isnan(bw):
                return fail(K.R_MISSING_BIRTH_WEIGHT)
            if bw < min_bw or bw > max_bw:
                return fail(K.R_INVALID_BIRTH_WEIGHT)
    ok_reason = K.R_SECONDARY_IGNORED if (-2 in cx.d[1:] or -2 in cx.p) else K.R_OK
    pd = cx.d[0]
    pp = cx.p[0] if cx.p else -1
    cx.log(f"principal diagnosis {cx.dname(pd) if pd >= 0 else '(not used by this scheme)'}; "
           f"principal procedure {cx.pname(pp) if pp >= 0 else '(none in this scheme)'}")
    sev = None
    entered = sex_conflict = False
    for m in range(len(a["mdc_entry"])):
        code = scheme.mdc_codes[m]
        if a["mdc_entry"][m] == 1:
            if not (pp >= 0 and a["proc_is_or"][pp] == 1):
                continue
            cx.log(f"{code}: entered, the principal procedure is an operating-room procedure (手术室手术)")
        elif not cx.member("d", pd, int(a["mdc_table"][m])):
            continue
        else:
            cx.log(f"{code} {scheme.names.get(code, '')}: the principal diagnosis is in its 主诊表")
        if a["mdc_sex"][m] != 0 and s != a["mdc_sex"][m]:
            cx.log(f"{code}: sex {s} conflicts with this MDC (sex {int(a['mdc_sex'][m])} only); skipped")
            sex_conflict = True
            continue
        if not cx.conds_ok(int(a["mdc_cond_ptr"][m]), int(a["mdc_cond_ptr"][m + 1]), code):
            continue
        if a["mdc_min_regions"][m] > 0:
            r0, r1 = int(a["mdc_region_ptr"][m]), int(a["mdc_region_ptr"][m + 1])
            seen = [scheme.list_names[int(a["mdc_regions"][r])] for r in range(r0, r1)
                    if any(cx.member("d", c, int(a["mdc_regions"][r])) for c in cx.d)]
            if len(seen) < a["mdc_min_regions"][m]:
                cx.log(f"{code}: diagnoses cover {len(seen)} body region(s) {seen}, fewer than {int(a['mdc_min_regions'][m])}; skipped")
                continue
            cx.log(f"{code}: diagnoses cover body regions {seen}")
        entered = entered or a["mdc_entry"][m] == 0
        qy = int(a["mdc_qy_drg"][m])
        or_pp = pp >= 0 and a["proc_is_or"][pp] == 1
        for ai in range(int(a["mdc_adrg_ptr"][m]), int(a["mdc_adrg_ptr"][m + 1])):
            if ai == a["mdc_surgical_end"][m] and qy >= 0 and or_pp:
                cx.log(f"{code}: the operating-room principal procedure fits none of its surgical ADRGs: ambiguous group {scheme.drg_codes[qy]}")
                return m, -1, qy, K.R_AMBIGUOUS, cx.steps
            ad = int(a["mdc_adrgs"][ai])
            acode = scheme.adrg_codes[ad]
            matched_words = None
            for alt in range(int(a["adrg_alt_ptr"][ad]), int(a["adrg_alt_ptr"][ad + 1])):
                words = []
                ok = True
                for t in range(int(a["alt_term_ptr"][alt]), int(a["alt_term_ptr"][alt + 1])):
                    hit = None
                    for o in range(int(a["term_opt_ptr"][t]), int(a["term_opt_ptr"][t + 1])):
                        good, w = cx.term_ok(int(a["opt_role"][o]), int(a["opt_list"][o]))
                        if good:
                            hit = w
                            break
                    if hit is None:
                        ok = False
                        break
                    words.append(hit)
                if ok:
                    matched_words = words
                    break
            if matched_words is None:
                continue
            if not cx.conds_ok(int(a["adrg_cond_ptr"][ad]), int(a["adrg_cond_ptr"][ad + 1]), acode):
                continue
            cx.log(f"ADRG {acode} {scheme.names.get(acode, '')}: " + "; ".join(matched_words))
            if sev is None:
                sev = cx.severity()
            for c in range(int(a["adrg_drg_ptr"][ad]), int(a["adrg_drg_ptr"][ad + 1])):
                if not (a["cand_sev_min"][c] <= sev <= a["cand_sev_max"][c]):
                    continue
                dcode = scheme.drg_codes[int(a["cand_drg"][c])]
                if cx.conds_ok(int(a["cand_cond_ptr"][c]), int(a["cand_cond_ptr"][c + 1]), dcode):
                    cx.log(f"DRG {dcode} {scheme.names.get(dcode, '')}")
                    return m, ad, int(a["cand_drg"][c]), ok_reason, cx.steps
            cx.log(f"ADRG {acode}: no DRG of the scheme fits severity and conditions")
            return m, ad, -1, K.R_NO_DRG, cx.steps
        if a["mdc_surgical_end"][m] == a["mdc_adrg_ptr"][m + 1] and qy >= 0 and or_pp:
            cx.log(f"{code}: the operating-room principal procedure fits none of its surgical ADRGs: ambiguous group {scheme.drg_codes[qy]}")
            return m, -1, qy, K.R_AMBIGUOUS, cx.steps
        cx.log(f"{code}: no ADRG of this MDC accepts the record; trying the next MDC")
        if not scheme.meta.get("fall_through", True):
            return m, -1, -1, K.R_NO_ADRG, cx.steps
    if entered:
        return fail(K.R_NO_ADRG)
    if sex_conflict:
        return fail(K.R_SEX_CONFLICT)
    return fail(K.R_NO_MDC)


def record_table(record: dict | str) -> pa.Table:
    """One record (dict or JSON text) as a one-row table with list columns."""
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except json.JSONDecodeError as exc:
            raise InputError(f"the record is not valid JSON: {exc.msg}") from None
    if not isinstance(record, dict):
        raise InputError('a record is a JSON object, e.g. {"sex": "1", "age": 67, "diagnoses": ["I21.000"]}')
    row = dict(record)
    row.setdefault("diagnoses", None)      # {} is a record with nothing in it: invalid, with its reason
    for k in ("diagnoses", "procedures"):
        v = row.get(k)
        if isinstance(v, str):
            row[k] = [x for x in v.split("|") if x]
    for k, v in list(row.items()):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("sex",):
            row[k] = float(v)
        elif k == "sex" and v is not None:
            row[k] = str(v)
    return pa.Table.from_pylist([row])


def explain(record: dict | str, scheme: Scheme, codes: CodeSet | None = None) -> Explanation:
    """The grouping path of one record, in words (library function behind `drgdip explain`)."""
    enc = Encoder(scheme, codes).encode(record_table(record))
    m, a, d, r, steps = group_encoded_py(scheme, enc, 0, trace=True)
    reason = reason_table()[int(K.reason_map()[r])]
    steps = steps + [f"{reason.code}: {reason.zh} / {reason.en}"] if reason.code != "OK" else steps
    return Explanation(scheme.mdc_codes[m] if m >= 0 else None, scheme.adrg_codes[a] if a >= 0 else None,
                       scheme.drg_codes[d] if d >= 0 else "0000", reason.status, reason.code, steps)


def group_py(scheme: Scheme, enc) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All records of an encoded batch through the plain-Python path (kernel-shaped outputs)."""
    out = [group_encoded_py(scheme, enc, i)[:4] for i in range(enc.n)]
    if not out:
        z = np.zeros(0, dtype=np.int32)
        return z, z, z, z
    m, a, d, r = (np.array(x) for x in zip(*out))
    return m, a, d, r
