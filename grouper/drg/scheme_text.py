"""Read a CHS-DRG scheme's published text tables (分组方案) into a plain structure.

A scheme folder holds, one record a line, fields split by the first blank:
``1_MDC.txt`` MDCs, ``2_ADRG.txt`` ADRGs, ``3_DRG.txt`` DRGs, ``4_ADRG_DETAIL.txt`` the
entry rules in the published wording, ``5_MCC.txt`` / ``6_CC.txt`` complications with
their exclusion table (排除表), ``7_CCE.txt`` the exclusion tables, ``SS_VALID.dat`` the
operating-room procedures (手术室手术). The wording is the published one, PDF line
breaks and page numbers included; ``wording.toml`` is the vocabulary of its headings.

Nothing here knows a group: every list, order and condition comes from the files.
Whatever cannot be read is collected in :attr:`SchemeText.problems` with file and line.
"""
from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

FILES = ("1_MDC.txt", "2_ADRG.txt", "3_DRG.txt", "4_ADRG_DETAIL.txt", "5_MCC.txt", "6_CC.txt",
         "7_CCE.txt", "SS_VALID.dat")

DIAG_RE = re.compile(r"^[A-Z][0-9]{2}(\.[0-9A-Za-z]+)?(\+[A-Z][0-9]{2}(\.[0-9A-Za-z]+)?\*)?$")
PROC_RE = re.compile(r"^[0-9]{2}\.[0-9xX]{1,4}([xX]?[0-9]{1,4})?$")
ADRG_RE = re.compile(r"^[A-Z]{2}[0-9]$")
DRG_RE = re.compile(r"^[A-Z]{2}[0-9][0-9A-Z]$")
MDC_RE = re.compile(r"^MDC[A-Z]$")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    text: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}: {self.text!r}"


@dataclass
class CodeList:
    """One list of codes in an entry rule, with the part of the record it is matched against."""
    role: str                  # pdx odx adx ppx apx orpx nopx
    codes: list[str] = field(default_factory=list)
    line: int = 0
    heading: str = ""
    table: int | None = None   # 手术表 N


@dataclass
class AdrgRule:
    code: str
    name: str
    mdc: str
    line: int
    lists: list[CodeList] = field(default_factory=list)
    #: OR over alternatives; each alternative is an AND over terms; a term is an OR over list indices.
    alternatives: list[list[list[int]]] = field(default_factory=list)
    formula_text: list[str] = field(default_factory=list)
    #: lines of the published entry (headings, codes, formulas, cross-references) under the ADRG
    stated: int = 0
    #: how the rule was read: "literal" (its own lists), "cross-reference" (another ADRG's list,
    #: 见 JD2 手术表), "erratum" (lines the transcription lacks, from grouper/drg/rules/errata.toml)
    source: str = "literal"
    #: (target ADRG, which lists, line, text) of each cross-reference, resolved after reading
    cross_refs: list[tuple[str, str, int, str]] = field(default_factory=list)
    #: the ADRG line's name where it differs from 2_ADRG.txt (a variant, not a rule)
    detail_name: str = ""


@dataclass
class MdcRule:
    code: str
    name: str
    line: int
    principal: list[str] = field(default_factory=list)        # 主诊表
    regions: dict[str, list[str]] = field(default_factory=dict)  # MDCZ: body region → codes


@dataclass
class SchemeText:
    folder: str
    source_hash: str
    mdcs: list[MdcRule]
    adrgs: list[AdrgRule]
    adrg_names: dict[str, str]
    drgs: dict[str, str]                      # DRG code → name, file order
    mcc: dict[str, str]                       # diagnosis → exclusion table id
    cc: dict[str, str]
    exclusions: dict[str, list[str]]          # table id → principal diagnoses
    or_procedures: list[str]
    diagnosis_names: dict[str, str]
    procedure_names: dict[str, str]
    problems: list[Problem]
    #: the errata (rules/errata.toml) applied to these tables: (what, reason)
    errata: list[tuple[str, str]] = field(default_factory=list)


@lru_cache(maxsize=1)
def wording() -> dict:
    with Path(__file__).with_name("wording.toml").open("rb") as fh:
        return tomllib.load(fh)


_FOLD = str.maketrans({"／": "/", "＞": ">", "＜": "<", "（": "(", "）": ")", "，": ",", "：": ":"})


def _fold(s: str) -> str:
    """Normalised and with full-width punctuation folded, to compare two spellings of a name."""
    return _norm(s).translate(_FOLD)


def _norm(line: str) -> str:
    return line.replace("~~", "").replace(" ", "").replace("\u3000", "").replace("\t", "").strip()


def _strip_colon(s: str) -> str:
    return s[:-1] if s.endswith(("：", ":")) else s


def _read_text(path: Path) -> str:
    # NUL bytes appear where the PDF extraction padded a page; they carry nothing
    return path.read_text(encoding="utf-8-sig").replace("\x00", "")


def _read_lines(path: Path) -> list[str]:
    return _read_text(path).splitlines()


def _split(line: str) -> tuple[str, str]:
    parts = line.strip().split(None, 1)
    if not parts:
        return "", ""
    return parts[0], (parts[1].replace("~~", "").strip() if len(parts) > 1 else "")


def is_code(token: str) -> bool:
    return bool(DIAG_RE.match(token) or PROC_RE.match(token))


def source_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for name in FILES:
        p = folder / name
        if p.exists():
            h.update(name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------ small tables

def _code_name_file(path: Path, key_re: re.Pattern, problems: list[Problem]) -> dict[str, str]:
    out: dict[str, str] = {}
    last = None
    for i, raw in enumerate(_read_lines(path), 1):
        if not raw.strip():
            continue
        code, name = _split(raw)
        if key_re.match(code):
            out[code] = name
            last = code
        elif last is not None and not code.isdigit():
            out[last] += raw.strip()          # a name broken over two lines
        elif code.isdigit() and len(code) <= 3 and not name:
            continue                           # page number
        else:
            problems.append(Problem(path.name, i, raw, "not a code line"))
    return out




CODE_TOKEN = r"(?<!\S)([A-Z][0-9]{2}\.[0-9A-Za-z]+(?:\+[A-Z][0-9]{2}(?:\.[0-9A-Za-z]+)?\*)?)(?=\s|$)"


def _complications(path: Path, problems: list[Problem]) -> dict[str, str]:
    """Diagnosis → exclusion table id ('' for 无).

    Read as a stream of tokens: a code waits for the next table reference (表 7-N) or 无.
    This reads the row layout (`code name 表 7-N`), rows glued together where PDF pages
    were joined, and the column layout (codes, then names, then tables) alike."""
    text = _read_text(path)
    token_re = re.compile(CODE_TOKEN + r"|表\s*([0-9]+(?:\s*-\s*[0-9]+)+)|(?<!\S)(无)(?!\S)")
    tokens = list(token_re.finditer(text))
    out: dict[str, str] = {}
    unpaired: list[tuple[str, int]] = []
    row_layout = re.search(CODE_TOKEN + r"[^\n]*(表\s*[0-9]+-|\s无\s*$)", text, flags=re.M) is not None
    if row_layout:
        # each code is followed by its table before the next code
        for k, m in enumerate(tokens):
            if not m.group(1):
                continue
            nxt = tokens[k + 1] if k + 1 < len(tokens) else None
            if nxt is None or nxt.group(1):
                unpaired.append((m.group(1), m.start()))
            else:
                out.setdefault(m.group(1), re.sub(r"\s+", "", nxt.group(2)) if nxt.group(2) else "")
    else:
        # column layout: a page of codes, then their names, then their tables, in order
        pending: list[tuple[str, int]] = []
        for m in tokens:
            if m.group(1):
                pending.append((m.group(1), m.start()))
            elif pending:
                code, _ = pending.pop(0)
                out.setdefault(code, re.sub(r"\s+", "", m.group(2)) if m.group(2) else "")
        unpaired = pending
    for code, pos in unpaired:
        problems.append(Problem(path.name, text.count("\n", 0, pos) + 1, code, "no exclusion table (表 … or 无) for this code"))
    return out


def _exclusions(path: Path, problems: list[Problem]) -> dict[str, list[str]]:
    """Exclusion tables: every `表 7-N` heading owns the diagnosis codes after it.

    Read as a stream of tokens, since some tables were extracted onto a single line."""
    out: dict[str, list[str]] = {}
    current = None
    text = _read_text(path)
    token_re = re.compile(r"表\s*([0-9]+(?:\s*-\s*[0-9]+)+)|" + CODE_TOKEN)
    for m in token_re.finditer(text):
        if m.group(1):
            current = re.sub(r"\s+", "", m.group(1))
            out.setdefault(current, [])
        elif current is None:
            line = text.count("\n", 0, m.start()) + 1
            problems.append(Problem(path.name, line, m.group(2), "code before any 表 heading"))
        else:
            out[current].append(m.group(2))
    return out


# ------------------------------------------------------------------ 4_ADRG_DETAIL

class _Detail:
    """Line-by-line reader of 4_ADRG_DETAIL.txt."""

    def __init__(self, path: Path, adrg_names: dict[str, str], mdc_names: dict[str, str]):
        self.path = path
        self.adrg_names = adrg_names
        self.mdc_names = mdc_names
        self.problems: list[Problem] = []
        self.mdcs: list[MdcRule] = []
        self.adrgs: list[AdrgRule] = []
        self.diag_names: dict[str, str] = {}
        self.proc_names: dict[str, str] = {}
        w = wording()
        self.headings = {k: v for k, v in w["headings"].items()}
        self.table_res = [re.compile(p) for p in w["tables"]["patterns"]]
        self.any_or = set(w["any_or_procedure"]["lines"])
        self.any_or_except = [re.compile(p) for p in w["any_or_procedure_except"]["patterns"]]
        self.mdc_no_proc = [re.compile(p) for p in w["mdc_table_no_procedure"]["patterns"]]
        self.mdc_table = [re.compile(p) for p in w["mdc_table"]["patterns"]]
        self.formula_prefixes = [re.compile(p) for p in w["formula"]["prefixes"]]
        self.operands = [(re.compile(o["pattern"]), o) for o in w["formula"]["operands"]]
        self.cross_refs = [(re.compile(c["pattern"]), c["lists"]) for c in w.get("cross_references", [])]
        self.rule_words = list(w.get("adrg_line", {}).get("rule_words", []))
        self.alt_marks = [re.compile(p) for p in w.get("alternatives", {}).get("patterns", [])]
        #: ADRG code → (rule lines the transcription lacks, the reason given), from errata.toml
        self.inserted: dict[str, tuple[list[str], str]] = {}

    def cross_ref(self, norm: str):
        """(target ADRG, which lists) of a cross-reference line, or None."""
        bare = _strip_colon(norm)
        for rx, lists in self.cross_refs:
            m = rx.match(bare)
            if m:
                return m.group(1), lists
        return None

    def tail(self, rest: str, name: str) -> str:
        """The part of an ADRG line after its name that states a rule (见 JD2 手术表, 除 WB1 外手术,
        入组条件一：), or ''. Text after the exact name that states nothing readable is returned
        too, so that it is reported, never dropped."""
        r, n = _norm(rest), _fold(name)
        if _fold(r) == n:
            return ""
        for k in range(len(r)):
            t = r[k:]
            if self.kind(t, None, "") in ("special", "xref", "altmark"):
                return t
        rest_after = r[len(n):] if _fold(r).startswith(n) else ""
        return rest_after if any(w in rest_after for w in self.rule_words) else ""

    # -- classification
    def heading(self, norm: str):
        """(role spec, alternative?) for a heading line, or None."""
        s = _strip_colon(norm)
        alt = False
        if s.startswith("或") and _strip_colon(s[1:]) in self.headings:
            s, alt = s[1:], True
        if s in self.headings:
            return dict(self.headings[s]), alt, None
        for rx in self.table_res:
            m = rx.match(s)
            if m:
                return {"role": wording()["tables"]["role"]}, alt, int(m.group(1))
        return None

    def is_formula(self, norm: str) -> bool:
        return ("+" in norm or "入组条件" in norm) and any(r.match(norm) for r in self.formula_prefixes)

    def kind(self, raw: str, prev_kind: str | None, prev_norm: str) -> str:
        s = raw.strip()
        norm = _norm(s)
        if not norm:
            return "blank"
        tok, _ = _split(s)
        if MDC_RE.match(tok):
            return "mdc"
        if ADRG_RE.match(tok) and tok in self.adrg_names:
            return "adrg"
        if is_code(tok):
            return "code"
        if norm.isdigit():
            if prev_kind == "formula" and prev_norm.endswith("表"):
                return "cont"
            return "page"
        if norm == "和":
            return "and"
        if any(r.match(norm) for r in self.alt_marks):
            return "altmark"
        if self.cross_ref(norm) is not None:
            return "xref"
        if any(r.match(norm) for r in self.mdc_table):
            return "table"
        if self.heading(norm) is not None:
            return "heading"
        if self.is_formula(norm):
            return "formula"
        bare = _strip_colon(norm)
        if bare in self.any_or or any(r.match(bare) for r in self.any_or_except) \
                or any(r.match(bare) for r in self.mdc_no_proc):
            return "special"
        return "cont"

    # -- main loop
    def read(self) -> None:
        raw_lines = _read_lines(self.path)
        # join continuation lines onto the line they continue
        items: list[list] = []   # [kind, text, line]
        prev_kind, prev_norm = None, ""
        i = 0
        while i < len(raw_lines):
            raw = raw_lines[i]
            k = self.kind(raw, prev_kind, prev_norm)
            if k == "cont" and i + 1 < len(raw_lines):
                # a heading broken over two lines: join it with the next one
                joined = _norm(raw) + _norm(raw_lines[i + 1])
                if self.heading(joined) is not None or self.is_formula(joined) and not self.is_formula(_norm(raw_lines[i + 1])):
                    items.append(["heading" if self.heading(joined) else "formula", joined, i + 1])
                    prev_kind, prev_norm = items[-1][0], joined
                    i += 2
                    continue
            if k == "blank" or k == "page":
                i += 1
                continue
            if k == "cont" and i + 1 < len(raw_lines) and self._in_mdc_section(items) \
                    and self.kind(raw_lines[i + 1], k, _norm(raw)) == "heading":
                # a named part of an MDC table (MDCZ's body regions), followed by its list
                items.append(["region", _norm(raw), i + 1])
                prev_kind, prev_norm = "region", _norm(raw)
                i += 1
                continue
            if k == "cont":
                if items and items[-1][0] in ("code", "adrg", "mdc", "formula", "region"):
                    items[-1][1] = items[-1][1] + raw.strip()
                    prev_norm = _norm(items[-1][1])
                elif self._in_principal_table(items):
                    items.append(["region", _norm(raw), i + 1])
                    prev_kind, prev_norm = "region", _norm(raw)
                else:
                    self.problems.append(Problem(self.path.name, i + 1, raw, "unrecognised line"))
                i += 1
                continue
            items.append([k, raw.strip() if k in ("code", "adrg", "mdc") else _norm(raw), i + 1])
            prev_kind, prev_norm = k, _norm(raw)
            i += 1
        # rule lines that the transcription lacks (errata.toml), placed after their ADRG's line
        if self.inserted:
            out = []
            for it in items:
                out.append(it)
                if it[0] == "adrg":
                    extra = self.inserted.get(_split(it[1])[0])
                    if extra:
                        out.extend([self.kind(x, None, ""), _norm(x), it[2]] for x in extra[0])
            items = out
        self._build(items)
        self._resolve()

    def _in_mdc_section(self, items) -> bool:
        for k, _, _ in reversed(items):
            if k == "adrg":
                return False
            if k in ("mdc", "table"):
                return True
        return False

    def _in_principal_table(self, items) -> bool:
        for k, text, _ in reversed(items):
            if k == "adrg":
                return False
            if k == "table":
                return True
            if k == "mdc":
                return "主诊表" in _norm(text)
        return False

    def _build(self, items) -> None:
        mdc: MdcRule | None = None
        adrg: AdrgRule | None = None
        in_table = False             # inside an MDC's 主诊表
        region: str | None = None
        cur: CodeList | None = None
        meta: list[tuple[int, bool, bool]] = []   # per list of the ADRG: (index, starts an alternative, and-joined)
        and_spec: dict = {}                          # the heading before a `和`: what the next list is
        next_alt = False                             # an 入组条件一： line: the next list opens an alternative

        def finish_adrg():
            if adrg is not None:
                self._combine(adrg, meta)

        for kind, text, line in items:
            if kind == "table":
                finish_adrg()
                adrg, meta = None, []
                in_table, region, cur = True, None, None
                continue
            if kind == "mdc":
                tok, rest = _split(text)
                if any(r.match(_norm(rest)) for r in self.mdc_table):
                    if mdc is None or mdc.code != tok:
                        finish_adrg()
                        adrg, meta = None, []
                        mdc = MdcRule(tok, self.mdc_names.get(tok, ""), line)
                        self.mdcs.append(mdc)
                    in_table, region, cur = True, None, None
                    finish_adrg()
                    adrg, meta = None, []
                    continue
                finish_adrg()
                adrg, meta = None, []
                mdc = MdcRule(tok, rest or self.mdc_names.get(tok, ""), line)
                self.mdcs.append(mdc)
                in_table, region, cur = False, None, None
                continue
            if kind == "adrg":
                next_alt = False
                finish_adrg()
                tok, rest = _split(text)
                if mdc is None:
                    self.problems.append(Problem(self.path.name, line, text, "ADRG before any MDC"))
                    adrg, meta = None, []
                    continue
                adrg = AdrgRule(tok, self.adrg_names.get(tok, rest), mdc.code, line)
                if tok in self.inserted:
                    adrg.source = "erratum"
                self.adrgs.append(adrg)
                meta, cur, in_table, region = [], None, False, None
                tail = self.tail(rest, adrg.name)
                folded = _fold(rest)
                if folded != _fold(adrg.name):
                    adrg.detail_name = folded[:len(folded) - len(tail)] if tail else folded
                if not tail:
                    continue
                tk = self.kind(tail, None, "")
                if tk not in ("special", "xref", "altmark"):
                    self.problems.append(Problem(self.path.name, line, text, f"text after the ADRG's name states no rule this wording reads: {tail!r}"))
                    continue
                kind, text = tk, tail
            if adrg is not None and not in_table and kind not in ("mdc", "table", "region"):
                adrg.stated += 1
            if kind == "altmark" and adrg is not None and not in_table:
                next_alt = True
                continue
            if kind == "xref" and adrg is not None and not in_table:
                target, lists = self.cross_ref(text)
                adrg.cross_refs.append((target, lists, line, _strip_colon(text)))
                continue
            if kind == "region" and adrg is None and mdc is not None:
                in_table = True
            if in_table:
                if kind == "region":
                    region = text
                    mdc.regions.setdefault(region, [])
                    continue
                if kind == "heading":
                    continue
                if kind == "code":
                    tok, name = _split(text)
                    self._name(tok, name)
                    mdc.principal.append(tok)
                    if region:
                        mdc.regions[region].append(tok)
                    continue
                self.problems.append(Problem(self.path.name, line, text, f"unexpected {kind} line in an MDC table"))
                continue
            if adrg is None:
                self.problems.append(Problem(self.path.name, line, text, f"{kind} line outside any ADRG"))
                continue
            if kind == "heading":
                spec, alt, table = self.heading(text)
                alt, next_alt = alt or next_alt, False
                role = spec["role"]
                cur = CodeList(role, [], line, _strip_colon(text), table)
                adrg.lists.append(cur)
                meta.append((len(adrg.lists) - 1, alt, False))
                and_spec = spec
                continue
            if kind == "and":
                role = and_spec.get("next_role", and_spec.get("role", "apx"))
                cur = CodeList(role, [], line, "和", None)
                adrg.lists.append(cur)
                meta.append((len(adrg.lists) - 1, False, True))
                continue
            if kind == "special":
                bare = _strip_colon(text)
                if bare in self.any_or:
                    cur = CodeList("orpx", [], line, bare)
                    adrg.lists.append(cur)
                    meta.append((len(adrg.lists) - 1, False, False))
                    continue
                m = next((r.match(bare) for r in self.any_or_except if r.match(bare)), None)
                if m:
                    cur = CodeList("orpx_except", [m.group(1)], line, bare)
                    adrg.lists.append(cur)
                    meta.append((len(adrg.lists) - 1, False, False))
                    continue
                m = next((r.match(bare) for r in self.mdc_no_proc if r.match(bare)), None)
                cur = CodeList("pdx_mdc", [m.group(1)], line, bare)
                adrg.lists.append(cur)
                meta.append((len(adrg.lists) - 1, False, False))
                adrg.lists.append(CodeList("nopx", [], line, bare))
                meta.append((len(adrg.lists) - 1, False, True))
                continue
            if kind == "formula":
                adrg.formula_text.append(text)
                continue
            if kind == "code":
                tok, name = _split(text)
                self._name(tok, name)
                if cur is None:
                    self.problems.append(Problem(self.path.name, line, text, "code before any heading of the ADRG"))
                    continue
                cur.codes.append(tok)
                continue
            self.problems.append(Problem(self.path.name, line, text, f"unexpected {kind} line"))
        finish_adrg()

    # -- cross-references (见 JD2 手术表): the named ADRG's lists, copied into the rule
    LIST_ROLES = {"procedures": ("ppx", "apx", "orpx", "orpx_except"), "diagnoses": ("pdx", "odx", "adx", "pdx_mdc"),
                  "all": None}

    def _resolve(self) -> None:
        by_code = {a.code: a for a in self.adrgs}
        done: set[str] = set()

        def resolve(a: AdrgRule, seen: tuple[str, ...]) -> bool:
            if a.code in done or not a.cross_refs:
                return True
            ok = True
            ref_alts: list[list[list[int]]] = []
            for target, lists, line, text in a.cross_refs:
                t = by_code.get(target)
                if t is None or target in seen + (a.code,):
                    why = "names an unknown ADRG" if t is None else "is circular"
                    self.problems.append(Problem(self.path.name, line, text, f"cross-reference of {a.code} {why}: {target}"))
                    ok = False
                    continue
                if not resolve(t, seen + (a.code,)):
                    ok = False
                    continue
                roles = self.LIST_ROLES[lists]
                picked = [[[i for i in term if roles is None or t.lists[i].role in roles] for term in alt]
                          for alt in t.alternatives]
                picked = [[term for term in alt if term] for alt in picked]
                picked = [alt for alt in picked if alt]
                if not picked:
                    self.problems.append(Problem(self.path.name, line, text, f"cross-reference of {a.code}: {target} has no "
                                                 f"{lists} list to refer to"))
                    ok = False
                    continue
                remap: dict[int, int] = {}
                for alt in picked:
                    for term in alt:
                        for i in term:
                            if i not in remap:
                                src = t.lists[i]
                                remap[i] = len(a.lists)
                                a.lists.append(CodeList(src.role, list(src.codes), line, f"{src.heading}（{text}）", src.table))
                ref_alts.extend([[[remap[i] for i in term] for term in alt] for alt in picked])
            if ref_alts:
                # the ADRG's own lists (if any) hold together with the list it refers to
                own = a.alternatives or [[]]
                a.alternatives = [o + r for o in own for r in ref_alts]
                if a.source == "literal":
                    a.source = "cross-reference"
            done.add(a.code)
            return ok

        for a in self.adrgs:
            resolve(a, ())

    def _name(self, code: str, name: str) -> None:
        target = self.diag_names if DIAG_RE.match(code) else self.proc_names
        target.setdefault(code, name)

    # -- how an ADRG's lists combine
    def _combine(self, adrg: AdrgRule, meta) -> None:
        if adrg.formula_text:
            alts = self._formula(adrg)
            if alts is not None:
                adrg.alternatives = alts
                return
        alts: list[list[list[int]]] = []
        current: list[list[int]] = []
        roles: dict[str, int] = {}
        for idx, starts_alt, and_joined in meta:
            lst = adrg.lists[idx]
            if starts_alt and current:
                alts.append(current)
                current, roles = [], {}
            if and_joined or lst.role not in roles:
                current.append([idx])
                roles.setdefault(lst.role, len(current) - 1)
            else:
                # the same role again without 或/和: the list goes on (a page break)
                term = current[roles[lst.role]]
                first = adrg.lists[term[0]]
                first.codes.extend(lst.codes)
                lst.codes = []
        if current:
            alts.append(current)
        adrg.alternatives = [[t for t in alt if adrg.lists[t[0]].codes or adrg.lists[t[0]].role in
                              ("orpx", "orpx_except", "nopx", "pdx_mdc")] for alt in alts]
        adrg.alternatives = [a for a in adrg.alternatives if a]
        # an ADRG with no list at all is judged by the compiler (a surgical one means any OR procedure)

    def _formula(self, adrg: AdrgRule):
        """Parse 入组条件 lines into alternatives over the ADRG's lists."""
        by_role: dict[str, int] = {}
        by_table: dict[int, int] = {}
        for i, lst in enumerate(adrg.lists):
            if lst.table is not None:
                by_table.setdefault(lst.table, i)
            else:
                by_role.setdefault(lst.role, i)
        alts = []
        for text in adrg.formula_text:
            body = text
            for rx in self.formula_prefixes:
                m = rx.match(body)
                if m:
                    body = body[m.end():]
                    break
            terms = []
            for part in body.split("+"):
                grouped = part.startswith(("（", "(")) and part.endswith(("）", ")"))
                part = part.strip("（）()")
                options = []
                for opt in (part.split("或") if grouped else [part]):
                    opt = _strip_colon(opt.strip("（）()"))
                    idx = self._operand(opt, by_role, by_table)
                    if idx is None:
                        self.problems.append(Problem(self.path.name, adrg.line, text, f"cannot read operand {opt!r} of an entry condition"))
                        return None
                    options.append(idx)
                terms.append(options)
            alts.append(terms)
        return alts

    def _operand(self, opt, by_role, by_table):
        for rx, spec in self.operands:
            m = rx.match(opt)
            if not m:
                continue
            if spec.get("table"):
                return by_table.get(int(m.group(1)))
            return by_role.get(spec["role"])
        return None


# ------------------------------------------------------------------ errata

ERRATA = Path(__file__).with_name("rules") / "errata.toml"


def errata_for(tables_hash: str, path: Path = ERRATA) -> dict:
    """The errata (rules/errata.toml) that apply to tables with this source hash:
    ``{"adrg": {code: entry}, "exclusion_table": {table: entry}}``."""
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    out: dict[str, dict] = {"adrg": {}, "exclusion_table": {}}
    for key, name in (("adrg", "code"), ("exclusion_table", "table")):
        for e in data.get(key, []):
            if e.get("tables_hash") == tables_hash:
                out[key][e[name]] = e
    return out


# ------------------------------------------------------------------ entry point

def read_scheme_text(folder: str | Path) -> SchemeText:
    folder = Path(folder)
    problems: list[Problem] = []
    missing = [f for f in FILES if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"{folder}: not a CHS-DRG scheme folder, missing {', '.join(missing)}")
    mdc_names = _code_name_file(folder / "1_MDC.txt", MDC_RE, problems)
    adrg_names = _code_name_file(folder / "2_ADRG.txt", ADRG_RE, problems)
    drgs = _code_name_file(folder / "3_DRG.txt", DRG_RE, problems)
    mcc = _complications(folder / "5_MCC.txt", problems)
    cc = _complications(folder / "6_CC.txt", problems)
    exclusions = _exclusions(folder / "7_CCE.txt", problems)
    or_proc: list[str] = []
    proc_names: dict[str, str] = {}
    for i, raw in enumerate(_read_lines(folder / "SS_VALID.dat"), 1):
        code, name = _split(raw)
        if not code:
            continue
        if PROC_RE.match(code):
            or_proc.append(code)
            proc_names.setdefault(code, name)
        else:
            problems.append(Problem("SS_VALID.dat", i, raw, "not a procedure line"))
    tables_hash = source_hash(folder)
    errata = errata_for(tables_hash)
    for t, e in errata["exclusion_table"].items():
        if t not in exclusions:
            exclusions[t] = list(e.get("codes", []))
    detail = _Detail(folder / "4_ADRG_DETAIL.txt", adrg_names, mdc_names)
    detail.inserted = {c: (list(e["lines"]), e.get("reason", "")) for c, e in errata["adrg"].items()}
    detail.read()
    problems.extend(detail.problems)
    # cross-checks
    seen = {a.code for a in detail.adrgs}
    for code in adrg_names:
        if code not in seen:
            problems.append(Problem("2_ADRG.txt", 0, code, "ADRG has no rule in 4_ADRG_DETAIL.txt"))
    for code in drgs:
        if code[:3] not in adrg_names:
            problems.append(Problem("3_DRG.txt", 0, code, "DRG of an unknown ADRG"))
    for name, table in (("5_MCC.txt", mcc), ("6_CC.txt", cc)):
        for code, t in table.items():
            if t and t not in exclusions:
                problems.append(Problem(name, 0, f"{code} 表 {t}", "exclusion table not in 7_CCE.txt"))
    diag_names = dict(detail.diag_names)
    proc_names.update({k: v for k, v in detail.proc_names.items() if k not in proc_names})
    return SchemeText(
        folder=str(folder), source_hash=tables_hash, mdcs=detail.mdcs, adrgs=detail.adrgs,
        adrg_names=adrg_names, drgs=drgs, mcc=mcc, cc=cc, exclusions=exclusions, or_procedures=or_proc,
        diagnosis_names=diag_names, procedure_names=proc_names, problems=problems,
        errata=[(f"ADRG {c}: {' / '.join(e['lines'])}", e.get("reason", "")) for c, e in errata["adrg"].items()]
        + [(f"表 {t}: {len(e.get('codes', []))} code(s)", e.get("reason", "")) for t, e in errata["exclusion_table"].items()])
